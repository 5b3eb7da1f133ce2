"""A tiny multi-label model through evaluate, export and predict: per-label operating point,
metrics and files, SavedModel/TFLite parity, predict's label sets equal evaluate's."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_multilabel_images, write_label_csv

from unfreeze.config.params import ExportParams, params_from_dict
from unfreeze.dataset.rows import load_splits, training_rows
from unfreeze.dataset.scan import scan
from unfreeze.dataset.splits import split_table
from unfreeze.deploy import predict as pred
from unfreeze.deploy.export import export_model
from unfreeze.evaluation.calibrate import apply_label_temperature
from unfreeze.evaluation.evaluate import evaluate_on_test
from unfreeze.training import recipe
from unfreeze.training.artifacts import phase_meta, save_model

PARAMS = {"task": "multilabel", "data": {"source": "labels.csv"},
          "model": {"image_size": 75, "weights": None, "hidden_units": 8},
          "head": {"epochs": 2, "batch_size": 8, "learning_rate": 0.01},
          "train": {"xla": False}, "split": {"test": 0.25, "val": 0.25},
          "evaluate": {"threshold": "f1", "bootstrap": 100, "gradcam": 1, "batch_size": 16}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Generated colour-label images, split, a head-only model saved as a final model."""
    import os

    tmp = tmp_path_factory.mktemp("ml")
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        write_label_csv(tmp / "labels.csv", make_multilabel_images(tmp, n=64))
        params = params_from_dict(PARAMS)
        manifest, _ = scan(params.data, progress=False, task="multilabel")
        splits = split_table(manifest, params.split, params.seed)
        pq.write_table(splits.replace_schema_metadata(manifest.schema.metadata),
                       tmp / "splits.parquet")
        table, root, source = load_splits(tmp / "splits.parquet")
        data = training_rows(table, root)
        model, summary = recipe.phase_one(params, data, tmp / "reports/head",
                                          then_finetune=False)
        save_model(model, tmp / "models/final", phase_meta(data.classes, 75, source, "head",
                                                           params.head, summary))
        yield tmp, params
    finally:
        os.chdir(cwd)


def test_evaluate_fits_a_point_per_label_and_writes_multilabel_reports(trained, eager):
    tmp, params = trained
    out = tmp / "reports/evaluate"
    m = evaluate_on_test(params.evaluate, tmp / "splits.parquet", tmp / "models/final", out)
    n = pq.read_table(tmp / "splits.parquet")["split"].to_pylist().count("test")
    assert m["task"] == "multilabel" and set(m["thresholds"]) == {"blue", "red"}
    assert set(m["per_label"]) == {"blue", "red"} and m["n_test"] == n >= 14
    assert 0 <= m["hamming_loss"] <= 1 and m["accuracy"] == m["subset_accuracy"]
    assert set(m["ci95"]["per_label"]["red"]) == {"roc_auc", "average_precision", "f1"}
    point = json.loads((out / "operating_point.json").read_text())
    assert point["thresholds"] == [m["thresholds"]["blue"], m["thresholds"]["red"]]
    preds = pq.read_table(out / "predictions.parquet").to_pylist()
    assert len(preds) == n and {"prob_blue", "prob_red", "labels"} <= set(preds[0])
    for row in preds:  # the decided labels are the per-label thresholds applied
        want = [c for c in ("blue", "red") if row[f"prob_{c}"] >= m["thresholds"][c]]
        assert row["predicted_labels"] == want and row["predicted"] == ";".join(want)
    confusion = (out / "confusion.csv").read_text().splitlines()
    assert len(confusion) == 1 + n * 2  # one (actual, predicted) row per image and label
    for name in ("roc.csv", "pr.csv", "confusion.png", "gradcam.png", "reliability.png"):
        assert (out / name).stat().st_size > 0


def test_export_keeps_parity_and_predict_decides_the_same_label_sets(trained, eager):
    tmp, params = trained
    report = tmp / "reports/evaluate"
    if not (report / "operating_point.json").exists():
        evaluate_on_test(params.evaluate, tmp / "splits.parquet", tmp / "models/final", report)
    metrics = export_model(ExportParams(quantize=False), tmp / "models/final",
                           report / "operating_point.json", tmp / "splits.parquet",
                           tmp / "models/export", tmp / "reports/export", batch_size=16)
    assert metrics["passed"] and metrics["savedmodel_max_abs_diff"] < 1e-4
    assert metrics["tflite_max_abs_diff"] < 1e-4 and len(metrics["thresholds"]) == 2
    saved = pred.load_saved(tmp / "models/export")
    assert saved.multilabel and saved.point.multilabel
    evaluated = pq.read_table(report / "predictions.parquet").to_pylist()
    files = [tmp / row["path"] for row in evaluated]
    table = pred.predict_files(saved, files, progress=False).to_pylist()
    for mine, theirs in zip(table, evaluated, strict=True):
        assert mine["predicted"] == theirs["predicted"]
        assert mine["prob_red"] == pytest.approx(theirs["prob_red"], abs=1e-5)
    # the SavedModel signature applies each label's temperature, as evaluate does
    import tensorflow as tf

    serve = tf.saved_model.load(str(tmp / "models/export/saved_model")).signatures[
        "serving_default"]
    from unfreeze.training.inputs import load_images

    images = load_images([str(f) for f in files[:4]], 75).astype(np.uint8)
    raw = saved.model.predict(images.astype(np.float32), verbose=0)
    want = apply_label_temperature(raw, np.asarray(saved.point.temperatures))
    got = serve(images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    grid, errors, named = pred.explain_files(saved, files[:3], tmp / "explain.png",
                                             label="red")
    assert grid.stat().st_size > 0 and errors == ["", "", ""]
    assert named == [r["predicted"] for r in table[:3]]
    with pytest.raises(pred.PredictError, match="not one of the model's labels"):
        pred.explain_files(saved, files[:1], tmp / "x.png", label="green")
