"""Multi-label loss: binary cross-entropy per label, positives weighted per label.

``class_weight: balanced`` in a multi-label task weights each label's positive images by
``negatives / positives`` of that label in the training rows (the ``pos_weight`` of
PyTorch's ``BCEWithLogitsLoss``): a label's positives and negatives then weigh the same in
the loss, which is what the multi-class ``balanced`` weights do for classes. Label smoothing
moves each 0/1 target towards 0.5 (Keras' binary rule). The loss of an image is the mean over
its labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

EPS = 1e-7


def balanced_pos_weights(labels: np.ndarray) -> list[float]:
    """``negatives / positives`` per label column of a multi-hot (n, L) matrix (1.0 for a
    label without positives or negatives: nothing to balance)."""
    pos = labels.sum(axis=0)
    neg = len(labels) - pos
    return [float(n / p) if p and n else 1.0 for p, n in zip(pos, neg, strict=True)]


@keras.saving.register_keras_serializable("unfreeze")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Mean binary cross-entropy over labels, each label's positive term times its weight."""

    def __init__(self, pos_weight: Sequence[float], label_smoothing: float = 0.0,
                 name: str = "weighted_binary_crossentropy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.pos_weight = [float(w) for w in pos_weight]
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.clip(ops.cast(y_pred, "float32"), EPS, 1.0 - EPS)
        y_true = ops.cast(y_true, "float32")
        if self.label_smoothing:
            y_true = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        weight = ops.convert_to_tensor(np.asarray(self.pos_weight, np.float32))
        per_label = -(weight * y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))
        return ops.mean(per_label, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "pos_weight": self.pos_weight,
                "label_smoothing": self.label_smoothing}


def multilabel_loss(label_smoothing: float, pos_weight: Sequence[float] | None
                    ) -> keras.losses.Loss:
    """The loss of a multi-label phase: Keras' binary cross-entropy, or with positive weights
    :class:`WeightedBinaryCrossentropy`."""
    if pos_weight is None:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    return WeightedBinaryCrossentropy(pos_weight, label_smoothing)
