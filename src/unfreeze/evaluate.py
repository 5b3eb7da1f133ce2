"""Test-set metrics, prediction table and plots (CSV for ``dvc plots``, PNG for people).

All functions here except :func:`predict` and the writers are pure: they take true labels
(integers into ``classes``) and predicted probabilities and return numbers or rows.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
from sklearn import metrics as skm

from unfreeze.io import write_atomic, write_json, write_parquet
from unfreeze.params import EvaluateParams


def predict(model, paths: list[str], image_size: int, batch_size: int,
            keys: list[str] | None = None) -> np.ndarray:
    """Class probabilities for ``paths`` in order (unshuffled, last partial batch kept).

    ``keys`` (content hashes) read the images from the decoded cache.
    """
    from unfreeze.inputs import make_dataset

    ds = make_dataset(paths, None, image_size, batch_size, keys=keys)
    probs = model.predict(ds, verbose=0)
    if len(probs) != len(paths):
        raise RuntimeError(f"got {len(probs)} predictions for {len(paths)} images")
    return probs


def positive_index(y_true: np.ndarray, classes: list[str], positive: str | None) -> int:
    """The positive class of a binary task: as given, else the rarer class in ``y_true``."""
    if positive is not None:
        if positive not in classes:
            raise ValueError(f"evaluate.positive_class: {positive!r} is not one of {classes}")
        return classes.index(positive)
    counts = Counter(y_true.tolist())
    return min(range(len(classes)), key=lambda i: (counts.get(i, 0), -i))


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str],
                    positive: str | None = None) -> dict:
    """Accuracy, balanced accuracy, macro and per-class P/R/F1, ROC-AUC, average precision."""
    y_pred = probs.argmax(axis=1)
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
                      classes: list[str]) -> pa.Table:
    """One row per test image: path, true and predicted label, one probability per class."""
    columns = {
        "path": paths,
        "label": [classes[i] for i in y_true],
        "predicted": [classes[i] for i in probs.argmax(axis=1)],
    }
    for i, name in enumerate(classes):
        columns[f"prob_{name}"] = probs[:, i].astype(np.float64)
    return pa.table(columns)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """Write dict rows as CSV with a header, atomically."""
    import csv

    def writer(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)

    return write_atomic(path, writer)


def plot_pngs(out_dir: Path, y_true: np.ndarray, probs: np.ndarray, classes: list[str],
              roc: list[dict], pr: list[dict]) -> list[Path]:
    """Confusion matrix, ROC and PR curves as PNG files (``dvc plots show`` needs a network)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    cm = skm.confusion_matrix(y_true, probs.argmax(axis=1), labels=list(range(len(classes))))
    fig, ax = plt.subplots(figsize=(4 + 0.4 * len(classes), 3.5 + 0.4 * len(classes)))
    skm.ConfusionMatrixDisplay(cm, display_labels=classes).plot(ax=ax, colorbar=False)
    ax.set_title("Test confusion matrix")
    written.append(save_figure(fig, out_dir / "confusion.png"))
    plt.close(fig)
    written.append(plot_curves(out_dir / "roc.png", roc, "fpr", "tpr", "ROC (test)"))
    written.append(plot_curves(out_dir / "pr.png", pr, "recall", "precision",
                               "Precision-recall (test)"))
    return written


def plot_curves(path: Path, rows: list[dict], x: str, y: str, title: str) -> Path:
    """One line per class of curve rows (``class``, x, y) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for cls in dict.fromkeys(r["class"] for r in rows):
        pts = [r for r in rows if r["class"] == cls]
        ax.plot([r[x] for r in pts], [r[y] for r in pts], label=cls)
    ax.set(xlabel=x, ylabel=y, title=title, xlim=(0, 1), ylim=(0, 1.02))
    if rows:
        ax.legend(loc="lower right" if x == "fpr" else "lower left")
    written = save_figure(fig, path)
    plt.close(fig)
    return written


def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib figure as PNG, atomically."""
    fig.tight_layout()
    return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def evaluate_on_test(params: EvaluateParams, splits_path: Path, model_dir: Path,
                     out_dir: Path) -> dict:
    """Predict the test split with the saved model and write every report file to ``out_dir``.

    Writes metrics.json, predictions.parquet, confusion.csv, roc.csv, pr.csv and PNG plots.
    """
    import pyarrow.compute as pc

    from unfreeze import data as data_lib
    from unfreeze import model as model_lib
    from unfreeze import train
    from unfreeze.splits import leakage_checks

    table, root, _ = data_lib.load_splits(splits_path)
    test = table.filter(pc.equal(table["split"], "test"))
    meta = train.read_meta(model_dir)
    classes = meta["classes"]
    rows = train.rows_of(test, root, classes)
    model = model_lib.load(model_dir / train.MODEL_FILE)
    probs = predict(model, rows.paths, meta["image_size"], params.batch_size, rows.keys)
    metrics = compute_metrics(rows.labels, probs, classes, params.positive_class)
    metrics["leakage_checks"] = leakage_checks(table)
    roc, pr = curve_rows(rows.labels, probs, classes, params.positive_class)
    rel_paths = test["path"].to_pylist()
    write_parquet(out_dir / "predictions.parquet",
                  predictions_table(rel_paths, rows.labels, probs, classes))
    confusion = [{"actual": classes[t], "predicted": classes[p]}
                 for t, p in zip(rows.labels, probs.argmax(axis=1), strict=True)]
    write_csv(out_dir / "confusion.csv", confusion, ["actual", "predicted"])
    write_csv(out_dir / "roc.csv", roc, ["class", "fpr", "tpr"])
    write_csv(out_dir / "pr.csv", pr, ["class", "recall", "precision"])
    plot_pngs(out_dir, rows.labels, probs, classes, roc, pr)
    write_json(out_dir / "metrics.json", metrics)
    return metrics
