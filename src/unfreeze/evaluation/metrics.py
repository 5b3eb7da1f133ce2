"""Metrics of predicted probabilities against true labels, shared by evaluation and CV.

Pure functions: they take true labels (integers into ``classes``) and predicted
probabilities and return numbers or rows. The headline metrics (reported, aggregated and
compared everywhere) are listed once, in :data:`unfreeze.config.params.METRIC_NAMES`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from sklearn import metrics as skm

from unfreeze.config.errors import ParamsError


def positive_class(labels: Sequence[str], classes: Sequence[str], configured: str | None
                   ) -> str | None:
    """The positive class of a binary task (None otherwise): ``configured`` when set, else
    the rarer class in ``labels``; on a tie the later class in ``classes`` (scikit-learn's
    convention that the greater label is the positive one). The one rule, for test and CV."""
    if len(classes) != 2:
        return None
    if configured is not None:
        if configured not in classes:
            raise ParamsError(f"evaluate.positive_class: {configured!r} is not one of "
                              f"{list(classes)}")
        return configured
    counts = Counter(labels)
    return min(reversed(list(classes)), key=lambda c: counts.get(c, 0))


def positive_index(y_true: np.ndarray, classes: list[str], positive: str | None) -> int:
    """Index of :func:`positive_class` for integer labels ``y_true``."""
    return classes.index(positive_class([classes[i] for i in y_true], classes, positive))


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str],
                    positive: str | None = None, y_pred: np.ndarray | None = None) -> dict:
    """Accuracy, balanced accuracy, macro and per-class P/R/F1, ROC-AUC, average precision.

    Label metrics use ``y_pred`` (e.g. at a tuned threshold), by default the arg-max class.
    Multi-label ``y_true`` (n, L): :func:`unfreeze.evaluation.multilabel.multilabel_metrics`.
    """
    if y_true.ndim == 2:  # imported here: multilabel builds on this module's AUC and AP
        from unfreeze.evaluation.multilabel import decide_labels, multilabel_metrics

        y_pred = decide_labels(probs, 0.5) if y_pred is None else y_pred
        return multilabel_metrics(y_true, probs, y_pred, classes)
    y_pred = probs.argmax(axis=1) if y_pred is None else y_pred
    labels = list(range(len(classes)))
    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    out = {
        "n_test": len(y_true),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "precision": float(p.mean()),
        "recall": float(r.mean()),
        "f1": float(f.mean()),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
    }
    present = np.unique(y_true)
    if len(present) < 2:  # AUC is undefined with one class only
        out["roc_auc"] = out["average_precision"] = None
    elif len(classes) == 2:
        pos = positive_index(y_true, classes, positive)
        out["positive_class"] = classes[pos]
        out["roc_auc"] = float(skm.roc_auc_score(y_true == pos, probs[:, pos]))
        out["average_precision"] = float(skm.average_precision_score(y_true == pos, probs[:, pos]))
    else:
        onehot = np.eye(len(classes))[y_true]
        cols = [i for i in labels if i in present]
        out["roc_auc"] = float(skm.roc_auc_score(onehot[:, cols], probs[:, cols],
                                                 average="macro"))
        out["average_precision"] = float(skm.average_precision_score(
            onehot[:, cols], probs[:, cols], average="macro"))
    return out


def metric_value(name: str, y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray,
                 positive: int | None) -> float | None:
    """One of ``METRIC_NAMES`` exactly as :func:`compute_metrics` defines it (macro averages
    over every class; AUC and AP of the class index ``positive`` in a binary task, macro
    one-vs-rest over the classes present otherwise; None when only one class is present),
    computed with NumPy alone: ~0.05–0.4 ms against ~12 ms, for bootstraps that call it
    thousands of times. Multi-label ``y_true`` (n, L): its multi-label meaning
    (:mod:`unfreeze.evaluation.multilabel`)."""
    if y_true.ndim == 2:
        from unfreeze.evaluation.multilabel import metric_value_multilabel

        return metric_value_multilabel(name, y_true, probs, y_pred)
    k = probs.shape[1]
    if name in ("roc_auc", "average_precision"):
        present = np.unique(y_true)
        if len(present) < 2:
            return None
        score = _auc if name == "roc_auc" else _average_precision
        if k == 2 and positive is None:
            raise ValueError(f"{name} of a binary task needs the positive class index")
        cols = [positive] if k == 2 else list(present)
        return float(np.mean([score(y_true == c, probs[:, c]) for c in cols]))
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    if name == "accuracy":
        return float(tp.sum() / len(y_true))
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    if name == "balanced_accuracy":
        return float(recall[support > 0].mean())
    if name == "recall":
        return float(recall.mean())
    if name == "precision":
        return float(np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0).mean())
    if name == "f1":
        denominator = support + predicted
        return float(np.divide(2 * tp, denominator, out=np.zeros(k),
                               where=denominator > 0).mean())
    raise ValueError(f"unknown metric {name!r}")


def _auc(truth: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count one half), as scikit-learn's."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    n_pos = int(truth.sum())
    n_neg = len(truth) - n_pos
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_precision(truth: np.ndarray, score: np.ndarray) -> float:
    """Average precision: Σ (Rₙ − Rₙ₋₁) Pₙ over the distinct thresholds, as scikit-learn's."""
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last row of each distinct score
    tps = np.cumsum(t)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def curve_rows(y_true: np.ndarray, probs: np.ndarray, classes: list[str],
               positive: str | None = None) -> tuple[list[dict], list[dict]]:
    """ROC rows (class, fpr, tpr) and PR rows (class, recall, precision), one-vs-rest.

    A binary task gets the positive class's curves only; a multi-label one (``y_true``
    (n, L)) one curve per label with both classes present.
    """
    if y_true.ndim != 2 and len(classes) == 2:
        which = [positive_index(y_true, classes, positive)]
    else:
        which = list(range(len(classes)))
    roc, pr = [], []
    for i in which:
        truth = y_true[:, i] > 0 if y_true.ndim == 2 else y_true == i
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = skm.roc_curve(truth, probs[:, i])
        roc += [{"class": classes[i], "fpr": float(a), "tpr": float(b)}
                for a, b in zip(fpr, tpr, strict=True)]
        prec, rec, _ = skm.precision_recall_curve(truth, probs[:, i])
        pr += [{"class": classes[i], "recall": float(a), "precision": float(b)}
               for a, b in zip(rec, prec, strict=True)]
    return roc, pr


def predictions_table(paths: list[str], y_true: np.ndarray, probs: np.ndarray,
                      classes: list[str], y_pred: np.ndarray | None = None) -> pa.Table:
    """One row per test image: path, true and predicted label, one probability per class.
    Multi-label: the label sets joined by ``;`` (:mod:`unfreeze.evaluation.multilabel`)."""
    if y_true.ndim == 2:
        from unfreeze.evaluation.multilabel import decide_labels, multilabel_predictions_table

        y_pred = decide_labels(probs, 0.5) if y_pred is None else y_pred
        return multilabel_predictions_table(paths, y_true, probs, y_pred, classes)
    y_pred = probs.argmax(axis=1) if y_pred is None else y_pred
    columns = {
        "path": paths,
        "label": [classes[i] for i in y_true],
        "predicted": [classes[i] for i in y_pred],
    }
    for i, name in enumerate(classes):
        columns[f"prob_{name}"] = probs[:, i].astype(np.float64)
    return pa.table(columns)
