"""Uncertainty of test numbers: class-stratified bootstrap intervals over the test images.

A resample draws, within each true class (multi-label: each label set on at least 5 images,
the rarer sets pooled), as many images as the class has, with replacement: every resample keeps
the class counts, so ROC-AUC and balanced accuracy stay defined and comparable. The interval is
the 2.5th and 97.5th percentile of the metric over the resamples (percentile bootstrap).
Seeded: the same predictions give the same interval.
Pure functions of labels and probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from unfreeze.config.params import METRIC_NAMES
from unfreeze.evaluation.metrics import metric_value, positive_index

LEVEL = 0.95
MIN_STRATUM = 5  # multi-label: label sets rarer than this share one stratum


def label_set_strata(y_true: np.ndarray) -> np.ndarray:
    """A stratum id per multi-label row: its label set, or -1 for sets on fewer than
    :data:`MIN_STRATUM` images."""
    _, inverse, counts = np.unique(y_true, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    return np.where(counts[inverse] >= MIN_STRATUM, inverse, -1)


def stratified_resamples(y_true: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """``resamples`` index arrays, each drawing every class's own size from that class.
    Multi-label ``y_true`` (n, L): the strata are the label sets (each distinct row) held by
    at least :data:`MIN_STRATUM` images, the rarer sets pooled into one stratum (a set of one
    image would be drawn in every resample, adding no variance)."""
    rng = np.random.default_rng(seed)
    strata = label_set_strata(y_true) if y_true.ndim == 2 else y_true
    by_class = [np.flatnonzero(strata == c) for c in np.unique(strata)]
    for _ in range(resamples):
        yield np.concatenate([rng.choice(rows, size=len(rows), replace=True)
                              for rows in by_class])


def percentile_interval(values: list[float | None]) -> dict[str, float] | None:
    """The central :data:`LEVEL` interval of ``values`` as ``{"low", "high"}``; None when a
    resample left the metric undefined (it is then undefined on the test set too)."""
    if not values or any(v is None for v in values):
        return None
    tail = (1.0 - LEVEL) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=np.float64), [tail, 100 - tail])
    return {"low": float(low), "high": float(high)}


def metric_intervals(y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray,
                     classes: list[str], positive: str | None, resamples: int, seed: int
                     ) -> dict[str, dict[str, float] | None]:
    """95 % interval of each headline metric (``METRIC_NAMES``) of these test predictions,
    with the decisions ``y_pred`` kept per image (the operating point is not refitted)."""
    if y_true.ndim == 2:  # multi-label: resampled within label sets, per-label intervals too
        from unfreeze.evaluation.multilabel import multilabel_intervals

        return multilabel_intervals(y_true, probs, y_pred, classes, resamples, seed)
    draws: dict[str, list[float | None]] = {name: [] for name in METRIC_NAMES}
    if not len(y_true):  # nothing to resample: no interval
        return {name: None for name in METRIC_NAMES}
    pos = positive_index(y_true, classes, positive) if len(classes) == 2 else None
    for rows in stratified_resamples(y_true, resamples, seed):
        for name in METRIC_NAMES:
            draws[name].append(metric_value(name, y_true[rows], probs[rows], y_pred[rows], pos))
    return {name: percentile_interval(values) for name, values in draws.items()}
