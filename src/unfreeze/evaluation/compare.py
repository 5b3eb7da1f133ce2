"""Two models on the same images: the paired comparison a promotion decides from.

The difference of a headline metric (new − current) with a 95 % interval from a paired,
class-stratified bootstrap over the images (the same resampled rows for both models, each
model's own decisions kept), and McNemar's exact test on the images exactly one model
classifies correctly. Pure functions of labels, probabilities and decisions.
"""

from __future__ import annotations

import numpy as np

from unfreeze.evaluation.bootstrap import percentile_interval, stratified_resamples
from unfreeze.evaluation.metrics import metric_value


def mcnemar(y_true: np.ndarray, new_pred: np.ndarray, current_pred: np.ndarray) -> dict:
    """McNemar's exact test: images only the new model gets right against images only the
    current one gets right (two-sided binomial p-value; 1.0 when no image differs)."""
    from scipy.stats import binomtest

    new_right, current_right = new_pred == y_true, current_pred == y_true
    if y_true.ndim == 2:  # multi-label: an image is right when its whole label set is
        new_right, current_right = new_right.all(axis=1), current_right.all(axis=1)
    b = int(np.sum(new_right & ~current_right))
    c = int(np.sum(current_right & ~new_right))
    p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return {"new_only_correct": b, "current_only_correct": c, "p_value": float(p)}


def paired_comparison(metric: str, y_true: np.ndarray, new: tuple[np.ndarray, np.ndarray],
                      current: tuple[np.ndarray, np.ndarray], positive: int | None,
                      resamples: int, seed: int) -> dict:
    """``metric`` of the new and the current model on the same images (``new`` and
    ``current`` are (probabilities, decisions)), their difference and its paired bootstrap
    95 % interval (None when the metric is undefined in some resample), and McNemar's test."""
    new_value = metric_value(metric, y_true, *new, positive)
    current_value = metric_value(metric, y_true, *current, positive)
    diffs = []
    for rows in stratified_resamples(y_true, resamples, seed):
        a = metric_value(metric, y_true[rows], new[0][rows], new[1][rows], positive)
        b = metric_value(metric, y_true[rows], current[0][rows], current[1][rows], positive)
        diffs.append(None if a is None or b is None else a - b)
    defined = new_value is not None and current_value is not None
    return {"metric": metric, "n": len(y_true), "new_value": new_value,
            "current_value": current_value,
            "difference": new_value - current_value if defined else None,
            "ci95": percentile_interval(diffs) if resamples else None,
            "bootstrap": {"resamples": resamples, "seed": seed, "method": "percentile, "
                          "paired, class-stratified over the same images"},
            "mcnemar": mcnemar(y_true, new[1], current[1])}
