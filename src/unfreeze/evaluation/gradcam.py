"""Grad-CAM heatmaps for the saved model, and a PNG grid of them.

The model's InceptionV3 base is a nested model called with ``training=False``; Grad-CAM
needs the base's last feature map (``mixed10``) and the gradient of a class's pre-softmax
score with respect to it. Both are computed by calling the model's own layers in order
(preprocess → base → pool → dropout → hidden → predictions' kernel and bias), so the
heatmaps belong to exactly the weights that predict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unfreeze.evaluation.plots import pyplot, save_figure
from unfreeze.training.model import HEAD_LAYERS, OUTPUT, PREPROCESS, base_of, is_multilabel


def gradcam(model, images: np.ndarray, class_index: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (n, H, W) in [0, 1] for ``class_index`` (default: the predicted class; a
    multi-label model's: the label to explain, its pre-sigmoid score).

    ``images`` are raw 0–255 pixels (n, H, W, 3). Also returns the model's probabilities.
    """
    import tensorflow as tf

    try:
        preprocess, base = model.get_layer(PREPROCESS), base_of(model)
        head = [model.get_layer(name) for name in HEAD_LAYERS[:-1]]  # up to the logits
        output = model.get_layer(OUTPUT)
    except ValueError as exc:
        raise ValueError(f"Grad-CAM needs a model built by unfreeze (preprocess → "
                         f"inception_v3 → pool → hidden → predictions): {exc}") from None
    x = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        fmap = tf.cast(base(preprocess(x), training=False), tf.float32)
        tape.watch(fmap)
        h = fmap
        for layer in head:
            h = layer(h, training=False)
        logits = tf.matmul(tf.cast(h, tf.float32), tf.cast(output.kernel, tf.float32))
        logits += tf.cast(output.bias, tf.float32)
        probs = tf.sigmoid(logits) if is_multilabel(model) else tf.nn.softmax(logits)
        chosen = (tf.argmax(logits, axis=1, output_type=tf.int32) if class_index is None
                  else tf.constant(class_index, tf.int32))
        score = tf.gather(logits, chosen, batch_dims=1)
    grads = tape.gradient(score, fmap)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0), probs.numpy()


def sample_for_gradcam(y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray,
                       n_classes: int, per_cell: int) -> list[int]:
    """Up to ``per_cell`` rows per (true class, correct / misclassified), most confident first.

    Deterministic: the same predictions always give the same sample.
    """
    chosen: list[int] = []
    for cls in range(n_classes):
        for correct in (True, False):
            rows = np.flatnonzero((y_true == cls) & ((y_pred == y_true) == correct))
            rows = rows[np.argsort(-confidence[rows], kind="stable")]
            chosen += rows[:per_cell].tolist()
    return chosen


def sample_label_gradcam(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray,
                        labels: list[int], per_cell: int) -> list[tuple[int, int]]:
    """Multi-label: up to ``per_cell`` (row, label) pairs per label of ``labels`` and cell —
    found (true positive), missed (false negative), false alarm (false positive) — the most
    telling first (highest probability, lowest for a miss). Deterministic."""
    chosen: list[tuple[int, int]] = []
    for k in labels:
        truth, said, p = y_true[:, k] > 0, y_pred[:, k] > 0, probs[:, k]
        for mask, sign in ((truth & said, -1), (truth & ~said, 1), (~truth & said, -1)):
            rows = np.flatnonzero(mask)
            rows = rows[np.argsort(sign * p[rows], kind="stable")]
            chosen += [(int(r), k) for r in rows[:per_cell]]
    return chosen


def plot_grid(path: Path, images: np.ndarray, heatmaps: np.ndarray, titles: list[str],
              columns: int = 4) -> Path:
    """Images with their heatmaps overlaid, one titled tile each, as a PNG."""
    plt = pyplot()
    n = max(1, len(images))
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, heat, title in zip(axes.ravel(), images, heatmaps, titles, strict=False):
        ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
        ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
        ax.set_title(title, fontsize=8)
    if not len(images):
        axes[0, 0].text(0.5, 0.5, "no images", ha="center", va="center")
    written = save_figure(fig, path)
    plt.close(fig)
    return written
