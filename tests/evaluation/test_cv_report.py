import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from unfreeze.config.errors import DataError
from unfreeze.config.params import METRIC_NAMES, CVParams
from unfreeze.evaluation import cv_report


def write_fold(folder, k, folds, metrics, labels, probs, phases=("head", "finetune")):
    folder.mkdir(parents=True, exist_ok=True)
    info = {"fold": k, "folds": folds, "active": True, "phases": list(phases),
            "classes": ["a", "b"], "n_heldout": len(labels), "metrics": metrics}
    (folder / "metrics.json").write_text(json.dumps(info))
    pq.write_table(pa.table({"path": [f"{k}/{i}" for i in range(len(labels))], "label": labels,
                             "prob_a": [1 - p for p in probs], "prob_b": probs}),
                   folder / "predictions.parquet")


def metric_set(x):
    return {m: x for m in METRIC_NAMES}


def test_aggregate_mean_std_and_t_interval():
    agg = cv_report.aggregate([metric_set(0.6), metric_set(0.7), metric_set(0.9)])
    acc = agg["accuracy"]
    values = np.array([0.6, 0.7, 0.9])
    assert acc["values"] == pytest.approx(values.tolist())
    assert acc["mean"] == pytest.approx(values.mean())
    assert acc["std"] == pytest.approx(values.std(ddof=1))
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    assert acc["ci95"] == pytest.approx([values.mean() - half, values.mean() + half])


def test_report_reads_only_current_folds_and_pools_out_of_fold_predictions(tmp_path):
    dirs = [tmp_path / f"fold_{k}" for k in range(4)]
    write_fold(dirs[0], 0, 2, metric_set(0.8), ["a", "b", "b"], [0.1, 0.9, 0.8])
    write_fold(dirs[1], 1, 2, metric_set(0.6), ["a", "a", "b"], [0.2, 0.75, 0.7])
    write_fold(dirs[2], 2, 4, metric_set(0.1), ["a"], [0.9])  # stale: an earlier k=4 run
    (dirs[3]).mkdir()
    report, rows, roc = cv_report.build_report(dirs, CVParams(folds=2), None)
    assert report["folds"] == 2 and report["n_pool"] == 6
    assert report["metrics"]["f1"]["values"] == [0.8, 0.6]
    pooled = report["pooled_oof"]
    assert pooled["n_oof"] == 6
    assert pooled["roc_auc"] == pytest.approx(8 / 9)  # 3 b vs 3 a scores, one pair misordered
    assert [r["fold"] for r in rows] == [0, 1] and roc
    cv_report.write_report(tmp_path / "out", report, rows, roc)
    for name in ("metrics.json", "folds.csv", "roc.csv", "folds.png", "roc.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_stale_or_mismatched_fold_files_are_refused(tmp_path):
    dirs = [tmp_path / f"fold_{k}" for k in range(3)]
    write_fold(dirs[0], 0, 3, metric_set(0.8), ["a", "b"], [0.1, 0.9])
    write_fold(dirs[1], 1, 2, metric_set(0.8), ["a", "b"], [0.1, 0.9])  # written for k=2
    write_fold(dirs[2], 2, 3, metric_set(0.8), ["a", "b"], [0.1, 0.9])
    with pytest.raises(DataError, match="fold 1 of 2 folds, not fold 1 of 3"):
        cv_report.read_folds(dirs, CVParams(folds=3))
    write_fold(dirs[1], 1, 3, metric_set(0.8), ["a", "b"], [0.1, 0.9], phases=("head",))
    with pytest.raises(DataError, match=r"phases \['head'\]"):
        cv_report.read_folds(dirs, CVParams(folds=3))
    with pytest.raises(DataError, match="fold 0 has no"):
        cv_report.read_folds([tmp_path / "nowhere"] * 3, CVParams(folds=3))
