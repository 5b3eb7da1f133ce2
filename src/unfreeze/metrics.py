"""Predictions and metrics shared by evaluation and cross-validation.

All functions here except :func:`predict`, :func:`predict_views` and
:func:`evaluation_rows` are pure: they take true labels (integers into ``classes``) and
predicted probabilities and return numbers or rows.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
from sklearn import metrics as skm

TTA_VIEWS = {"none": ((),), "hflip": ((), (2,)), "flips": ((), (2,), (1,), (1, 2))}


def predict(model, paths: list[str], image_size: int, batch_size: int,
            keys: list[str] | None = None, tta: str = "none") -> np.ndarray:
    """Class probabilities for ``paths`` in order (unshuffled, last partial batch kept).

    ``keys`` (content hashes) read the images from the decoded cache. ``tta`` averages the
    probabilities over mirrored views: ``hflip`` (left-right), ``flips`` (left-right,
    top-bottom and both).
    """
    return np.mean(predict_views(model, paths, image_size, batch_size, keys, tta), axis=0)


def predict_views(model, paths: list[str], image_size: int, batch_size: int,
                  keys: list[str] | None = None, tta: str = "none") -> list[np.ndarray]:
    """Probabilities of each test-time view (the first is the image as it is)."""
    import tensorflow as tf

    from unfreeze.inputs import make_dataset

    ds = make_dataset(paths, None, image_size, batch_size, keys=keys)
    views = []
    for axes in TTA_VIEWS[tta]:
        view = ds.map(lambda x, axes=axes: tf.reverse(x, list(axes))) if axes else ds
        probs = model.predict(view, verbose=0)
        if len(probs) != len(paths):
            raise RuntimeError(f"got {len(probs)} predictions for {len(paths)} images")
        views.append(probs)
    return views


def positive_index(y_true: np.ndarray, classes: list[str], positive: str | None) -> int:
    """The positive class of a binary task: as given, else the rarer class in ``y_true``."""
    if positive is not None:
        if positive not in classes:
            raise ValueError(f"evaluate.positive_class: {positive!r} is not one of {classes}")
        return classes.index(positive)
    counts = Counter(y_true.tolist())
    return min(range(len(classes)), key=lambda i: (counts.get(i, 0), -i))


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str],
                    positive: str | None = None, y_pred: np.ndarray | None = None) -> dict:
    """Accuracy, balanced accuracy, macro and per-class P/R/F1, ROC-AUC, average precision.

    Label metrics use ``y_pred`` (e.g. at a tuned threshold), by default the arg-max class.
    """
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


def curve_rows(y_true: np.ndarray, probs: np.ndarray, classes: list[str],
               positive: str | None = None) -> tuple[list[dict], list[dict]]:
    """ROC rows (class, fpr, tpr) and PR rows (class, recall, precision), one-vs-rest.

    A binary task gets the positive class's curves only.
    """
    if len(classes) == 2:
        which = [positive_index(y_true, classes, positive)]
    else:
        which = list(range(len(classes)))
    roc, pr = [], []
    for i in which:
        truth = y_true == i
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
    """One row per test image: path, true and predicted label, one probability per class."""
    y_pred = probs.argmax(axis=1) if y_pred is None else y_pred
    columns = {
        "path": paths,
        "label": [classes[i] for i in y_true],
        "predicted": [classes[i] for i in y_pred],
    }
    for i, name in enumerate(classes):
        columns[f"prob_{name}"] = probs[:, i].astype(np.float64)
    return pa.table(columns)


def evaluation_rows(splits_path: Path, model_dir: Path):
    """Splits table, val and test rows, the model's classes and image size."""
    from unfreeze import data as data_lib
    from unfreeze import train

    table, root, _ = data_lib.load_splits(splits_path)
    meta = train.read_meta(model_dir)
    classes = meta["classes"]
    val = train.rows_of(table.filter(is_split(table, "val")), root, classes)
    test = train.rows_of(table.filter(is_split(table, "test")), root, classes)
    return table, val, test, classes, meta["image_size"]


def is_split(table: pa.Table, name: str):
    import pyarrow.compute as pc

    return pc.equal(table["split"], name)
