"""Multi-label evaluation: an image carries any number of labels (none included), each scored
by its own sigmoid probability.

Pure functions of ``y_true`` (n, L) 0/1, ``probs`` (n, L) independent per-label probabilities
(rows need not sum to 1), ``y_pred`` (n, L) 0/1 decisions and ``classes`` (the L label names).

- **Operating point**, fitted on validation label by label: a temperature on each label's
  logit, ``sigmoid(logit(p) / T)``, minimising that label's binary negative log-likelihood,
  then a threshold by the ``evaluate.threshold`` rule (``calibrate.choose_threshold``). A label
  whose validation rows hold one class only keeps T = 1; a label that cannot support the rule
  (one class, or a target it never reaches) gets :data:`FALLBACK_THRESHOLD`, and is named.
- **Headline metrics** (``METRIC_NAMES``: what promotion, CV and the reports compare) mean, for
  a multi-label task:

  - ``accuracy``: subset accuracy, the fraction of images whose label set is exactly right;
  - ``balanced_accuracy``: macro mean over labels of (TPR + TNR) / 2, over the classes present;
  - ``precision`` / ``recall`` / ``f1``: macro means over every label (0 where a ratio is 0/0,
    as scikit-learn's ``zero_division=0``);
  - ``roc_auc``: macro ROC-AUC over the labels with both classes present (None if none has);
  - ``average_precision``: mAP, mean average precision over those labels.
- **Bootstrap**: images resampled with replacement within each label set (the distinct rows
  of ``y_true``) held by at least 5 images, the rarer sets pooled into one stratum
  (:func:`~unfreeze.evaluation.bootstrap.stratified_resamples`): the common sets keep their
  counts, and a set of one image still varies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from unfreeze.config.errors import ParamsError
from unfreeze.config.params import METRIC_NAMES, parse_threshold
from unfreeze.evaluation.bootstrap import percentile_interval, stratified_resamples
from unfreeze.evaluation.calibrate import (
    _logit,
    apply_label_temperature,  # noqa: F401  (re-exported: the multi-label API in one place)
    choose_threshold,
    decide_labels,  # noqa: F401
)
from unfreeze.evaluation.metrics import _auc, _average_precision

TEMPERATURE_BOUNDS = (0.05, 20.0)  # as calibrate.fit_temperature
FALLBACK_THRESHOLD = 0.5
COUNTS = ("tp", "fp", "fn", "tn")
RATES = ("precision", "recall", "f1", "balanced_accuracy")
LABEL_INTERVALS = ("roc_auc", "average_precision", "f1")  # per-label bootstrap intervals

Score = Callable[[np.ndarray, np.ndarray], float]


def fit_label_temperatures(y_val: np.ndarray, probs_val: np.ndarray) -> np.ndarray:
    """Per label, the temperature in :data:`TEMPERATURE_BOUNDS` minimising its binary NLL on
    validation; 1 for a label with one class only there."""
    from scipy.optimize import minimize_scalar

    z, y = _logit(probs_val), np.asarray(y_val, dtype=np.float64)
    out = np.ones(y.shape[1])
    for j in range(y.shape[1]):
        if not 0 < y[:, j].sum() < len(y):
            continue

        def nll(log_t: float, z: np.ndarray = z[:, j], y: np.ndarray = y[:, j]) -> float:
            s = z / np.exp(log_t)
            return float(np.mean(np.logaddexp(0.0, s) - y * s))

        best = minimize_scalar(nll, bounds=np.log(TEMPERATURE_BOUNDS), method="bounded",
                               options={"xatol": 1e-4})
        out[j] = float(np.exp(best.x))
    return out


def fit_label_thresholds(y_val: np.ndarray, probs_val: np.ndarray, spec: float | str,
                         classes: Sequence[str]) -> tuple[np.ndarray, dict[str, str]]:
    """Each label's threshold by the ``evaluate.threshold`` rule ``spec``, and the labels that
    fell back to :data:`FALLBACK_THRESHOLD` with the reason. A bad ``spec`` raises
    ParamsError; a rare label never does."""
    rule, _ = parse_threshold(spec)
    truth = np.asarray(y_val).astype(bool)
    thresholds = np.full(len(classes), FALLBACK_THRESHOLD)
    fallbacks: dict[str, str] = {}
    for j, name in enumerate(classes):
        positives = int(truth[:, j].sum())
        if rule != "fixed" and positives in (0, len(truth)):
            which = "positive" if positives == 0 else "negative"
            fallbacks[name] = f"no {which} image in validation"
            continue
        try:
            thresholds[j] = choose_threshold(truth[:, j], probs_val[:, j], spec)
        except ParamsError as err:
            fallbacks[name] = str(err)
    return thresholds, fallbacks


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray,
                       classes: Sequence[str]) -> dict:
    """Headline metrics (see the module docstring), micro and macro P/R/F1, ROC-AUC, mAP,
    subset accuracy, Hamming loss and per-label numbers; JSON-ready (None = undefined)."""
    truth, decided = _check(y_true, probs, y_pred, classes)
    r = _rates(truth, decided)
    aucs, aps = _label_scores(truth, probs, _auc), _label_scores(truth, probs, _average_precision)
    per_label = {name: {"roc_auc": aucs[j], "average_precision": aps[j],
                        **{k: float(r[k][j]) for k in RATES},
                        "support": int(r["tp"][j] + r["fn"][j]),
                        **{k: int(r[k][j]) for k in COUNTS}}
                 for j, name in enumerate(classes)}
    headline = _headline(truth, decided, r, aucs, aps)
    n = len(truth)
    return {"n_images": n, "n_test": n, **headline,
            "subset_accuracy": headline["accuracy"],
            "hamming_loss": float(np.mean(truth != decided)),
            **_micro(truth, probs, r),
            **{f"macro_{k}": headline[k] for k in ("precision", "recall", "f1")},
            "macro_roc_auc": headline["roc_auc"], "map": headline["average_precision"],
            "labels_per_image": float(truth.sum(axis=1).mean()),
            "degenerate_labels": [c for c, a in zip(classes, aucs, strict=True) if a is None],
            "per_label": per_label}


def metric_value_multilabel(name: str, y_true: np.ndarray, probs: np.ndarray,
                            y_pred: np.ndarray) -> float | None:
    """One headline metric exactly as :func:`multilabel_metrics` defines it (None when
    undefined), computing only what it needs: for bootstraps and paired comparisons."""
    truth, decided = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    if name == "roc_auc":
        return _mean_defined(_label_scores(truth, probs, _auc))
    if name == "average_precision":
        return _mean_defined(_label_scores(truth, probs, _average_precision))
    if name == "accuracy":
        return float(np.mean((truth == decided).all(axis=1)))
    if name in RATES:
        return float(_rates(truth, decided)[name].mean())
    raise ValueError(f"unknown metric {name!r}; one of {list(METRIC_NAMES)}")


def multilabel_intervals(y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray,
                         classes: Sequence[str], resamples: int, seed: int) -> dict:
    """95 % percentile bootstrap over images (drawn with replacement within each label set,
    :func:`~unfreeze.evaluation.bootstrap.stratified_resamples`) of each headline metric, and
    under ``per_label`` of each label's ROC-AUC, AP and F1; the decisions ``y_pred`` are kept
    per image. None where a resample leaves a metric undefined."""
    truth, decided = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    draws: dict[str, list] = {name: [] for name in METRIC_NAMES}
    label_draws: dict[str, dict[str, list]] = {c: {k: [] for k in LABEL_INTERVALS}
                                               for c in classes}
    for rows in stratified_resamples(truth.astype(np.int8), resamples if len(truth) else 0,
                                     seed):
        t, p, d = truth[rows], probs[rows], decided[rows]
        r = _rates(t, d)
        aucs, aps = _label_scores(t, p, _auc), _label_scores(t, p, _average_precision)
        for name, value in _headline(t, d, r, aucs, aps).items():
            draws[name].append(value)
        for j, c in enumerate(classes):
            for key, value in (("roc_auc", aucs[j]), ("average_precision", aps[j]),
                               ("f1", float(r["f1"][j]))):
                label_draws[c][key].append(value)
    out: dict = {name: percentile_interval(values) for name, values in draws.items()}
    out["per_label"] = {c: {k: percentile_interval(v) for k, v in d.items()}
                        for c, d in label_draws.items()}
    return out


def label_confusion_pairs(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
                          ) -> list[dict]:
    """One (actual, predicted) row per (image, label) cell — ``crack`` or ``no crack`` each —
    for ``dvc plots``' confusion template: a 2 × 2 block per label."""
    out = []
    for j, name in enumerate(classes):
        said = {True: name, False: f"no {name}"}
        out += [{"actual": said[bool(t)], "predicted": said[bool(p)]}
                for t, p in zip(y_true[:, j], y_pred[:, j], strict=True)]
    return out


def multilabel_predictions_table(paths: Sequence[str], y_true: np.ndarray, probs: np.ndarray,
                                 y_pred: np.ndarray, classes: Sequence[str],
                                 separator: str = ";") -> pa.Table:
    """One row per image: path, true and predicted labels joined by ``separator`` ("" for
    none), the same as lists (``labels``, ``predicted_labels``: what programs read back), and
    one ``prob_<label>`` column per label."""
    def named(matrix: np.ndarray) -> list[list[str]]:
        return [[c for c, on in zip(classes, row, strict=True) if on]
                for row in np.asarray(matrix).astype(bool)]

    truth, decided = named(y_true), named(y_pred)
    columns = {"path": list(paths), "label": [separator.join(x) for x in truth],
               "predicted": [separator.join(x) for x in decided],
               "labels": pa.array(truth, pa.list_(pa.string())),
               "predicted_labels": pa.array(decided, pa.list_(pa.string()))}
    for j, name in enumerate(classes):
        columns[f"prob_{name}"] = probs[:, j].astype(np.float64)
    return pa.table(columns)


def _check(y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
           ) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` and ``y_pred`` as booleans, once their shapes agree with (n, len(classes))."""
    shape = (len(y_true), len(classes))
    for what, array in (("y_true", y_true), ("probs", probs), ("y_pred", y_pred)):
        if np.shape(array) != shape:
            raise ValueError(f"{what} has shape {np.shape(array)}, expected {shape} "
                             f"(images × labels {list(classes)})")
    return np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)


def _counts(truth: np.ndarray, decided: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per label (tp, fp, fn, tn) of boolean (n, L) arrays."""
    return ((truth & decided).sum(axis=0), (~truth & decided).sum(axis=0),
            (truth & ~decided).sum(axis=0), (~truth & ~decided).sum(axis=0))


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.shape(a)), where=b > 0)


def _rates(truth: np.ndarray, decided: np.ndarray) -> dict[str, np.ndarray]:
    """Per-label counts, precision, recall, F1 (0 for 0/0) and balanced accuracy (the mean
    of TPR and TNR over the classes the label has)."""
    tp, fp, fn, tn = _counts(truth, decided)
    tpr, tnr = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    both = (tp + fn > 0) & (tn + fp > 0)
    balanced = np.where(both, (tpr + tnr) / 2, np.where(tp + fn > 0, tpr, tnr))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": _ratio(tp, tp + fp),
            "recall": tpr, "f1": _ratio(2 * tp, 2 * tp + fp + fn), "balanced_accuracy": balanced}


def _label_scores(truth: np.ndarray, probs: np.ndarray, score: Score) -> list[float | None]:
    """``score`` (ROC-AUC or AP) of each label; None for a label with one class only."""
    return [score(truth[:, j], probs[:, j]) if 0 < truth[:, j].sum() < len(truth) else None
            for j in range(truth.shape[1])]


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _headline(truth: np.ndarray, decided: np.ndarray, r: dict[str, np.ndarray],
              aucs: list[float | None], aps: list[float | None]) -> dict[str, float | None]:
    """``METRIC_NAMES`` for a multi-label task, from per-label rates and scores."""
    return {"accuracy": float(np.mean((truth == decided).all(axis=1))),
            **{k: float(r[k].mean()) for k in ("balanced_accuracy", "precision", "recall", "f1")},
            "roc_auc": _mean_defined(aucs), "average_precision": _mean_defined(aps)}


def _micro(truth: np.ndarray, probs: np.ndarray, r: dict[str, np.ndarray]) -> dict:
    """Micro P/R/F1 (counts pooled over labels) and micro ROC-AUC (all cells pooled)."""
    tp, fp, fn = (int(r[k].sum()) for k in ("tp", "fp", "fn"))
    flat = truth.ravel()
    return {"micro_precision": tp / (tp + fp) if tp + fp else 0.0,
            "micro_recall": tp / (tp + fn) if tp + fn else 0.0,
            "micro_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "micro_roc_auc": _auc(flat, np.ravel(probs)) if 0 < flat.sum() < flat.size
            else None}
