"""Deployable copies of the final model, each checked against the Keras model on the test set.

``<out>/`` after a successful export::

    model.keras          the Keras model without optimizer state (``unfreeze predict``)
    meta.json            classes, image size, operating point (threshold, temperature, TTA;
                         multi-label: one threshold and temperature per label)
    labels.txt           one class name per line, in output order
    MODEL_CARD.md        data, recipe, test metrics with intervals, CV, operating point,
                         parity and limitations, from the run's reports (``card``)
    MODEL_CARD.json      the facts the card is written from, its operating point and parity
                         (for programs: ``GET /v1/model`` of ``unfreeze api``)
    saved_model/         TensorFlow SavedModel, signature ``serving_default``:      (savedmodel)
                         uint8 images (n, S, S, 3), raw 0–255 RGB → ``probabilities`` (n, C)
                         (multi-label: C independent per-label probabilities)
    model.tflite         float TFLite model, same signature                        (tflite)
    model_quant.tflite   dynamic-range quantised TFLite model (int8 weights)       (quantize)

The exported signatures apply the fitted temperature, so their probabilities are the
calibrated ones that ``meta.json``'s threshold refers to. Test-time augmentation is not
built in: it is several forward passes, which ``unfreeze predict`` does when the meta asks.
The bundle is built in a temporary folder and moved into place only when every parity check
passed; a failed check stops the stage and names the numbers.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from unfreeze.config.errors import ExportError
from unfreeze.config.params import ExportParams
from unfreeze.deploy.card import CARD_FILE, CARD_JSON, render
from unfreeze.evaluation.calibrate import CLIP, OperatingPoint, calibrate_probs, decide_classes
from unfreeze.evaluation.inference import evaluation_rows
from unfreeze.io import read_json, temp_dir, write_json
from unfreeze.training.artifacts import META_FILE, MODEL_FILE, load_model, read_meta
from unfreeze.training.inputs import load_images

SIGNATURE = "serving_default"


def serving_function(model, image_size: int, point: OperatingPoint):
    """uint8 images → calibrated probabilities, as a function with a fixed input signature
    (multi-label: each label's sigmoid at its own temperature)."""
    import tensorflow as tf

    temperature = point.temperature
    labels_t = np.asarray(point.temperatures or [1.0], np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8,
                                                name="images")])
    def serve(images):
        probs = tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)
        if point.multilabel and (labels_t != 1.0).any():
            p = tf.clip_by_value(probs, CLIP, 1.0 - CLIP)
            scaled = tf.sigmoid((tf.math.log(p) - tf.math.log1p(-p)) / labels_t)
            probs = tf.where(tf.constant(labels_t == 1.0), probs, scaled)
        elif temperature != 1.0:
            probs = tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-12)) / temperature)
        return {"probabilities": probs}

    return serve


def write_savedmodel(model, folder: Path, image_size: int, point: OperatingPoint) -> None:
    """A SavedModel whose ``serving_default`` takes raw uint8 images (Keras ExportArchive)."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serving_function(model, image_size, point))
    archive.write_out(str(folder), verbose=False)


def convert_tflite(savedmodel: Path, quantize: bool) -> bytes:
    """TFLite flatbuffer from the SavedModel; ``quantize``: dynamic-range int8 weights."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel), [SIGNATURE])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def run_savedmodel(folder: Path, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Probabilities from the SavedModel's serving signature, in batches."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(folder)).signatures[SIGNATURE]
    return np.concatenate([serve(images=tf.constant(images[i:i + batch_size]))[
        "probabilities"].numpy() for i in range(0, len(images), batch_size)])


def run_tflite(content: bytes, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Probabilities from a TFLite model (TensorFlow's built-in interpreter, all cores)."""
    import tensorflow as tf

    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still shipped
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=content,
                                          num_threads=os.cpu_count() or 1)
    runner = interpreter.get_signature_runner(SIGNATURE)
    return np.concatenate([runner(images=images[i:i + batch_size])["probabilities"]
                           for i in range(0, len(images), batch_size)])


def parity(reference: np.ndarray, other: np.ndarray, y_true: np.ndarray,
           point: OperatingPoint) -> tuple[float, float]:
    """(max |probability difference|, accuracy drop) of ``other`` against ``reference``
    (multi-label: subset accuracy, an image right when its whole label set is)."""
    diff = float(np.abs(reference.astype(np.float64) - other).max()) if len(other) else 0.0

    def right(p: np.ndarray) -> np.ndarray:
        same = decide_classes(p, point) == y_true
        return same.all(axis=1) if same.ndim == 2 else same

    accuracy = [float(np.mean(right(p))) if len(y_true) else 0.0 for p in (reference, other)]
    return diff, accuracy[0] - accuracy[1]


def check_parity(metrics: dict, params: ExportParams) -> list[str]:
    """The tolerances the measured numbers break, as readable sentences."""
    problems = []
    for key in ("savedmodel_max_abs_diff", "tflite_max_abs_diff"):
        if key in metrics and metrics[key] > params.max_abs_diff:
            problems.append(f"{key} = {metrics[key]:.3g} > export.max_abs_diff "
                            f"({params.max_abs_diff:g})")
    drop = metrics.get("tflite_quant_accuracy_drop")
    if drop is not None and drop > params.max_accuracy_drop:
        problems.append(f"tflite_quant_accuracy_drop = {drop:.4f} > export.max_accuracy_drop "
                        f"({params.max_accuracy_drop:g}); set export.quantize: false to ship "
                        "the float models only")
    return problems


def export_model(params: ExportParams, model_dir: Path, operating_point: Path,
                 splits_path: Path, out_dir: Path, report_dir: Path,
                 batch_size: int = 32, card: dict | None = None) -> dict:
    """Write the bundle to ``out_dir`` and parity numbers to ``report_dir/metrics.json``;
    with ``card`` (facts from :func:`unfreeze.deploy.card.gather`), the model card too."""
    meta = read_meta(model_dir)
    point = OperatingPoint.from_dict(read_json(operating_point))
    if point.classes != meta["classes"]:
        raise ExportError(f"{operating_point} was fitted for classes {point.classes}, the "
                          f"model in {model_dir} predicts {meta['classes']}; rerun evaluate")
    _, _, test, _, image_size = evaluation_rows(splits_path, model_dir)
    model = load_model(model_dir / MODEL_FILE)
    images = np.concatenate([load_images(test.paths[i:i + batch_size], image_size)
                             for i in range(0, len(test.paths), batch_size)] or
                            [np.zeros((0, image_size, image_size, 3), np.float32)])
    images = images.astype(np.uint8)  # decoded images are whole numbers: exact
    reference = calibrate_probs(np.concatenate(
        [model.predict_on_batch(images[i:i + batch_size].astype(np.float32))
         for i in range(0, len(images), batch_size)] or [np.zeros((0, len(point.classes)))]),
        point)
    tmp = temp_dir(out_dir.parent, prefix=f".{out_dir.name}.")
    try:
        metrics = write_formats(params, model, tmp, images, reference, test.labels, point,
                                batch_size)
        problems = check_parity(metrics, params)
        metrics["passed"] = not problems
        write_json(report_dir / "metrics.json", metrics)
        if problems:
            raise ExportError("export parity check failed on the test images: "
                              + "; ".join(problems))
        model.save(tmp / MODEL_FILE)  # loaded uncompiled: no optimizer state, half size
        (tmp / "labels.txt").write_text("\n".join(point.classes) + "\n", encoding="utf-8")
        if card is not None:
            (tmp / CARD_FILE).write_text(render(card, point.as_dict(), metrics),
                                         encoding="utf-8")
            write_json(tmp / CARD_JSON, {"facts": card, "operating_point": point.as_dict(),
                                         "parity": metrics})
        write_json(tmp / META_FILE, meta | {"operating_point": point.as_dict(),
                                            "exported_from": str(model_dir)})
        _replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return metrics


def write_formats(params: ExportParams, model, folder: Path, images: np.ndarray,
                  reference: np.ndarray, y_true: np.ndarray, point: OperatingPoint,
                  batch_size: int) -> dict:
    """Write the formats ``params`` asks for into ``folder``; return each one's parity with
    ``reference`` (the Keras model's calibrated probabilities on ``images``)."""
    image_size = model.input_shape[1]
    metrics: dict = {"n_test": len(images), "temperature": point.temperature,
                     "threshold": point.threshold}
    if point.multilabel:
        metrics |= {"thresholds": point.thresholds, "temperatures": point.temperatures}
    if params.savedmodel:
        write_savedmodel(model, folder / "saved_model", image_size, point)
        metrics["savedmodel_max_abs_diff"], _ = parity(
            reference, run_savedmodel(folder / "saved_model", images, batch_size), y_true, point)
    variants = [("tflite", "model.tflite", False)] if params.tflite else []
    variants += [("tflite_quant", "model_quant.tflite", True)] if params.quantize else []
    for key, name, quantize in variants:
        content = convert_tflite(folder / "saved_model", quantize)
        (folder / name).write_bytes(content)
        metrics[f"{key}_max_abs_diff"], metrics[f"{key}_accuracy_drop"] = parity(
            reference, run_tflite(content, images, batch_size), y_true, point)
        metrics[f"{key}_bytes"] = len(content)
    return metrics


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; a previous ``target`` is removed only after the move."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
