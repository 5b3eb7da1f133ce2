"""The evaluate stage: operating point fitted on validation, then the test-set report.

Writes metrics (CSV for ``dvc plots``, PNG for people), the prediction table, the
calibration and Grad-CAM figures. Metrics and predictions themselves are in
:mod:`unfreeze.evaluation.metrics` and :mod:`unfreeze.evaluation.inference`, shared with
cross-validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unfreeze.config.errors import ParamsError
from unfreeze.config.params import METRIC_NAMES, EvaluateParams
from unfreeze.dataset.rows import Rows, is_split, training_labels
from unfreeze.dataset.splits import leakage_checks
from unfreeze.evaluation.bootstrap import LEVEL, metric_intervals
from unfreeze.evaluation.calibrate import (
    OperatingPoint,
    at_operating_point,
    calibrate_probs,
    decide_classes,
    expected_calibration_error,
    is_degenerate,
    reliability_rows,
)
from unfreeze.evaluation.gradcam import (
    gradcam,
    plot_grid,
    sample_for_gradcam,
    sample_label_gradcam,
)
from unfreeze.evaluation.inference import evaluation_rows, predict, predict_views
from unfreeze.evaluation.metrics import (
    compute_metrics,
    curve_rows,
    positive_class,
    predictions_table,
)
from unfreeze.evaluation.multilabel import label_confusion_pairs
from unfreeze.evaluation.plots import plot_reliability, plot_test_pngs
from unfreeze.io import write_csv, write_json, write_parquet
from unfreeze.training.artifacts import MODEL_FILE, check_task_match, load_model
from unfreeze.training.inputs import load_images

BOOTSTRAP_SEED = 0  # fixed: the interval of the same predictions never moves


def compare_settings(y_true: np.ndarray, probs_by_tta: dict[str, np.ndarray],
                     point: OperatingPoint, positive: str | None, resamples: int = 0
                     ) -> dict[str, dict]:
    """Headline metrics for each TTA setting at 0.5 (arg-max) and at the tuned threshold,
    each with its bootstrap 95 % interval (``ci95``) when ``resamples``."""
    out = {}
    for tta, probs in probs_by_tta.items():
        for name, threshold in (("0.5", 0.5), ("tuned", None)):
            y_pred = decide_classes(probs, point, threshold)
            m = compute_metrics(y_true, probs, point.classes, positive, y_pred)
            out[f"tta_{tta}@{name}"] = {k: m[k] for k in METRIC_NAMES} | {
                "ece": expected_calibration_error(y_true, probs)}
            if resamples:
                out[f"tta_{tta}@{name}"]["ci95"] = metric_intervals(
                    y_true, probs, y_pred, point.classes, positive, resamples, BOOTSTRAP_SEED)
    return out


def evaluate_on_test(params: EvaluateParams, splits_path: Path, model_dir: Path,
                     out_dir: Path) -> dict:
    """Fit the operating point on validation, then test the saved model; write every report.

    Writes metrics.json (the configured operating point at the top level, every TTA ×
    threshold setting under ``compare``), operating_point.json, predictions.parquet,
    confusion/roc/pr/reliability CSV + PNG and gradcam.png.
    """
    table, val, test, classes, image_size = evaluation_rows(splits_path, model_dir)
    multilabel = test.labels.ndim == 2
    if multilabel:
        gradcam_labels(params, classes)  # a bad label stops here, before any work
    model = load_model(model_dir / MODEL_FILE)
    check_task_match(model, test.labels, model_dir)
    val_probs = predict(model, val.paths, image_size, params.batch_size, val.keys, params.tta)
    views = predict_views(model, test.paths, image_size, params.batch_size, test.keys,
                          params.tta)
    positive = (None if multilabel else
                positive_class(training_labels(table), classes, params.positive_class))
    pos = classes.index(positive) if positive else None
    raw = {"none": views[0], params.tta: np.mean(views, axis=0)}
    point, probs, y_pred = at_operating_point(val.labels, val_probs, raw[params.tta], classes,
                                              pos, params.threshold, params.calibration,
                                              params.tta)
    metrics = test_metrics(params, test.labels, probs, y_pred, raw, point, positive) | {
        "n_val": len(val.paths), "leakage_checks": leakage_checks(table)}
    rel_paths = table.filter(is_split(table, "test"))["path"].to_pylist()
    write_parquet(out_dir / "predictions.parquet",
                  predictions_table(rel_paths, test.labels, probs, classes, y_pred))
    _write_plots(out_dir, test.labels, y_pred, probs, raw[params.tta], classes, positive)
    if multilabel:
        _write_label_gradcam(out_dir / "gradcam.png", model, test, rel_paths, y_pred, probs,
                             classes, image_size, params)
    else:
        _write_gradcam(out_dir / "gradcam.png", model, test, rel_paths, y_pred, probs,
                       classes, image_size, params.gradcam)
    write_json(out_dir / "operating_point.json",
               point.as_dict() | {"image_size": image_size, "fitted_on": "val"})
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def test_metrics(params: EvaluateParams, y_true: np.ndarray, probs: np.ndarray,
                 y_pred: np.ndarray, raw: dict[str, np.ndarray], point: OperatingPoint,
                 positive: str | None) -> dict:
    """The test numbers at ``point``: headline metrics and their bootstrap intervals, every
    TTA × threshold setting, calibration errors; multi-label, each label's point."""
    multilabel = y_true.ndim == 2
    metrics = compute_metrics(y_true, probs, point.classes, positive, y_pred)
    if params.bootstrap:
        metrics["ci95"] = metric_intervals(y_true, probs, y_pred, point.classes, positive,
                                           params.bootstrap, BOOTSTRAP_SEED)
        metrics["bootstrap"] = {"resamples": params.bootstrap, "seed": BOOTSTRAP_SEED,
                                "level": LEVEL, "method": "percentile, "
                                f"{'label-set' if multilabel else 'class'}-stratified, "
                                "over test images, operating point fixed"}
    by_tta = {k: calibrate_probs(v, point) for k, v in raw.items()}
    metrics |= {"degenerate": is_degenerate(y_true, y_pred), "threshold": point.threshold,
                "threshold_rule": point.threshold_rule,
                "temperature": point.temperature, "tta": params.tta,
                "ece": expected_calibration_error(y_true, probs),
                "ece_uncalibrated": expected_calibration_error(y_true, raw[params.tta]),
                "compare": compare_settings(y_true, by_tta, point, positive, params.bootstrap)}
    if multilabel:
        metrics |= {"task": "multilabel",
                    "thresholds": dict(zip(point.classes, point.thresholds, strict=True)),
                    "temperatures": dict(zip(point.classes, point.temperatures, strict=True)),
                    "threshold_fallbacks": point.fallbacks}
    return metrics


def gradcam_labels(params: EvaluateParams, classes: list[str]) -> list[int]:
    """The labels a multi-label Grad-CAM explains: ``evaluate.gradcam_label``, or each."""
    chosen = params.gradcam_label
    if chosen is not None and chosen not in classes:
        raise ParamsError(f"params: `evaluate.gradcam_label` must be one of the task's labels "
                          f"({', '.join(classes)}), got {chosen!r}")
    return [classes.index(chosen)] if chosen else list(range(len(classes)))


def _write_plots(out_dir: Path, y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray,
                 uncalibrated: np.ndarray, classes: list[str], positive: str | None) -> None:
    roc, pr = curve_rows(y_true, probs, classes, positive)
    confusion = (label_confusion_pairs(y_true, y_pred, classes) if y_true.ndim == 2 else
                 [{"actual": classes[t], "predicted": classes[p]}
                  for t, p in zip(y_true, y_pred, strict=True)])
    write_csv(out_dir / "confusion.csv", confusion, ["actual", "predicted"])
    write_csv(out_dir / "roc.csv", roc, ["class", "fpr", "tpr"])
    write_csv(out_dir / "pr.csv", pr, ["class", "recall", "precision"])
    reliability = [{"probabilities": name, **row}
                   for name, p in (("uncalibrated", uncalibrated), ("calibrated", probs))
                   for row in reliability_rows(y_true, p)]
    write_csv(out_dir / "reliability.csv", reliability,
              ["probabilities", "bin_low", "bin_high", "confidence", "accuracy", "count"])
    plot_test_pngs(out_dir, y_true, y_pred, classes, roc, pr)
    plot_reliability(out_dir / "reliability.png", reliability)


def _write_gradcam(path: Path, model, test: Rows, rel_paths: list[str], y_pred: np.ndarray,
                   probs: np.ndarray, classes: list[str], image_size: int,
                   per_cell: int) -> None:
    rows = sample_for_gradcam(test.labels, y_pred, probs.max(axis=1), len(classes), per_cell)
    images = load_images([test.paths[i] for i in rows], image_size)
    heat, _ = gradcam(model, images, y_pred[rows]) if rows else (images[..., 0], None)
    titles = [f"{Path(rel_paths[i]).name[:24]}\n{classes[test.labels[i]]} → "
              f"{classes[y_pred[i]]} ({probs[i, y_pred[i]]:.2f})" for i in rows]
    plot_grid(path, images, heat, titles)


def _write_label_gradcam(path: Path, model, test: Rows, rel_paths: list[str],
                         y_pred: np.ndarray, probs: np.ndarray, classes: list[str],
                         image_size: int, params: EvaluateParams) -> None:
    """Multi-label Grad-CAM: per label (``evaluate.gradcam_label``, or each), images it
    found, missed and raised falsely, each explained for that label."""
    pairs = sample_label_gradcam(test.labels, y_pred, probs, gradcam_labels(params, classes),
                                 params.gradcam)
    rows = [r for r, _ in pairs]
    images = load_images([test.paths[i] for i in rows], image_size)
    heat = (gradcam(model, images, np.asarray([k for _, k in pairs]))[0] if pairs
            else images[..., 0])
    verdict = {(1, 1): "found", (1, 0): "missed", (0, 1): "false alarm"}
    titles = [f"{Path(rel_paths[r]).name[:24]}\n{classes[k]}: "
              f"{verdict[int(test.labels[r, k]), int(y_pred[r, k])]} ({probs[r, k]:.2f})"
              for r, k in pairs]
    plot_grid(path, images, heat, titles)
