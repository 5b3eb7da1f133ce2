import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

from unfreeze.config.errors import DataError
from unfreeze.config.params import METRIC_NAMES, CVParams, EvaluateParams
from unfreeze.evaluation import cv_report


def write_fold(folder, k, folds, held_labels, held_probs, phases=("head", "finetune"),
               val=(["a", "a", "b", "b"], [0.2, 0.4, 0.6, 0.8]), tta="none"):
    """A fold's outputs: its info and the views table (one view; probabilities of b)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"fold": k, "folds": folds, "active": True, "phases": list(phases),
            "classes": ["a", "b"], "n_heldout": len(held_labels), "tta": tta}
    (folder / "metrics.json").write_text(json.dumps(info))
    labels, probs = [*val[0], *held_labels], np.array([*val[1], *held_probs])
    table = cv_report.views_table(
        [f"{k}/{i}" for i in range(len(labels))], labels,
        ["val"] * len(val[0]) + ["heldout"] * len(held_labels),
        [np.stack([1 - probs, probs], axis=1)], ["a", "b"])
    pq.write_table(table, folder / cv_report.VIEWS_FILE)


ARGMAX = EvaluateParams(threshold=0.5, calibration="none")


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
    write_fold(dirs[0], 0, 2, ["a", "b", "b"], [0.1, 0.9, 0.8])
    write_fold(dirs[1], 1, 2, ["a", "a", "b"], [0.2, 0.75, 0.7])
    write_fold(dirs[2], 2, 4, ["a"], [0.9])  # stale: an earlier k=4 run
    (dirs[3]).mkdir()
    report, rows, roc, predictions = cv_report.build_report(dirs, CVParams(folds=2), ARGMAX)
    assert report["folds"] == 2 and report["n_pool"] == 6
    assert report["metrics"]["accuracy"]["values"] == pytest.approx([1.0, 2 / 3])
    pooled = report["pooled_oof"]
    assert pooled["n_oof"] == 6
    assert pooled["roc_auc"] == pytest.approx(8 / 9)  # 3 b vs 3 a scores, one pair misordered
    assert predictions.num_rows == 6 and predictions["fold"].to_pylist() == [0] * 3 + [1] * 3
    assert predictions["predicted"].to_pylist() == ["a", "b", "b", "a", "b", "b"]
    assert [r["fold"] for r in rows] == [0, 1] and roc and report["degenerate_folds"] == []
    assert report["estimates"].startswith("the main model's whole procedure")
    cv_report.write_report(tmp_path / "out", report, rows, roc, predictions)
    for name in ("metrics.json", "predictions.parquet", "folds.csv", "roc.csv", "folds.png",
                 "roc.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_each_fold_is_reported_at_its_own_operating_point_like_the_test_set(tmp_path):
    """The threshold rule is fitted on each fold's inner validation slice, then applied to its
    held-out images, exactly as evaluate does for the main model."""
    from unfreeze.evaluation.calibrate import at_operating_point
    from unfreeze.evaluation.metrics import compute_metrics

    val = (["a", "a", "a", "b", "b", "b"], [0.05, 0.1, 0.2, 0.3, 0.35, 0.4])  # b scores low
    held = (["a", "a", "b", "b"], [0.1, 0.2, 0.3, 0.45])
    dirs = [tmp_path / f"fold_{k}" for k in range(2)]
    for k in range(2):
        write_fold(dirs[k], k, 2, *held, val=val)
    tuned = EvaluateParams(threshold="f1", calibration="temperature")
    report, *_ = cv_report.build_report(dirs, CVParams(folds=2), tuned)
    y_val, y = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1])
    two = lambda p: np.stack([1 - np.array(p), np.array(p)], axis=1)  # noqa: E731
    point, probs, y_pred = at_operating_point(y_val, two(val[1]), two(held[1]), ["a", "b"], 1,
                                              "f1", "temperature", "none")
    expected = compute_metrics(y, probs, ["a", "b"], "b", y_pred)
    assert report["metrics"]["accuracy"]["values"] == pytest.approx([expected["accuracy"]] * 2)
    assert expected["accuracy"] == 1.0  # the tuned threshold separates what 0.5 does not
    assert report["operating_point"]["per_fold"][0]["threshold"] == pytest.approx(
        point.threshold)
    at_half, *_ = cv_report.build_report(dirs, CVParams(folds=2), ARGMAX)
    assert at_half["metrics"]["accuracy"]["mean"] == 0.5  # arg-max names "a" for all
    assert at_half["degenerate_folds"] == [0, 1]  # flagged
    assert at_half["metrics"]["roc_auc"]["mean"] == report["metrics"]["roc_auc"]["mean"]


def test_stale_or_mismatched_fold_files_are_refused(tmp_path):
    dirs = [tmp_path / f"fold_{k}" for k in range(3)]
    write_fold(dirs[0], 0, 3, ["a", "b"], [0.1, 0.9])
    write_fold(dirs[1], 1, 2, ["a", "b"], [0.1, 0.9])  # written for k=2
    write_fold(dirs[2], 2, 3, ["a", "b"], [0.1, 0.9])
    with pytest.raises(DataError, match="fold 1 of 2 folds, not fold 1 of 3"):
        cv_report.read_folds(dirs, CVParams(folds=3), "none")
    write_fold(dirs[1], 1, 3, ["a", "b"], [0.1, 0.9], phases=("head",))
    with pytest.raises(DataError, match=r"phases \['head'\]"):
        cv_report.read_folds(dirs, CVParams(folds=3), "none")
    with pytest.raises(DataError, match="no 'hflip' test-time views"):
        cv_report.read_folds(dirs, CVParams(folds=3), "hflip")
    with pytest.raises(DataError, match="fold 0 has no"):
        cv_report.read_folds([tmp_path / "nowhere"] * 3, CVParams(folds=3), "none")


def write_label_fold(folder, k, folds, held, held_probs, val, val_probs):
    """A multi-label fold (labels x, y): label sets as lists, probabilities per label."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"fold": k, "folds": folds, "active": True, "phases": ["head", "finetune"],
            "classes": ["x", "y"], "n_heldout": len(held), "tta": "none"}
    (folder / "metrics.json").write_text(json.dumps(info))
    sets = [*val, *held]
    table = cv_report.views_table(
        [f"{k}/{i}" for i in range(len(sets))], [";".join(s) for s in sets],
        ["val"] * len(val) + ["heldout"] * len(held),
        [np.array([*val_probs, *held_probs])], ["x", "y"], label_sets=sets)
    pq.write_table(table, folder / cv_report.VIEWS_FILE)


def test_multilabel_folds_report_label_metrics_and_fallbacks(tmp_path):
    val = [["x"], ["x", "y"], [], ["y"]]
    val_probs = [[0.9, 0.2], [0.8, 0.7], [0.1, 0.3], [0.2, 0.9]]
    dirs = [tmp_path / f"fold_{k}" for k in range(2)]
    # fold 0: all right at 0.5 | fold 1: image 2 misses y (a Hamming error of 1 cell in 6)
    write_label_fold(dirs[0], 0, 2, [["x"], ["y"], []], [[0.7, 0.1], [0.3, 0.8], [0.2, 0.1]],
                     val, val_probs)
    write_label_fold(dirs[1], 1, 2, [["x", "y"], ["x"], ["y"]],
                     [[0.9, 0.6], [0.6, 0.2], [0.4, 0.4]], [["x"], [], ["x"], []],
                     [[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.2, 0.1]])
    report, rows, _, predictions = cv_report.build_report(
        dirs, CVParams(folds=2), EvaluateParams(threshold=0.5, calibration="none"))
    assert report["task"] == "multilabel" and report["threshold_fallbacks_by_fold"] == {}
    assert [r["accuracy"] for r in rows] == pytest.approx([1.0, 2 / 3])  # the folds plot
    hamming = report["multilabel"]["hamming_loss"]
    assert hamming["values"] == pytest.approx([0.0, 1 / 6])
    assert report["metrics"]["accuracy"]["values"] == pytest.approx([1.0, 2 / 3])
    assert report["per_label"]["x"]["roc_auc"]["values"] == pytest.approx([1.0, 1.0])
    assert set(report["per_label"]["y"]["pooled_oof"]) == {"roc_auc", "average_precision",
                                                             "f1"}
    assert predictions["predicted_labels"].to_pylist()[3:] == [["x", "y"], ["x"], []]
    # a rule fitted on each fold's inner validation: fold 1's has no `y`, so that label's
    # threshold falls back to 0.5, and the report names it
    f1, *_ = cv_report.build_report(dirs, CVParams(folds=2),
                                    EvaluateParams(threshold="f1", calibration="none"))
    assert list(f1["threshold_fallbacks_by_fold"]) == [1]
    assert list(f1["threshold_fallbacks_by_fold"][1]) == ["y"]
