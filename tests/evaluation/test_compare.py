"""Two models on the same images: the fast metric, McNemar by hand, the paired interval."""

import numpy as np
import pytest

from unfreeze.config.params import METRIC_NAMES
from unfreeze.evaluation.bootstrap import metric_intervals
from unfreeze.evaluation.compare import mcnemar, paired_comparison
from unfreeze.evaluation.metrics import compute_metrics, metric_value


@pytest.mark.parametrize("k", [2, 3])
def test_metric_value_equals_compute_metrics(k):
    rng = np.random.default_rng(k)
    for trial in range(60):
        n = int(rng.integers(5, 50))
        y = np.zeros(n, int) if trial % 9 == 0 else rng.integers(0, k, n)
        probs = np.round(rng.random((n, k)), int(rng.choice([1, 2, 6]))) + 0.05  # with ties
        probs /= probs.sum(axis=1, keepdims=True)
        y_pred = rng.integers(0, k, n) if trial % 2 else probs.argmax(axis=1)
        classes = [f"c{i}" for i in range(k)]
        with _quiet():
            expected = compute_metrics(y, probs, classes, "c1" if k == 2 else None, y_pred)
        for name in METRIC_NAMES:
            got = metric_value(name, y, probs, y_pred, 1 if k == 2 else None)
            if expected[name] is None:
                assert got is None, (trial, name)
            else:
                assert got == pytest.approx(expected[name], abs=1e-12), (trial, name)


def test_metric_value_scores_the_positive_class_it_is_given():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])
    assert metric_value("average_precision", y, probs, probs.argmax(1), 1) == pytest.approx(
        compute_metrics(y, probs, ["a", "b"], "b")["average_precision"])
    assert metric_value("average_precision", y, probs, probs.argmax(1), 0) == pytest.approx(
        compute_metrics(y, probs, ["a", "b"], "a")["average_precision"])
    with pytest.raises(ValueError, match="positive class"):
        metric_value("roc_auc", y, probs, probs.argmax(1), None)


def _quiet():
    import warnings

    ctx = warnings.catch_warnings()
    warnings.simplefilter("ignore")
    return ctx


def test_mcnemar_counts_the_discordant_images_and_matches_the_binomial_by_hand():
    y = np.zeros(20, int)
    new = np.zeros(20, int)
    old = np.zeros(20, int)
    new[:2] = 1  # 2 images only the current model gets right
    old[2:10] = 1  # 8 images only the new model gets right
    result = mcnemar(y, new, old)
    assert result["new_only_correct"] == 8 and result["current_only_correct"] == 2
    # two-sided exact binomial, 2 of 10 at p = 1/2: 2 * (1 + 10 + 45) / 1024
    assert result["p_value"] == pytest.approx(2 * 56 / 1024)
    assert mcnemar(y, new, new)["p_value"] == 1.0


def test_the_paired_interval_is_narrower_than_the_two_unpaired_ones():
    """Two models that err on nearly the same images: each accuracy is uncertain by about
    ±0.04 on 400 images, their difference (+0.01) by much less, because the resamples
    are paired."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    wrong = rng.permutation(400)[:80]
    old_pred = y.copy()
    old_pred[wrong] = 1 - y[wrong]
    new_pred = old_pred.copy()
    new_pred[wrong[:4]] = y[wrong[:4]]  # the new model fixes 4 of those errors
    probs = lambda pred: np.eye(2)[pred] * 0.8 + 0.1  # noqa: E731
    result = paired_comparison("accuracy", y, (probs(new_pred), new_pred),
                               (probs(old_pred), old_pred), 1, 2000, seed=0)
    assert result["difference"] == pytest.approx(0.01) and result["n"] == 400
    low, high = result["ci95"]["low"], result["ci95"]["high"]
    assert 0 <= low <= 0.01 <= high <= 0.025  # 4 images of 400, all in one direction
    alone = metric_intervals(y, probs(new_pred), new_pred, ["a", "b"], "b", 2000, 0)
    assert high - low < (alone["accuracy"]["high"] - alone["accuracy"]["low"]) / 3
    assert result["mcnemar"] == {"new_only_correct": 4, "current_only_correct": 0,
                                 "p_value": pytest.approx(2 / 16)}
    again = paired_comparison("accuracy", y, (probs(new_pred), new_pred),
                              (probs(old_pred), old_pred), 1, 2000, seed=0)
    assert again == result  # seeded
