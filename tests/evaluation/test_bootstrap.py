"""Bootstrap intervals of test metrics: class-stratified, seeded, checked by hand."""

import numpy as np
import pytest

from unfreeze.evaluation import bootstrap


def test_resamples_keep_each_class_count_and_repeat_for_a_seed():
    y = np.array([0, 0, 0, 1, 1, 0, 1, 0])
    draws = list(bootstrap.stratified_resamples(y, 50, seed=3))
    assert all(np.bincount(y[rows]).tolist() == [5, 3] for rows in draws)
    again = list(bootstrap.stratified_resamples(y, 50, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(draws, again, strict=True))
    assert len({tuple(rows) for rows in draws}) > 40  # real resampling, not one draw


def test_the_accuracy_interval_matches_the_binomial_by_hand():
    """Accuracy is a mean of per-image 0/1 outcomes: with 80 % correct out of 200 images its
    bootstrap interval is close to the normal one, 0.8 ± 1.96·sqrt(0.8·0.2/200) = ±0.055."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    correct = rng.permutation(np.r_[np.ones(160, bool), np.zeros(40, bool)])
    y_pred = np.where(correct, y, 1 - y)
    probs = np.eye(2)[y_pred] * 0.8 + 0.1
    ci = bootstrap.metric_intervals(y, probs, y_pred, ["a", "b"], None, 2000, seed=0)
    accuracy = float((y_pred == y).mean())
    half = 1.96 * np.sqrt(accuracy * (1 - accuracy) / 200)
    assert ci["accuracy"]["low"] == pytest.approx(accuracy - half, abs=0.01)
    assert ci["accuracy"]["high"] == pytest.approx(accuracy + half, abs=0.01)
    assert set(ci) == {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc",
                       "average_precision"}


def test_perfect_predictions_have_a_zero_width_interval_and_one_class_none():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    ci = bootstrap.metric_intervals(y, probs, probs.argmax(1), ["a", "b"], "b", 200, seed=1)
    assert ci["accuracy"] == {"low": 1.0, "high": 1.0} == ci["roc_auc"]
    one = bootstrap.metric_intervals(np.zeros(3, int), probs[:3], np.zeros(3, int), ["a", "b"],
                                     None, 100, seed=1)
    assert one["roc_auc"] is None  # undefined with one class, as on the test set itself


def test_multilabel_resamples_keep_common_label_sets_and_pool_the_rare_ones():
    from unfreeze.evaluation.bootstrap import label_set_strata, stratified_resamples

    y = np.array([[1, 0]] * 6 + [[0, 1]] * 5 + [[1, 1], [0, 0], [1, 1]])
    strata = label_set_strata(y)
    assert len(set(strata[:6])) == 1 and len(set(strata[6:11])) == 1
    assert (strata[11:] == -1).all()  # 3 images in sets of 1 and 2: one pooled stratum
    for rows in stratified_resamples(y, 20, seed=0):  # the common sets keep their counts
        assert (rows < 6).sum() == 6 and ((rows >= 6) & (rows < 11)).sum() == 5
    # every label set distinct: a plain bootstrap, not the same images every time
    distinct = np.array([[int(b) for b in f"{i:05b}"] for i in range(20)])
    draws = [tuple(sorted(r)) for r in stratified_resamples(distinct, 20, seed=0)]
    assert len(set(draws)) == 20 and all(len(set(d)) < 20 for d in draws)
