"""Multi-label evaluation: per-label operating point, metrics checked by hand, intervals."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from unfreeze.config.errors import ParamsError
from unfreeze.config.params import METRIC_NAMES
from unfreeze.evaluation import multilabel as ml

CLASSES = ["a", "b", "c"]
# 5 images, 3 labels; c has no positive image (one class only: its AUC/AP are undefined)
Y = np.array([[1, 1, 0],   # img0: a, b
              [1, 0, 0],   # img1: a
              [0, 1, 0],   # img2: b
              [1, 1, 0],   # img3: a, b
              [0, 0, 0]])  # img4: none
PROBS = np.array([[0.9, 0.9, 0.1],
                  [0.8, 0.6, 0.2],
                  [0.3, 0.4, 0.1],
                  [0.7, 0.7, 0.3],
                  [0.1, 0.2, 0.6]])
# at 0.5: img0 a,b (exact) | img1 a,b (b false positive) | img2 none (b missed) |
# img3 a,b (exact) | img4 c (c false positive)
PRED = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 1]])


def test_decisions_are_probability_at_least_the_label_threshold():
    assert ml.decide_labels(PROBS, np.full(3, 0.5)).tolist() == PRED.tolist()
    assert ml.decide_labels(PROBS, np.array([0.9, 0.5, 0.1]))[:, 0].tolist() == [1, 0, 0, 0, 0]
    assert ml.decide_labels(PROBS, np.array([0.9, 0.5, 0.1]))[:, 2].tolist() == [1] * 5


def test_metrics_match_hand_computed_counts():
    m = ml.multilabel_metrics(Y, PROBS, PRED, CLASSES)
    # a: tp 3 fp 0 fn 0 tn 2 -> P = R = F1 = 1, balanced accuracy 1
    # b: tp 2 (img0, img3) fp 1 (img1) fn 1 (img2) tn 1 (img4) -> P = R = F1 = 2/3,
    #    balanced accuracy (2/3 + 1/2) / 2 = 7/12
    # c: tp 0 fp 1 (img4) fn 0 tn 4 -> P = R = F1 = 0 (0/0 counts 0), balanced accuracy
    #    = TNR only (no positive) = 4/5
    from collections import Counter

    pairs = Counter((r["actual"], r["predicted"])
                    for r in ml.label_confusion_pairs(Y, PRED, CLASSES))
    assert pairs == {("a", "a"): 3, ("no a", "no a"): 2,
                     ("b", "b"): 2, ("no b", "b"): 1, ("b", "no b"): 1, ("no b", "no b"): 1,
                     ("no c", "c"): 1, ("no c", "no c"): 4}
    b = m["per_label"]["b"]
    assert (b["tp"], b["fp"], b["fn"], b["tn"], b["support"]) == (2, 1, 1, 1, 3)
    assert b["precision"] == b["recall"] == b["f1"] == pytest.approx(2 / 3)
    assert b["balanced_accuracy"] == pytest.approx(7 / 12)
    assert m["per_label"]["a"]["f1"] == 1.0 and m["per_label"]["c"]["f1"] == 0.0
    # macro: (1 + 2/3 + 0) / 3 = 5/9 | micro: TP 5, FP 2, FN 1 -> P 5/7, R 5/6,
    # F1 2·5 / (2·5 + 2 + 1) = 10/13: one rare label drags the macro mean, not the micro one
    assert m["macro_precision"] == m["macro_recall"] == m["macro_f1"] == pytest.approx(5 / 9)
    assert m["micro_precision"] == pytest.approx(5 / 7)
    assert m["micro_recall"] == pytest.approx(5 / 6)
    assert m["micro_f1"] == pytest.approx(10 / 13)
    assert m["subset_accuracy"] == pytest.approx(2 / 5)  # img0 and img3 exactly right
    assert m["hamming_loss"] == pytest.approx(3 / 15)  # img1 b, img2 b, img4 c wrong
    assert m["labels_per_image"] == pytest.approx(6 / 5)  # 2 + 1 + 1 + 2 + 0 labels
    assert m["n_images"] == m["n_test"] == 5


def test_scores_are_per_label_and_undefined_for_a_one_class_label():
    m = ml.multilabel_metrics(Y, PROBS, PRED, CLASSES)
    # a: every positive above every negative -> AUC 1, AP 1
    # b: positives .9 .7 .4, negatives .6 .2 -> 5 of 6 pairs ordered: AUC 5/6;
    #    ranked .9+ .7+ .6- .4+ .2- -> AP (1/1 + 2/2 + 3/4) / 3 = 11/12
    assert m["per_label"]["a"]["roc_auc"] == 1.0 == m["per_label"]["a"]["average_precision"]
    assert m["per_label"]["b"]["roc_auc"] == pytest.approx(5 / 6)
    assert m["per_label"]["b"]["average_precision"] == pytest.approx(11 / 12)
    assert m["per_label"]["c"]["roc_auc"] is None
    assert m["per_label"]["c"]["average_precision"] is None
    assert m["degenerate_labels"] == ["c"]
    assert m["macro_roc_auc"] == pytest.approx((1 + 5 / 6) / 2)  # over a and b only
    assert m["map"] == pytest.approx((1 + 11 / 12) / 2)
    assert m["micro_roc_auc"] == pytest.approx(skm.roc_auc_score(Y, PROBS, average="micro"))
    json.dumps(m, allow_nan=False)  # None, not NaN: the report is JSON


def test_headline_names_map_to_the_multilabel_metrics_and_agree_with_sklearn():
    m = ml.multilabel_metrics(Y, PROBS, PRED, CLASSES)
    expected = {"accuracy": 2 / 5, "balanced_accuracy": (1 + 7 / 12 + 4 / 5) / 3,
                "precision": 5 / 9, "recall": 5 / 9, "f1": 5 / 9,
                "roc_auc": (1 + 5 / 6) / 2, "average_precision": (1 + 11 / 12) / 2}
    assert set(expected) == set(METRIC_NAMES)
    for name, value in expected.items():
        assert m[name] == pytest.approx(value), name
        assert ml.metric_value_multilabel(name, Y, PROBS, PRED) == pytest.approx(value), name
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(Y, PRED))
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(Y, PRED))
    for average in ("micro", "macro"):
        assert m[f"{average}_f1"] == pytest.approx(
            skm.f1_score(Y, PRED, average=average, zero_division=0))
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        ml.metric_value_multilabel("auc", Y, PROBS, PRED)


def test_no_label_with_both_classes_leaves_scores_undefined_without_crashing():
    y = np.zeros((3, 2), int)
    m = ml.multilabel_metrics(y, PROBS[:3, :2], np.zeros((3, 2), int), ["a", "b"])
    assert m["roc_auc"] is m["average_precision"] is m["micro_roc_auc"] is None
    assert m["accuracy"] == 1.0 and m["degenerate_labels"] == ["a", "b"]
    assert ml.metric_value_multilabel("roc_auc", y, PROBS[:3, :2], y) is None
    with pytest.raises(ValueError, match=r"probs has shape \(5, 3\), expected \(3, 2\)"):
        ml.multilabel_metrics(y, PROBS, y, ["a", "b"])


# label A: positives at .35 .6 .7 .9 (one below two negatives); label B: every score >= .3
# positive; label C: no positive at all
SCORES = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.6, 0.7, 0.9])
Y_VAL = np.stack([[0, 0, 0, 0, 1, 0, 0, 1, 1, 1], (SCORES >= 0.3).astype(int),
                  np.zeros(10, int)], axis=1)
P_VAL = np.stack([SCORES] * 3, axis=1)


def test_each_label_gets_its_own_threshold_by_the_rule():
    thresholds, fallbacks = ml.fit_label_thresholds(Y_VAL, P_VAL, "f1", ["A", "B", "C"])
    assert thresholds.tolist() == [0.6, 0.3, 0.5]  # A: P 1 R .75 at .6; B: perfect at .3
    assert fallbacks == {"C": "no positive image in validation"}
    fixed, none = ml.fit_label_thresholds(Y_VAL, P_VAL, 0.3, ["A", "B", "C"])
    assert fixed.tolist() == [0.3, 0.3, 0.3] and none == {}
    recall, _ = ml.fit_label_thresholds(Y_VAL, P_VAL, "recall>=0.95", ["A", "B", "C"])
    assert recall[0] == 0.35  # the highest threshold keeping all four positives of A


def test_a_label_that_cannot_support_the_rule_falls_back_and_bad_specs_still_fail():
    y = np.stack([Y_VAL[:, 0], Y_VAL[:, 0], np.ones(10, int)], axis=1)
    scores = np.stack([SCORES, 1 - SCORES, SCORES], axis=1)  # A's scores turned upside down
    thresholds, fallbacks = ml.fit_label_thresholds(y, scores, "precision>=0.99",
                                                    ["A", "upside_down", "all"])
    assert thresholds.tolist() == [0.6, 0.5, 0.5]  # A: every image >= .6 is positive
    assert "not reachable" in fallbacks["upside_down"]  # its top score (.95) is a negative
    assert set(fallbacks) == {"upside_down", "all"}
    assert fallbacks["all"] == "no negative image in validation"
    with pytest.raises(ParamsError, match=r"evaluate\.threshold"):
        ml.fit_label_thresholds(Y_VAL, P_VAL, "best", ["A", "B", "C"])


def test_label_temperatures_recover_overconfidence_and_one_is_identity():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 2))
    true_p = 1 / (1 + np.exp(-logits))
    y = np.c_[rng.random((4000, 2)) < true_p, np.zeros(4000, bool)].astype(int)
    overconfident = np.c_[1 / (1 + np.exp(-3 * logits)), np.full(4000, 0.3)]  # logits × 3
    t = ml.fit_label_temperatures(y, overconfident)
    assert 2.7 < t[0] < 3.3 and 2.7 < t[1] < 3.3
    assert t[2] == 1.0  # one class only in validation: left alone
    calibrated = ml.apply_label_temperature(overconfident, t)
    np.testing.assert_allclose(calibrated[:, :2], true_p, atol=0.03)
    assert calibrated[:, 2].tolist() == overconfident[:, 2].tolist()
    np.testing.assert_allclose(ml.apply_label_temperature(true_p, np.full(2, 1 / 3)),
                               overconfident[:, :2], atol=1e-9)
    edge = np.array([[0.0, 1.0], [0.2, 0.7]], dtype=np.float32)
    same = ml.apply_label_temperature(edge, np.ones(2))
    assert same.dtype == np.float32 and same.tolist() == edge.tolist()


def synthetic(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two labels with some signal, decided at 0.5."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < [0.4, 0.2]).astype(int)
    probs = np.clip(0.3 * y + rng.random((n, 2)) * 0.7, 0, 1)
    return y, probs, ml.decide_labels(probs, np.full(2, 0.5))


def test_bootstrap_intervals_hold_the_estimate_and_repeat_for_a_seed():
    y, probs, pred = synthetic()
    point = ml.multilabel_metrics(y, probs, pred, ["p", "q"])
    ci = ml.multilabel_intervals(y, probs, pred, ["p", "q"], 300, seed=1)
    assert set(ci) == {*METRIC_NAMES, "per_label"}
    for name in METRIC_NAMES:
        assert ci[name]["low"] <= point[name] <= ci[name]["high"], name
        assert ci[name]["low"] < ci[name]["high"], name  # real resampling
    for label in ("p", "q"):
        for key in ("roc_auc", "average_precision", "f1"):
            bounds = ci["per_label"][label][key]
            assert bounds["low"] <= point["per_label"][label][key] <= bounds["high"]
    assert ml.multilabel_intervals(y, probs, pred, ["p", "q"], 300, seed=1) == ci
    assert ml.multilabel_intervals(y, probs, pred, ["p", "q"], 300, seed=2) != ci


def test_bootstrap_interval_is_none_where_the_metric_is_undefined():
    ci = ml.multilabel_intervals(Y, PROBS, PRED, CLASSES, 100, seed=0)
    assert ci["per_label"]["c"]["roc_auc"] is None  # c has no positive image
    assert ci["per_label"]["c"]["f1"] == {"low": 0.0, "high": 0.0}
    # 5 images in 4 label sets, all rarer than 5 images: pooled into one stratum, so some
    # resample draws one class of a only
    assert ci["per_label"]["a"]["roc_auc"] is None
    empty = ml.multilabel_intervals(Y[:0], PROBS[:0], PRED[:0], CLASSES, 100, seed=0)
    assert all(empty[name] is None for name in METRIC_NAMES)


def test_curve_rows_run_per_label_with_both_classes():
    from unfreeze.evaluation.metrics import curve_rows

    roc, pr = curve_rows(Y, PROBS, CLASSES)
    assert [r["class"] for r in roc] == sorted(r["class"] for r in roc)
    assert {r["class"] for r in roc} == {r["class"] for r in pr} == {"a", "b"}  # no c
    for label in ("a", "b"):
        curve = [r for r in roc if r["class"] == label]
        assert curve[0] == {"class": label, "fpr": 0.0, "tpr": 0.0}
        assert (curve[-1]["fpr"], curve[-1]["tpr"]) == (1.0, 1.0)
        points = [r for r in pr if r["class"] == label]
        assert points[-1] == {"class": label, "recall": 0.0, "precision": 1.0}
        assert points[0]["recall"] == 1.0


def test_predictions_table_joins_labels_and_keeps_one_probability_per_label():
    t = ml.multilabel_predictions_table(["p0", "p1", "p2", "p3", "p4"], Y, PROBS, PRED, CLASSES)
    assert t.column_names == ["path", "label", "predicted", "labels", "predicted_labels",
                              "prob_a", "prob_b", "prob_c"]
    assert t["label"].to_pylist() == ["a;b", "a", "b", "a;b", ""]
    assert t["predicted"].to_pylist() == ["a;b", "a;b", "", "a;b", "c"]
    assert t["labels"].to_pylist() == [["a", "b"], ["a"], ["b"], ["a", "b"], []]
    assert t["predicted_labels"].to_pylist()[2:] == [[], ["a", "b"], ["c"]]
    assert t["prob_b"].to_pylist() == PROBS[:, 1].tolist()
    assert ml.multilabel_predictions_table(["p0"], Y[:1], PROBS[:1], PRED[:1], CLASSES,
                                           separator="|")["label"].to_pylist() == ["a|b"]
