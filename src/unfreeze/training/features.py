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

Both phases draw their views the same way (:mod:`unfreeze.training.activations`), so one
pass serves both: when phase two caches views, phase one runs the lower base (below phase
two's cut) once per view of either phase, keeps those activations in the on-disk store for
phase two, and computes its pooled features from them through the rest of the base.

The trainable part is made of the very layer objects of the full model (:func:`split_model`), so
the full model that is saved carries what was trained: nothing is copied or detached.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from unfreeze.config.params import INCEPTION_BLOCKS
from unfreeze.dataset.rows import TrainingData
from unfreeze.training import activations, inputs
from unfreeze.training import model as model_lib
from unfreeze.training.distribute import batch_sizes


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
        return extractor, keras.Model(features, _head(model, features, start=1), name="head")
    extractor, upper = split_at(model, unfreeze_from)
    features = keras.Input(extractor.output.shape[1:], name="features")
    return extractor, keras.Model(features, _head(model, upper(features, training=False)),
                                  name="top")


def split_at(model: keras.Model, unfreeze_from: str | int) -> tuple[keras.Model, keras.Model]:
    """(lower: raw image → the activations at the cut below ``unfreeze_from``, upper_base:
    those activations → the base output), both in inference mode, sharing the model's layers."""
    base = model_lib.base_of(model)
    cut = base.layers[cut_index(base, model_lib.unfreeze_start(base, unfreeze_from))]
    upper = keras.Model(cut.output, base.output, name="upper_base")
    lower = keras.Model(base.inputs, cut.output, name="lower_base")
    image = keras.Input(model.input_shape[1:], name="image")
    extractor = keras.Model(image, lower(model.get_layer(model_lib.PREPROCESS)(image),
                                         training=False), name="extractor")
    return extractor, upper


def pooled_from(model: keras.Model, upper: keras.Model) -> keras.Model:
    """Activations at ``upper``'s input → the pooled base output phase one trains on."""
    features = keras.Input(upper.input_shape[1:], name="activations")
    pooled = model.get_layer(model_lib.POOL)(upper(features, training=False))
    return keras.Model(features, pooled, name="pooled")


def _head(model: keras.Model, x, start: int = 0):
    """``x`` through the model's own head layers (from ``HEAD_LAYERS[start]`` on)."""
    for name in model_lib.HEAD_LAYERS[start:]:
        x = model.get_layer(name)(x)
    return x


def cut_index(base: keras.Model, start: int) -> int:
    """Index of the base layer whose output is the only tensor every layer from ``start`` on
    needs: the end of the inception block (or the stem) that ``start`` lies in or follows."""
    names = [layer.name for layer in base.layers]
    boundaries = [model_lib.block_start(base, block) - 1 for block in INCEPTION_BLOCKS
                  if block in names]
    below = [i for i in boundaries if i < start]
    return max(below) if below else 0  # 0: the input layer, nothing below is frozen


def extract(extractor: keras.Model, paths: Sequence[str], image_size: int,
            keys: Sequence[str] | None = None) -> np.ndarray:
    """Features of the unaugmented images of ``paths``, in order, in memory."""
    return activations.compute(extractor, paths, keys, image_size, activations.View(), None)


@dataclass(frozen=True)
class Share:
    """Phase one's part of the shared pass: the cut phase two trains above
    (``finetune.unfreeze_from``) and the views it trains on (``finetune.cached_views``)."""

    unfreeze_from: str | int
    views: tuple[activations.View, ...]


def cached_features(model: keras.Model, extractor: keras.Model, data: TrainingData,
                    views: Sequence[activations.View], image_size: int, at_cut: bool,
                    share: Share | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """(one ``(n, ...)`` array per training view, the validation images' features).

    ``at_cut`` (phase two: ``extractor`` ends at its cut): the views come from the
    activation store, computed there first if phase one did not. Phase one with ``share``
    and a usable store runs the lower base once per view of either phase, stores the
    activations at phase two's cut and pools its own features from them; otherwise its
    extractor's pooled features are computed in memory (nothing is computed for phase two).
    """
    store = activations.ActivationStore()
    train, val = data.train, data.val
    plain = [activations.View()]
    if at_cut:
        return (store.views(extractor, train.paths, train.keys, image_size, views),
                store.views(extractor, val.paths, val.keys, image_size, plain)[0])
    if share is None or not store.enabled(train.keys, val.keys):
        return ([activations.compute(extractor, train.paths, train.keys, image_size, view,
                                     None) for view in views],
                extract(extractor, val.paths, image_size, val.keys))
    lower, upper = split_at(model, share.unfreeze_from)
    acts = store.views(lower, train.paths, train.keys, image_size, [*views, *share.views])
    val_acts = store.views(lower, val.paths, val.keys, image_size, plain)[0]
    pooled = pooled_from(model, upper)
    return ([activations.pooled_rows(pooled, acts[i], image_size) for i in range(len(views))],
            activations.pooled_rows(pooled, val_acts, image_size))


class CachedViews:
    """Batches ``(features, labels, sample_weights)`` of cached views; epoch ``e`` uses view
    ``e % K``. With ``targets`` (soft targets, one pair per view), ``(features, targets,
    weights)``.

    With ``shuffle``, the order of epoch ``e`` depends on ``seed`` and ``e`` only. Every batch
    is fixed by its epoch and index alone (:meth:`batch`), so a resumed phase
    (``first_epoch``) sees the same batches as an uninterrupted one, however far tf.data reads
    ahead. Batch sizes follow :func:`~unfreeze.training.distribute.batch_sizes`: no sample
    dropped, and no batch smaller than ``replicas``.
    """

    def __init__(self, views: Sequence[np.ndarray], labels: np.ndarray, batch_size: int,
                 class_weight: dict[int, float] | None, seed: int, first_epoch: int = 0,
                 shuffle: bool = True, replicas: int = 1,
                 targets: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.views, self.labels = views, np.asarray(labels)
        weights = class_weight or {}  # multi-label: none (positive weights are in the loss)
        self.sample_weights = (np.ones(len(self.labels), np.float32) if self.labels.ndim == 2
                               else np.asarray([weights.get(int(y), 1.0) for y in self.labels],
                                               dtype=np.float32))
        # soft targets: (targets, sample weights) per view (mixing.view_targets)
        self.targets = list(targets) if targets is not None else None
        self.seed, self.shuffle, self.first_epoch = seed, shuffle, first_epoch
        self.bounds = np.cumsum([0, *batch_sizes(len(self.labels), batch_size, replicas)])

    def __len__(self) -> int:
        """Batches in an epoch."""
        return len(self.bounds) - 1

    def order(self, epoch: int) -> np.ndarray:
        """The rows of epoch ``epoch``, in the order its batches take them."""
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.labels))

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch ``index`` of epoch ``epoch``."""
        return self._take(epoch, self.order(epoch), index)

    def _take(self, epoch: int, order: np.ndarray, index: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = order[self.bounds[index]:self.bounds[index + 1]]
        v = epoch % len(self.views)
        if self.targets is not None:
            targets, weights = self.targets[v]
            return self.views[v][rows], targets[rows], weights[rows]
        return self.views[v][rows], self.labels[rows], self.sample_weights[rows]

    def _batches(self, epochs: int | None) -> Iterator[tuple[np.ndarray, ...]]:
        for epoch in itertools.islice(itertools.count(self.first_epoch), epochs):
            order = self.order(epoch)
            for index in range(len(self)):
                yield self._take(epoch, order, index)

    def dataset(self, epochs: int | None = None) -> tf.data.Dataset:
        """The batches of ``epochs`` epochs from ``first_epoch`` on (without end when None),
        one after another, for ``fit`` (with ``steps_per_epoch=len(self)`` when endless).

        It ends in :func:`~unfreeze.training.inputs.tuned`, like every dataset the package
        builds, so tf.data's autotuning follows the machine's rule; Keras' own wrapping of a
        ``PyDataset`` always autotunes.
        """
        spec = tuple(tf.TensorSpec((None, *a.shape[1:]), a.dtype)
                     for a in self.batch(self.first_epoch, 0))
        ds = tf.data.Dataset.from_generator(lambda: self._batches(epochs), output_signature=spec)
        count = tf.data.INFINITE_CARDINALITY if epochs is None else epochs * len(self)
        return inputs.tuned(ds.apply(tf.data.experimental.assert_cardinality(count)))
