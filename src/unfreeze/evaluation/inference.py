"""Predictions of a saved model on rows of a splits table, in row order.

Evaluation datasets are never shuffled and keep the last partial batch, so the i-th
probability row belongs to the i-th image; a count mismatch is an error, never a silent shift.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unfreeze.dataset.rows import Rows, is_split, load_splits, rows_of
from unfreeze.training import hardware
from unfreeze.training.artifacts import read_meta
from unfreeze.training.distribute import replicas_of
from unfreeze.training.inputs import make_dataset, tuned

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
    ds = make_dataset(paths, None, image_size, batch_size, keys=keys,
                      replicas=replicas_of(model))
    return _views(model, ds, len(paths), image_size, tta)


def predict_image_views(model, images: np.ndarray, batch_size: int, tta: str = "none"
                        ) -> list[np.ndarray]:
    """:func:`predict_views` for decoded images (``(n, S, S, 3)``, raw 0–255 pixels)."""
    import tensorflow as tf

    ds = tuned(tf.data.Dataset.from_tensor_slices(images.astype(np.float32)).batch(batch_size))
    return _views(model, ds, len(images), images.shape[1], tta)


def _views(model, ds, n: int, image_size: int, tta: str) -> list[np.ndarray]:
    """The model's probabilities on each TTA view of the image batches ``ds`` (n images of
    ``image_size`` px)."""
    import tensorflow as tf

    hardware.for_use(model, "predict", image_size)
    views = []
    for axes in TTA_VIEWS[tta]:
        view = ds.map(lambda x, axes=axes: tf.reverse(x, list(axes))) if axes else ds
        probs = model.predict(view, verbose=0)
        if len(probs) != n:
            raise RuntimeError(f"got {len(probs)} predictions for {n} images")
        views.append(probs)
    return views


def evaluation_rows(splits_path: Path, model_dir: Path
                    ) -> tuple[object, Rows, Rows, list[str], int]:
    """Splits table, val and test rows, the model's classes and image size."""
    table, root, _ = load_splits(splits_path)
    meta = read_meta(model_dir)
    classes = meta["classes"]
    val = rows_of(table.filter(is_split(table, "val")), root, classes)
    test = rows_of(table.filter(is_split(table, "test")), root, classes)
    return table, val, test, classes, meta["image_size"]
