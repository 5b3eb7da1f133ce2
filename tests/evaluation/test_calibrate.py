"""The operating point: threshold rules, temperature scaling, calibration error."""

import numpy as np
import pytest

from unfreeze.config.errors import ParamsError
from unfreeze.config.params import params_from_dict, parse_threshold
from unfreeze.evaluation.calibrate import (
    OperatingPoint,
    apply_temperature,
    choose_threshold,
    decide_classes,
    expected_calibration_error,
    fit_operating_point,
    fit_temperature,
    reliability_rows,
)

# 10 validation scores; positives at 0.35, 0.6, 0.7, 0.9 (one positive sits below two negatives)
SCORES = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.6, 0.7, 0.9])
POSITIVE = np.array([0, 0, 0, 0, 1, 0, 0, 1, 1, 1], dtype=bool)


def test_threshold_rules_pick_the_expected_cut():
    assert choose_threshold(POSITIVE, SCORES, 0.5) == 0.5
    assert choose_threshold(POSITIVE, SCORES, "f1") == 0.6  # P 1, R 0.75: F1 0.857
    assert choose_threshold(POSITIVE, SCORES, "youden") == 0.6  # TPR .75 - FPR 0
    assert choose_threshold(POSITIVE, SCORES, "recall>=0.95") == 0.35  # all 4 positives
    assert choose_threshold(POSITIVE, SCORES, "recall>=0.5") == 0.7  # highest with 2 of 4
    assert choose_threshold(POSITIVE, SCORES, "precision>=0.9") == 0.6  # most recall at P=1


def test_unreachable_or_one_class_threshold_is_a_params_error():
    with pytest.raises(ParamsError, match="not reachable"):
        choose_threshold(POSITIVE, 1 - SCORES, "precision>=0.99")
    with pytest.raises(ParamsError, match="one only"):
        choose_threshold(np.zeros(10, bool), SCORES, "f1")


@pytest.mark.parametrize("bad", [0.0, 1.5, "best", "recall>=2", "recall>=x", "f2"])
def test_bad_threshold_param_names_the_key_and_value(bad):
    with pytest.raises(ParamsError, match=r"evaluate\.threshold"):
        params_from_dict({"evaluate": {"threshold": bad}})
    assert parse_threshold("recall >= 0.9") == ("recall", 0.9)


def test_temperature_recovers_overconfidence_and_keeps_the_ranking():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 3))
    true_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in true_p])
    overconfident = apply_temperature(true_p, 1 / 3)  # logits × 3
    t = fit_temperature(y, overconfident)
    assert 2.7 < t < 3.3
    calibrated = apply_temperature(overconfident, t)
    np.testing.assert_array_equal(calibrated.argmax(1), overconfident.argmax(1))
    assert (expected_calibration_error(y, calibrated)
            < expected_calibration_error(y, overconfident) / 3)


def test_ece_and_reliability_bins_on_known_numbers():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 0])  # 0.9 bin: 1 of 2 right; 0.6 bin: 1 of 2 right
    rows = reliability_rows(y, probs)
    assert [(r["count"], r["accuracy"]) for r in rows] == [(2, 0.5), (2, 0.5)]
    assert expected_calibration_error(y, probs) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)


def test_operating_point_threshold_decides_binary_and_argmax_multiclass():
    probs = np.stack([1 - SCORES, SCORES], axis=1)
    y = POSITIVE.astype(int)
    point = fit_operating_point(y, probs, ["ok", "defect"], 1, "f1", "none", "none")
    assert point.threshold == 0.6 and point.temperature == 1.0
    assert decide_classes(probs, point).tolist() == (SCORES >= 0.6).astype(int).tolist()
    assert decide_classes(probs, point, 0.5).tolist() == (SCORES >= 0.5).astype(int).tolist()
    assert OperatingPoint.from_dict(point.as_dict()) == point
    three = np.eye(3)[[0, 2, 1]] * 0.8 + 0.066
    multi = fit_operating_point(np.array([0, 2, 1]), three, ["a", "b", "c"], None, "f1",
                                "temperature", "none")
    assert multi.threshold is None and decide_classes(three, multi).tolist() == [0, 2, 1]


def test_a_point_stores_its_per_label_fields_only_when_multilabel():
    from unfreeze.evaluation.calibrate import OperatingPoint

    binary = OperatingPoint(["a", "b"], "b", 0.3, "f1", 1.2, "none")
    assert set(binary.as_dict()) == {"classes", "positive_class", "threshold",
                                     "threshold_rule", "temperature", "tta"}
    labels = OperatingPoint(["a", "b"], None, None, "f1 (per label)", 1.0, "none",
                            thresholds=[0.4, 0.6], temperatures=[1.0, 2.0], fallbacks={})
    for point in (binary, labels):
        assert OperatingPoint.from_dict(point.as_dict()) == point
    assert OperatingPoint.from_dict(labels.as_dict()).multilabel
