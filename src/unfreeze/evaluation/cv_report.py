"""The cross-validation report: every fold at its own operating point (fitted on its inner
validation slice, as the test report's is on validation), fold metrics aggregated, pooled
out-of-fold metrics and predictions, plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unfreeze.config.errors import DataError, ParamsError
from unfreeze.config.params import METRIC_NAMES, CVParams, EvaluateParams
from unfreeze.dataset.rows import is_multilabel, label_matrix
from unfreeze.evaluation.calibrate import at_operating_point, is_degenerate
from unfreeze.evaluation.metrics import (
    compute_metrics,
    curve_rows,
    positive_class,
    predictions_table,
)
from unfreeze.evaluation.plots import plot_curves, pyplot, save_figure
from unfreeze.io import read_json, read_parquet, write_csv, write_json, write_parquet


def read_folds(fold_dirs: list[Path], params: CVParams, tta: str) -> list[dict]:
    """The metrics files of folds 0 … cv.folds-1, checked to belong to this very run.

    A fold written under another ``cv.folds`` (or inactive) is refused, so stale outputs of an
    earlier, larger k can never leak into the report.
    """
    out = []
    for k in range(params.folds):
        path = fold_dirs[k] / "metrics.json"
        if not path.is_file():
            raise DataError(f"cross-validation fold {k} has no {path}; run `dvc repro cv@{k}`")
        info = read_json(path)
        if not info.get("active") or info.get("folds") != params.folds or info.get("fold") != k:
            raise DataError(f"{path} was written for fold {info.get('fold')} of "
                            f"{info.get('folds')} folds, not fold {k} of {params.folds}; rerun "
                            "`dvc repro cv_report`")
        if info.get("tta") != tta or not (fold_dirs[k] / VIEWS_FILE).is_file():
            raise DataError(f"{path} holds no {tta!r} test-time views (evaluate.tta); rerun "
                            f"`dvc repro cv@{k}`")
        if tuple(info.get("phases", ())) != params.phases:
            raise DataError(f"{path} was trained with phases {info.get('phases')}, not "
                            f"{list(params.phases)}; rerun `dvc repro cv_report`")
        out.append(info)
    return out


def build_report(fold_dirs: list[Path], params: CVParams, evaluate: EvaluateParams
                 ) -> tuple[dict, list[dict], list[dict], pa.Table]:
    """Aggregated metrics, per-fold rows (for the fold plot), pooled ROC rows and the pooled
    out-of-fold predictions, every fold at its own operating point.

    Each fold's operating point is fitted on its inner validation slice exactly as evaluate
    fits the main model's on validation (``evaluate.calibration``, ``evaluate.threshold``,
    ``evaluate.tta``: :func:`~unfreeze.evaluation.calibrate.at_operating_point`), so the CV
    mean and the test value measure the same thing. The positive class of a binary task is
    chosen from the held-out labels of all folds together: the train + val images, the main
    model's training labels.
    """
    folds = read_folds(fold_dirs, params, evaluate.tta)
    classes = folds[0]["classes"]
    tables = [read_parquet(fold_dirs[k] / VIEWS_FILE) for k in range(params.folds)]
    labels = [label for t in tables for label, part in zip(
        t["label"].to_pylist(), t["part"].to_pylist(), strict=True) if part == "heldout"]
    multilabel = is_multilabel(tables[0])
    positive = None if multilabel else positive_class(labels, classes, evaluate.positive_class)
    pos = classes.index(positive) if positive else None
    metrics, points, pooled = [], [], []
    for k, table in enumerate(tables):
        _, y_val, val_probs = read_views(table, classes, "val")
        paths, y, probs = read_views(table, classes, "heldout")
        try:
            point, calibrated, y_pred = at_operating_point(
                y_val, val_probs, probs, classes, pos, evaluate.threshold,
                evaluate.calibration, evaluate.tta)
        except ParamsError as exc:
            raise ParamsError(f"cross-validation fold {k}, fitting the operating point on its "
                              f"inner validation slice ({len(y_val)} images, cv.val "
                              f"{params.val}): {exc}; or raise cv.val") from None
        metrics.append(compute_metrics(y, calibrated, classes, positive, y_pred))
        points.append({"fold": k, "threshold": point.threshold,
                       "temperature": point.temperature,
                       "degenerate": is_degenerate(y, y_pred)}
                      | ({"thresholds": point.thresholds, "temperatures": point.temperatures,
                          "fallbacks": point.fallbacks} if point.multilabel else {}))
        pooled.append(predictions_table(paths, y, calibrated, classes, y_pred).append_column(
            "fold", pa.array([k] * len(paths), pa.int32())))
    table = pa.concat_tables(pooled)
    y, probs, y_pred = _pooled_arrays(table, classes)
    pooled_m = compute_metrics(y, probs, classes, positive, y_pred)
    report = {
        "folds": params.folds,
        "phases": list(params.phases),
        "estimates": _estimates(params.phases),
        "n_pool": sum(f["n_heldout"] for f in folds),
        "per_fold_n_heldout": [f["n_heldout"] for f in folds],
        "positive_class": positive,
        "operating_point": {"threshold_rule": str(evaluate.threshold),
                            "calibration": evaluate.calibration, "tta": evaluate.tta,
                            "fitted_on": "each fold's inner validation slice",
                            "per_fold": points},
        "degenerate_folds": [p["fold"] for p in points if p["degenerate"]],
        "metrics": aggregate(metrics),
        "pooled_oof": {k: pooled_m[k] for k in ("n_test", *METRIC_NAMES) if k in pooled_m},
    }
    report["pooled_oof"]["n_oof"] = report["pooled_oof"].pop("n_test")
    if multilabel:
        report |= multilabel_summary(metrics, pooled_m, points)
    fold_rows = [{"fold": k, **{m: metrics[k].get(m) for m in METRIC_NAMES}}
                 for k in range(params.folds)]
    roc, _ = curve_rows(y, probs, classes, positive)
    return report, fold_rows, roc, table


def multilabel_summary(metrics: list[dict], pooled: dict, points: list[dict]) -> dict:
    """Multi-label CV extras: Hamming loss, subset accuracy, micro/macro F1 and mAP over the
    folds; each label's ROC-AUC, AP and F1 over the folds and pooled; the labels whose
    threshold fell back to 0.5 in some fold."""
    labels = list(pooled["per_label"])
    per_label = {name: aggregate([m["per_label"][name] for m in metrics],
                                 ("roc_auc", "average_precision", "f1")) for name in labels}
    for name in labels:
        per_label[name]["pooled_oof"] = {k: pooled["per_label"][name][k]
                                         for k in ("roc_auc", "average_precision", "f1")}
    fallbacks = {p["fold"]: p["fallbacks"] for p in points if p.get("fallbacks")}
    return {"task": "multilabel", "multilabel": aggregate(metrics, MULTILABEL_EXTRAS),
            "per_label": per_label, "threshold_fallbacks_by_fold": fallbacks}


def _estimates(phases: tuple[str, ...]) -> str:
    """What the CV numbers estimate, said plainly."""
    if tuple(phases) == ("head", "finetune"):
        return "the main model's whole procedure (both phases)"
    return ("phase one only (cv.phases: [head]): a frozen-base model, not the main model's "
            "procedure, which also fine-tunes; set cv.phases: [head, finetune] to estimate it")


def _pooled_arrays(table: pa.Table, classes: list[str]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = np.stack([table[f"prob_{c}"].to_numpy() for c in classes], axis=1)
    if is_multilabel(table):  # multi-label
        return (label_matrix(table["labels"].to_pylist(), classes), probs,
                label_matrix(table["predicted_labels"].to_pylist(), classes).astype(int))
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([index[v] for v in table["label"].to_pylist()])
    probs = np.stack([table[f"prob_{c}"].to_numpy() for c in classes], axis=1)
    return y, probs, np.asarray([index[v] for v in table["predicted"].to_pylist()])


def write_report(out_dir: Path, report: dict, fold_rows: list[dict], roc: list[dict],
                 predictions: pa.Table) -> None:
    """metrics.json, predictions.parquet (pooled out-of-fold, at each fold's operating
    point), folds.csv, roc.csv and their PNG images."""
    write_parquet(out_dir / "predictions.parquet", predictions)
    write_csv(out_dir / "folds.csv", fold_rows, ["fold", *METRIC_NAMES])
    write_csv(out_dir / "roc.csv", roc, ["class", "fpr", "tpr"])
    plot_cv_pngs(out_dir, report, fold_rows, roc)
    write_json(out_dir / "metrics.json", report)


def plot_cv_pngs(out_dir: Path, report: dict, fold_rows: list[dict], roc: list[dict]) -> None:
    """folds.png (per-fold values with mean ± 95% CI per metric) and roc.png (pooled OOF)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    names = [m for m in METRIC_NAMES if report["metrics"][m]["mean"] is not None]
    for i, name in enumerate(names):
        values = report["metrics"][name]["values"]
        ax.scatter([i] * len(values), values, s=18, alpha=0.7)
        low, high = report["metrics"][name]["ci95"]
        ax.errorbar(i + 0.15, report["metrics"][name]["mean"],
                    yerr=[[report["metrics"][name]["mean"] - low],
                          [high - report["metrics"][name]["mean"]]], fmt="o", color="black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set(ylim=(0, 1.02), title=f"{report['folds']}-fold CV: per fold, mean ± 95% CI")
    save_figure(fig, out_dir / "folds.png")
    plt.close(fig)
    plot_curves(out_dir / "roc.png", roc, "fpr", "tpr", "Pooled out-of-fold ROC")


def t_quantile_975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


MULTILABEL_EXTRAS = ("subset_accuracy", "hamming_loss", "micro_f1", "macro_f1", "map")


def aggregate(fold_metrics: list[dict], names: tuple[str, ...] = METRIC_NAMES) -> dict:
    """Per metric: per-fold values, mean, sample std and a 95% t-interval of the mean."""
    out = {}
    n = len(fold_metrics)
    for name in names:
        values = [m.get(name) for m in fold_metrics]
        if any(v is None for v in values):
            out[name] = {"values": values, "mean": None, "std": None, "ci95": None}
            continue
        arr = np.asarray(values, dtype=np.float64)
        mean = float(arr.mean())
        std = float(arr.std(ddof=1)) if n > 1 else 0.0
        half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else 0.0
        out[name] = {"values": [float(v) for v in arr], "mean": mean, "std": std,
                     "ci95": [mean - half, mean + half]}
    return out


VIEWS_FILE = "views.parquet"


def views_table(paths: list[str], labels: list[str], parts: list[str],
                views: list[np.ndarray], classes: list[str],
                label_sets: list[list[str]] | None = None) -> pa.Table:
    """path, label, part (val | heldout) and one ``prob_<class>@<view>`` column per class
    and TTA view (view 0: the image as it is); multi-label: ``label_sets`` as ``labels``."""
    columns = {"path": paths, "label": labels, "part": parts}
    if label_sets is not None:
        columns["labels"] = pa.array(label_sets, pa.list_(pa.string()))
    for j, probs in enumerate(views):
        for i, name in enumerate(classes):
            columns[f"prob_{name}@{j}"] = probs[:, i].astype(np.float64)
    return pa.table(columns)


def read_views(table: pa.Table, classes: list[str], part: str
               ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(paths, label indices (multi-label: the multi-hot matrix), probabilities averaged over
    the TTA views) of one part."""
    rows = table.filter(pc.equal(table["part"], part))
    index = {c: i for i, c in enumerate(classes)}
    n_views = sum(1 for c in rows.column_names if c.startswith(f"prob_{classes[0]}@"))
    probs = np.mean([np.stack([rows[f"prob_{c}@{j}"].to_numpy() for c in classes], axis=1)
                     for j in range(n_views)], axis=0)
    if is_multilabel(rows):
        return rows["path"].to_pylist(), label_matrix(rows["labels"].to_pylist(), classes), probs
    labels = np.asarray([index[v] for v in rows["label"].to_pylist()])
    return rows["path"].to_pylist(), labels, probs
