"""Phase-one feature caching: with the base frozen, its pooled features are computed once.

In phase one only the head trains, and the frozen base (in inference mode) maps an image to
the same pooled feature vector every epoch. So instead of a full forward pass per image per
epoch (the classic recipe), the base runs over the training images ``head.cached_views`` times
in all and the head trains on those arrays:

- ``cached_views: 1``: the features of the unaugmented images (no augmentation in phase one);
- ``cached_views: K > 1``: K augmented views, computed once; epoch ``e`` uses view ``e % K``;
- ``cached_views: 0``: no caching, fresh augmentation every epoch through the full model.

The head trained here is made of the very layer objects of the full model (:func:`split`), so
the full model that is saved carries the trained head: nothing is copied or detached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np

from unfreeze import inputs
from unfreeze.params import AugmentParams

HEAD_LAYERS = ("dropout", "hidden", "predictions")


def split(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(extractor: raw image → pooled features, head: features → probabilities).

    Both share the full model's layers: training ``head`` trains the full model's head.
    """
    pool = model.get_layer("pool")
    extractor = keras.Model(model.inputs, pool.output, name="extractor")
    features = keras.Input(pool.output.shape[1:], name="features")
    x = features
    for name in HEAD_LAYERS:
        x = model.get_layer(name)(x)
    return extractor, keras.Model(features, x, name="head")


def extract(extractor: keras.Model, paths: Sequence[str], image_size: int, batch_size: int,
            augment: AugmentParams | None = None, seed: int = 0,
            keys: Sequence[str] | None = None) -> np.ndarray:
    """Pooled features of ``paths`` in order, of augmented images when ``augment`` is given."""
    ds = inputs.make_dataset(paths, None, image_size, batch_size, seed=seed, augment=augment,
                             keys=keys)
    feats = extractor.predict(ds, verbose=0)
    if len(feats) != len(paths):
        raise RuntimeError(f"got {len(feats)} feature rows for {len(paths)} images")
    return feats.astype(np.float32, copy=False)


def training_views(extractor: keras.Model, paths: Sequence[str], image_size: int,
                   batch_size: int, augment: AugmentParams, views: int, seed: int,
                   keys: Sequence[str] | None = None) -> np.ndarray:
    """``(views, n, d)`` features: one unaugmented view, or ``views`` augmented ones."""
    if views == 1:
        return extract(extractor, paths, image_size, batch_size, keys=keys)[None]
    return np.stack([extract(extractor, paths, image_size, batch_size, augment,
                             seed + 1009 * v, keys) for v in range(views)])


class CachedViews(keras.utils.PyDataset):
    """Shuffled batches ``(features, labels, sample_weights)``; epoch ``e`` uses view ``e % K``.

    The shuffle order of epoch ``e`` depends on ``seed`` and ``e`` only, so a resumed phase
    (``first_epoch``) sees the same batches as an uninterrupted one.
    """

    def __init__(self, views: np.ndarray, labels: np.ndarray, batch_size: int,
                 class_weight: dict[int, float] | None, seed: int, first_epoch: int = 0
                 ) -> None:
        super().__init__()
        self.views, self.labels, self.batch_size = views, np.asarray(labels), batch_size
        weights = class_weight or {}
        self.sample_weights = np.asarray([weights.get(int(y), 1.0) for y in self.labels],
                                         dtype=np.float32)
        self.seed = seed
        self.epoch = first_epoch
        self._order = self._shuffle()

    def _shuffle(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)  # no sample dropped

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        view = self.views[self.epoch % len(self.views)]
        return view[rows], self.labels[rows], self.sample_weights[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._shuffle()
