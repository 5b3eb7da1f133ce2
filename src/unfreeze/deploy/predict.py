"""Use a saved model on new images: `unfreeze predict` and `unfreeze explain`.

The model is a ``.keras`` file (or a folder holding ``model.keras``) with the ``meta.json``
that unfreeze saves beside it: class names and image size come from there, never from
guesses. An exported model's meta also carries the operating point fitted on validation
(temperature, binary threshold, TTA), which prediction applies. Each input is checked from
its header (accepted format, at most ``MAX_PIXELS`` pixels, as ``prepare`` checks
headers) and then decoded once, by the same TensorFlow code as training; a file that fails
either becomes a row with an ``error`` and no probabilities, and the rest are predicted in
batches.
"""

from __future__ import annotations

import glob
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from unfreeze.config.errors import PredictError
from unfreeze.config.params import MAX_PIXELS
from unfreeze.dataset.scan import ACCEPTED_FORMATS, header_problem
from unfreeze.evaluation.calibrate import (
    OperatingPoint,
    calibrate_probs,
    decide_classes,
    decide_labels,
)
from unfreeze.evaluation.gradcam import gradcam, plot_grid
from unfreeze.evaluation.inference import predict_image_views
from unfreeze.io import read_json, write_csv, write_parquet
from unfreeze.training.artifacts import META_FILE, MODEL_FILE, load_model
from unfreeze.training.inputs import decode_files
from unfreeze.training.model import is_multilabel

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TABLE_SUFFIXES = (".parquet", ".csv")  # what `predict --out` may write
UNDECODABLE = "cannot decode image (TensorFlow could not decode its data: corrupt, truncated?)"


@dataclass(frozen=True)
class SavedModel:
    """A loaded model with what its meta.json says about it."""

    model: object
    classes: list[str]
    image_size: int
    point: OperatingPoint | None  # None: arg-max (multi-label: 0.5), no temperature, no TTA
    multilabel: bool = False  # one sigmoid per label: a set of labels per image

    @property
    def task(self) -> str:
        """``multilabel`` or ``multiclass`` (the ``task`` param's values)."""
        return "multilabel" if self.multilabel else "multiclass"

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Decisions at the stored operating point: class indices, or multi-label (n, L)
        0/1 at the per-label thresholds (0.5 each without a point)."""
        if self.multilabel and (self.point is None or not self.point.multilabel):
            return decide_labels(probs, 0.5)
        return decide_classes(probs, self.point)

    def named(self, decision: np.ndarray) -> str:
        """One image's decision as text: its class, or its labels joined by ``;``."""
        if self.multilabel:
            return ";".join(c for c, on in zip(self.classes, decision, strict=True) if on)
        return self.classes[int(decision)]


def load_saved(path: str | Path) -> SavedModel:
    """Load ``path`` (a .keras file or a folder with model.keras) with ``safe_mode=True``."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    meta_file = file.with_name(META_FILE)
    if not file.is_file():
        raise PredictError(f"--model {path}: no such model file; give a .keras file saved "
                           "by unfreeze (e.g. models/export/model.keras)")
    if not meta_file.is_file():
        raise PredictError(f"--model {path}: {meta_file} is missing, so the class names are "
                           "unknown; use a model folder written by unfreeze (models/finetune, "
                           "models/export) that has meta.json beside model.keras")
    try:
        meta = read_json(meta_file)
        classes, image_size = list(meta["classes"]), int(meta["image_size"])
        point = meta.get("operating_point")
        point = OperatingPoint.from_dict(point) if point else None
    except (ValueError, KeyError, TypeError) as exc:
        raise PredictError(f"--model {path}: {meta_file} is not a meta.json written by "
                           f"unfreeze ({type(exc).__name__}: {exc})") from None
    try:
        model = load_model(file)
    except ValueError as exc:  # another format, or code in the file (safe_mode refuses it)
        raise PredictError(f"--model {path}: {exc}") from None
    return SavedModel(model, classes, image_size, point, is_multilabel(model))


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders searched recursively for images, globs expanded; sorted, unique.

    An input that matches nothing is an error naming it.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*")
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                             and not any(part.startswith(".") for part in p.parts))
        elif path.exists():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True)
                             if Path(p).is_file())
        if not matches:
            raise PredictError(f"input {item!r}: no such file, or no image in that folder or "
                               "glob (images: " + ", ".join(IMAGE_SUFFIXES) + ")")
        found.update(dict.fromkeys(matches))
    return list(found)


def decode_inputs(files: list[Path], image_size: int) -> tuple[np.ndarray, list[str]]:
    """Images of the usable files (in order) and, per file, "" or why it is not usable.

    The header rules come first (accepted formats: ``ACCEPTED_FORMATS``; decompression bombs
    refused undecoded), then each remaining file is decoded once.
    """
    errors = [header_problem(file, MAX_PIXELS) for file in files]
    candidates = [i for i, error in enumerate(errors) if not error]
    decoded, images = decode_files([str(files[i]) for i in candidates], image_size)
    done = {candidates[j] for j in decoded}
    for i in candidates:
        if i not in done:
            errors[i] = UNDECODABLE
    return images, errors


def calibrated(saved: SavedModel, images: np.ndarray, batch_size: int = 32,
               tta: str | None = None) -> np.ndarray:
    """Probabilities of decoded images at the stored operating point: the mean over its TTA
    views (or ``tta``), then its temperature. What predict and explain both decide from."""
    point = saved.point
    views = predict_image_views(saved.model, images, batch_size,
                                tta or (point.tta if point else "none"))
    return calibrate_probs(np.mean(views, axis=0), point)


def predict_files(saved: SavedModel, files: list[Path], batch_size: int = 32,
                  tta: str | None = None, progress: bool = True) -> pa.Table:
    """One row per file: path, predicted label (multi-label: the decided labels joined by
    ``;``, "" for none), one probability per class, error."""
    probs = np.full((len(files), len(saved.classes)), np.nan, np.float32)
    errors = [""] * len(files)
    chunk = max(batch_size * 8, 1)  # decoded images held at once; the progress bar's step
    for start in _progress(range(0, len(files), chunk), len(files), chunk, progress):
        part = list(range(start, min(start + chunk, len(files))))
        images, part_errors = decode_inputs([files[i] for i in part], saved.image_size)
        good = [i for i, error in zip(part, part_errors, strict=True) if not error]
        for i, error in zip(part, part_errors, strict=True):
            errors[i] = error
        if good:
            probs[good] = calibrated(saved, images, batch_size, tta)
    good = [i for i, error in enumerate(errors) if not error]
    predicted: list[str | None] = [None] * len(files)
    if good:
        for i, decision in zip(good, saved.decide(probs[good]), strict=True):
            predicted[i] = saved.named(decision)
    columns = {"path": [str(f) for f in files], "predicted": predicted}
    for j, name in enumerate(saved.classes):
        columns[f"prob_{name}"] = pa.array(
            [None if e else float(probs[i, j]) for i, e in enumerate(errors)], pa.float64())
    columns["error"] = [e or None for e in errors]
    return pa.table(columns)


def explain_files(saved: SavedModel, files: list[Path], out: Path, tta: str | None = None,
                  label: str | None = None) -> tuple[Path, list[str], list[str | None]]:
    """Grad-CAM grid of the usable ``files``, each for the class ``predict`` names (same
    loading, TTA, temperature and threshold); titles give it and its probability. A
    multi-label model explains ``label`` (default: each image's most probable label) and
    names the decided labels. Returns the grid, per file "" or why it was skipped, and per
    file what predict names (or None)."""
    check_label(saved, label)  # before any image is decoded
    images, errors = decode_inputs(files, saved.image_size)
    good = [i for i, error in enumerate(errors) if not error]
    if not good:
        reasons = "; ".join(f"{f}: {e}" for f, e in zip(files, errors, strict=True))
        raise PredictError(f"no readable image to explain ({reasons}); images: "
                           + ", ".join(ACCEPTED_FORMATS))
    probs = calibrated(saved, images, tta=tta)
    decisions = saved.decide(probs)
    chosen = explained_index(saved, probs, decisions, label)
    heat, _ = gradcam(saved.model, images.astype(np.float32), chosen)
    titles = [f"{files[i].name[:24]}\n{_title(saved, decisions[row], k)} ({probs[row, k]:.2f})"
              for row, (i, k) in enumerate(zip(good, chosen, strict=True))]
    named: list[str | None] = [None] * len(files)
    for row, i in enumerate(good):
        named[i] = saved.named(decisions[row])
    return plot_grid(out, images.astype(np.float32), heat, titles), errors, named


def check_label(saved: SavedModel, label: str | None) -> None:
    """``--label`` names one of a multi-label model's labels, or is not given."""
    if label is not None and (not saved.multilabel or label not in saved.classes):
        raise PredictError(f"--label {label!r}: " + (
            f"not one of the model's labels ({', '.join(saved.classes)})"
            if saved.multilabel else "only for multi-label models (this one decides "
            "one class per image: the heatmap explains it)"))


def explained_index(saved: SavedModel, probs: np.ndarray, decisions: np.ndarray,
               label: str | None) -> np.ndarray:
    """The output each image's heatmap explains: the decided class; multi-label, ``label``
    or the most probable label."""
    if label is not None:
        return np.full(len(probs), saved.classes.index(label))
    return probs.argmax(axis=1) if saved.multilabel else decisions


def _title(saved: SavedModel, decision: np.ndarray, k: int) -> str:
    """Tile title: the class; multi-label, the explained label and whether it was decided."""
    if not saved.multilabel:
        return saved.classes[k]
    return f"{saved.classes[k]}: {'yes' if decision[k] else 'no'}"


def _progress(chunks: range, total: int, chunk: int, enabled: bool):
    """Yield ``chunks`` while drawing a progress bar (images done / total) on stderr."""
    from tqdm import tqdm

    with tqdm(total=total, unit="img", disable=not enabled or not total, file=sys.stderr,
              desc="predict") as bar:
        for start in chunks:
            yield start
            bar.update(min(chunk, total - start))


def write_table(table: pa.Table, out: Path) -> Path:
    """Write ``table`` as Parquet (``.parquet``) or CSV (``.csv``), atomically."""
    suffix = out.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise PredictError(f"--out {out}: the file name must end in "
                           + " or ".join(TABLE_SUFFIXES))
    if suffix == ".parquet":
        return write_parquet(out, table)
    return write_csv(out, table.to_pylist(), table.column_names)
