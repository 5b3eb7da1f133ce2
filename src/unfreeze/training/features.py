"""Feature caching: the frozen part of the model runs over the training images once.

In phase one only the head trains, and the frozen base (in inference mode) maps an image to
the same pooled feature vector every epoch. In phase two the layers below ``unfreeze_from``
are frozen and in inference mode too, so they map an image to the same activations (the
input of the first unfrozen block) every epoch. So instead of a full forward pass per image
per epoch (the classic recipe), the frozen part runs over the training images
``<phase>.cached_views`` times in all and the trainable part trains on those arrays:

- ``cached_views: 1``: the features of the unaugmented images (no augmentation);
- ``cached_views: K > 1``: K augmented views, computed once; epoch ``e`` uses view ``e % K``;
- ``cached_views: 0``: no caching, fresh augmentation every epoch through the full model.

The trainable part is made of the very layer objects of the full model (:func:`split_model`), so
the full model that is saved carries what was trained: nothing is copied or detached.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from unfreeze.config.params import INCEPTION_BLOCKS, AugmentParams
from unfreeze.training import inputs
from unfreeze.training import model as model_lib
from unfreeze.training.distribute import batch_sizes, replicas_of


def split_model(model: keras.Model, unfreeze_from: str | int | None = None
                ) -> tuple[keras.Model, keras.Model]:
    """(extractor: raw image → features, trainable part: features → probabilities).

    Without ``unfreeze_from`` (phase one) the features are the pooled base output and the
    trainable part is the head. With it (phase two) the features are the output of the last
    block boundary at or below the first unfrozen layer (:func:`cut_index`), and the trainable
    part is the rest of the base (still called with ``training=False``; layers below
    ``unfreeze_from`` in it stay frozen) plus the head. Both parts share the full model's layers.
    """
    if unfreeze_from is None:
        pool = model.get_layer(model_lib.POOL)
        extractor = keras.Model(model.inputs, pool.output, name="extractor")
        features = keras.Input(pool.output.shape[1:], name="features")
        x = features
        for name in model_lib.HEAD_LAYERS[1:]:  # the layers after pooling
            x = model.get_layer(name)(x)
        return extractor, keras.Model(features, x, name="head")
    base = model_lib.base_of(model)
    cut = base.layers[cut_index(base, model_lib.unfreeze_start(base, unfreeze_from))]
    upper = keras.Model(cut.output, base.output, name="upper_base")
    lower = keras.Model(base.inputs, cut.output, name="lower_base")
    image = keras.Input(model.input_shape[1:], name="image")
    extractor = keras.Model(image, lower(model.get_layer(model_lib.PREPROCESS)(image),
                                         training=False), name="extractor")
    features = keras.Input(cut.output.shape[1:], name="features")
    x = upper(features, training=False)
    for name in model_lib.HEAD_LAYERS:
        x = model.get_layer(name)(x)
    return extractor, keras.Model(features, x, name="top")


def cut_index(base: keras.Model, start: int) -> int:
    """Index of the base layer whose output is the only tensor every layer from ``start`` on
    needs: the end of the inception block (or the stem) that ``start`` lies in or follows."""
    names = [layer.name for layer in base.layers]
    boundaries = [model_lib.block_start(base, block) - 1 for block in INCEPTION_BLOCKS
                  if block in names]
    below = [i for i in boundaries if i < start]
    return max(below) if below else 0  # 0: the input layer, nothing below is frozen


def extract(extractor: keras.Model, paths: Sequence[str], image_size: int, batch_size: int,
            augment: AugmentParams | None = None, seed: int = 0,
            keys: Sequence[str] | None = None) -> np.ndarray:
    """Pooled features of ``paths`` in order, of augmented images when ``augment`` is given."""
    ds = inputs.make_dataset(paths, None, image_size, batch_size, seed=seed, augment=augment,
                             keys=keys, replicas=replicas_of(extractor))
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
    """Batches ``(features, labels, sample_weights)``; epoch ``e`` uses view ``e % K``.

    With ``shuffle``, the order of epoch ``e`` depends on ``seed`` and ``e`` only, so a resumed
    phase (``first_epoch``) sees the same batches as an uninterrupted one. Batch sizes follow
    :func:`~unfreeze.training.distribute.batch_sizes`: no sample dropped, and no batch smaller
    than ``replicas``.
    """

    def __init__(self, views: np.ndarray, labels: np.ndarray, batch_size: int,
                 class_weight: dict[int, float] | None, seed: int, first_epoch: int = 0,
                 shuffle: bool = True, replicas: int = 1) -> None:
        super().__init__()
        self.views, self.labels = views, np.asarray(labels)
        weights = class_weight or {}
        self.sample_weights = np.asarray([weights.get(int(y), 1.0) for y in self.labels],
                                         dtype=np.float32)
        self.seed, self.shuffle = seed, shuffle
        self.epoch = first_epoch
        self.bounds = np.cumsum([0, *batch_sizes(len(self.labels), batch_size, replicas)])
        self._order = self._shuffle()

    def _shuffle(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self._order[self.bounds[index]:self.bounds[index + 1]]
        view = self.views[self.epoch % len(self.views)]
        return view[rows], self.labels[rows], self.sample_weights[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._shuffle()
