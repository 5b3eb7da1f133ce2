"""The cross-validation report: fold metrics aggregated, pooled out-of-fold metrics, plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from unfreeze.config.errors import DataError
from unfreeze.config.params import METRIC_NAMES, CVParams
from unfreeze.evaluation.metrics import compute_metrics, curve_rows, positive_class
from unfreeze.evaluation.plots import plot_curves, pyplot, save_figure
from unfreeze.io import read_json, write_csv, write_json


def read_folds(fold_dirs: list[Path], params: CVParams) -> list[dict]:
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
        if tuple(info.get("phases", ())) != params.phases:
            raise DataError(f"{path} was trained with phases {info.get('phases')}, not "
                            f"{list(params.phases)}; rerun `dvc repro cv_report`")
        out.append(info)
    return out


def build_report(fold_dirs: list[Path], params: CVParams, evaluate_positive: str | None
                 ) -> tuple[dict, list[dict], list[dict]]:
    """Aggregated metrics, per-fold rows (for the fold plot) and pooled ROC rows."""
    folds = read_folds(fold_dirs, params)
    classes = folds[0]["classes"]
    metrics = [f["metrics"] for f in folds]
    preds = [pq.read_table(fold_dirs[k] / "predictions.parquet") for k in range(params.folds)]
    labels = [v for t in preds for v in t["label"].to_pylist()]
    positive = positive_class(labels, classes, evaluate_positive)
    pooled, y, probs = pooled_metrics(preds, classes, positive)
    report = {
        "folds": params.folds,
        "phases": list(params.phases),
        "n_pool": sum(f["n_heldout"] for f in folds),
        "per_fold_n_heldout": [f["n_heldout"] for f in folds],
        "metrics": aggregate(metrics),
        "pooled_oof": {k: pooled[k] for k in ("n_test", *METRIC_NAMES) if k in pooled},
    }
    report["pooled_oof"]["n_oof"] = report["pooled_oof"].pop("n_test")
    fold_rows = [{"fold": k, **{m: metrics[k].get(m) for m in METRIC_NAMES}}
                 for k in range(params.folds)]
    roc, _ = curve_rows(y, probs, classes, positive)
    return report, fold_rows, roc


def write_report(out_dir: Path, report: dict, fold_rows: list[dict], roc: list[dict]) -> None:
    """metrics.json, folds.csv, roc.csv and their PNG images."""
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


def pooled_metrics(predictions: list[pa.Table], classes: list[str], positive: str | None
                   ) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics of all out-of-fold predictions pooled; also returns (y_true, probs)."""
    table = pa.concat_tables(predictions)
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([index[v] for v in table["label"].to_pylist()])
    probs = np.stack([table[f"prob_{c}"].to_numpy() for c in classes], axis=1)
    return compute_metrics(y, probs, classes, positive), y, probs


def t_quantile_975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def aggregate(fold_metrics: list[dict]) -> dict:
    """Per metric: per-fold values, mean, sample std and a 95% t-interval of the mean."""
    out = {}
    n = len(fold_metrics)
    for name in METRIC_NAMES:
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
