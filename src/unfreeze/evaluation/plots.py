"""PNG figures for people (``dvc plots show`` loads its chart library from the network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from unfreeze.io import write_atomic


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_test_pngs(out_dir: Path, y_true: np.ndarray, y_pred: np.ndarray, classes: list[str],
                   roc: list[dict], pr: list[dict]) -> list[Path]:
    """Confusion matrix (multi-label: one per label), ROC and PR curves as PNG files
    (``dvc plots show`` needs a network)."""
    plt = pyplot()
    written = []
    if y_true.ndim == 2:  # multi-label: one 2 × 2 matrix per label
        fig, axes = plt.subplots(1, len(classes), figsize=(3.2 * len(classes), 3.2),
                                 squeeze=False)
        for j, (ax, name) in enumerate(zip(axes[0], classes, strict=True)):
            cm = skm.confusion_matrix(y_true[:, j], y_pred[:, j], labels=[0, 1])
            skm.ConfusionMatrixDisplay(cm, display_labels=[f"no {name}", name]).plot(
                ax=ax, colorbar=False)
            ax.set_title(f"Test: {name}")
    else:
        cm = skm.confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
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
    plt = pyplot()
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


def plot_reliability(path: Path, rows: list[dict]) -> Path:
    """Reliability diagram: accuracy against confidence per bin, one line per model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfectly calibrated")
    for name in dict.fromkeys(r["probabilities"] for r in rows):
        pts = [r for r in rows if r["probabilities"] == name]
        ax.plot([r["confidence"] for r in pts], [r["accuracy"] for r in pts], marker="o",
                label=name)
    ax.set(xlabel="confidence (top probability)", ylabel="accuracy", xlim=(0, 1),
           ylim=(0, 1.02), title="Reliability (test)")
    ax.legend(loc="upper left")
    written = save_figure(fig, path)
    plt.close(fig)
    return written


def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib figure as PNG, atomically."""
    fig.tight_layout()
    return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
