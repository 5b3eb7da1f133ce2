"""Soft targets: label smoothing, MixUp and CutMix, with class weights kept right.

A phase trains on *soft targets* when ``<phase>.label_smoothing`` > 0 or ``augment.mixup`` /
``augment.cutmix`` is on (:func:`soft`); otherwise on integer labels, as the classic recipe.
Soft batches are ``(inputs, targets, sample_weights)``: ``targets`` a distribution over the
classes, the loss ``CategoricalCrossentropy(label_smoothing)`` (Keras smooths the targets:
``(1 - e) t + e / classes``).

Mixing image ``a`` (label ``i``) with image ``b`` (label ``j``) at weight ``lam`` (MixUp:
``lam a + (1 - lam) b``; CutMix: ``b`` pasted into a box of ``a``, ``lam`` = the area of ``a``
kept) gives the loss ``lam w_i CE(p, i) + (1 - lam) w_j CE(p, j)`` with class weights ``w``
(all 1 without ``class_weight``). Cross-entropy is linear in its target, so that is exactly
sample weight ``s = lam w_i + (1 - lam) w_j`` times the cross-entropy with the target
``(lam w_i onehot(i) + (1 - lam) w_j onehot(j)) / s`` (a distribution): :func:`targets`.
Label smoothing is linear too, so it composes exactly.

``lam`` is drawn per image from Beta(alpha, alpha); with both on, each image gets MixUp or
CutMix with probability ½. Fresh batches (``cached_views: 0``) mix each image with the
batch's image in mirrored position (tf.random draws from the batch's seed, as the warps);
a cached view ``v`` mixes image ``i`` with image ``partner[i]``, each warped by its own draw
of that view, from draws that depend on the view's seed only (:func:`view_draws`), so the
view and its targets are computed again identically by any phase or process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from unfreeze.config.params import AugmentParams, PhaseParams


def mixes(augment: AugmentParams | None) -> bool:
    """Whether ``augment`` mixes images (MixUp or CutMix on)."""
    return augment is not None and bool(augment.mixup or augment.cutmix)


def soft(phase: PhaseParams, augment: AugmentParams | None) -> bool:
    """Whether ``phase`` trains on soft targets (label smoothing or mixing on)."""
    return bool(phase.label_smoothing) or mixes(augment)


@dataclass(frozen=True)
class Targets:
    """How a phase's labels become soft targets: the classes, the class weight of each
    (ones without ``class_weight``), and the mixing section (None: no mixing)."""

    n_classes: int
    class_weights: np.ndarray
    augment: AugmentParams | None = None

    @classmethod
    def of(cls, n_classes: int, weights: dict[int, float] | None,
           augment: AugmentParams | None) -> Targets:
        vector = np.ones(n_classes, np.float32)
        for label, weight in (weights or {}).items():
            vector[label] = weight
        return cls(n_classes, vector, augment if mixes(augment) else None)


def targets(spec: Targets, labels, partners, lam) -> tuple[tf.Tensor, tf.Tensor]:
    """(targets ``(n, classes)``, sample weights ``(n,)``) of images of ``labels`` mixed at
    ``lam`` with images of ``partners`` (see the module docstring); ``lam`` 1 = unmixed.
    Multi-label: ``labels`` are multi-hot rows, mixed as they are, every weight 1 (positive
    weights live in the loss, :mod:`unfreeze.training.losses`)."""
    lam = tf.cast(lam, tf.float32)[:, None]
    if len(labels.shape) == 2:
        return lam * labels + (1.0 - lam) * partners, tf.ones(tf.shape(labels)[0])
    weights = tf.constant(spec.class_weights)
    wa = tf.gather(weights, labels)[:, None]
    wb = tf.gather(weights, partners)[:, None]
    mass = lam * wa * tf.one_hot(labels, spec.n_classes) + (
        (1.0 - lam) * wb * tf.one_hot(partners, spec.n_classes))
    total = lam * wa + (1.0 - lam) * wb
    return mass / total, total[:, 0]


def plain_targets(spec: Targets, labels) -> tuple[tf.Tensor, tf.Tensor]:
    """Unmixed soft targets: one-hot, weighted by class (multi-label: the rows as they are)."""
    labels = as_labels(labels)
    return targets(spec, labels, labels, tf.ones(tf.shape(labels)[0]))


def as_labels(labels) -> tf.Tensor:
    """Class indices as int32; multi-label multi-hot rows (rank 2) as float32."""
    return tf.cast(labels, tf.float32 if len(labels.shape) == 2 else tf.int32)


def box_bounds(lam, centre, height: int, width: int) -> tuple[tf.Tensor, ...]:
    """CutMix's boxes (y0, y1, x0, x1), each ``(n,)``: sides ``sqrt(1 - lam)`` of the
    image's, centred at ``centre`` (fractions of the height and width), clipped to the image."""
    side = tf.sqrt(1.0 - tf.cast(lam, tf.float32))
    centre = tf.cast(centre, tf.float32)
    cy, cx = centre[:, 0] * height, centre[:, 1] * width
    return (tf.clip_by_value(tf.round(cy - side * height / 2), 0, height),
            tf.clip_by_value(tf.round(cy + side * height / 2), 0, height),
            tf.clip_by_value(tf.round(cx - side * width / 2), 0, width),
            tf.clip_by_value(tf.round(cx + side * width / 2), 0, width))


def box_mask(bounds: tuple[tf.Tensor, ...], height: int, width: int) -> tf.Tensor:
    """``(n, H, W)``: True inside each image's box (:func:`box_bounds`)."""
    y0, y1, x0, x1 = (b[:, None, None] for b in bounds)
    ys = tf.range(height, dtype=tf.float32)[None, :, None]
    xs = tf.range(width, dtype=tf.float32)[None, None, :]
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


def weight_of_first(lam, cut, bounds: tuple[tf.Tensor, ...], height: int, width: int
                    ) -> tf.Tensor:
    """The weight of the first image of each pair: ``lam`` (MixUp), or the fraction of its
    area outside the box pasted from the second (CutMix)."""
    y0, y1, x0, x1 = bounds
    kept = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
    return tf.where(cut, kept, tf.cast(lam, tf.float32))


def mix(a: tf.Tensor, b: tf.Tensor, lam: tf.Tensor, cut: tf.Tensor, centre: tf.Tensor
        ) -> tuple[tf.Tensor, tf.Tensor]:
    """(mixed images, the weight of ``a`` in each): MixUp where ``cut`` is False, CutMix
    where it is True (the weight then is the area of ``a`` kept)."""
    lam = tf.cast(lam, tf.float32)
    height, width = a.shape[1], a.shape[2]
    bounds = box_bounds(lam, centre, height, width)
    cutmixed = tf.where(box_mask(bounds, height, width)[..., None], b, a)
    mixedup = lam[:, None, None, None] * a + (1.0 - lam[:, None, None, None]) * b
    return (tf.where(cut[:, None, None, None], cutmixed, mixedup),
            weight_of_first(lam, cut, bounds, height, width))


def _choose(u: tf.Tensor, augment: AugmentParams) -> tf.Tensor:
    """Per image: CutMix (True) or MixUp, from uniform draws ``u`` (½ each when both on)."""
    if not augment.mixup:
        return tf.ones_like(u, tf.bool)
    if not augment.cutmix:
        return tf.zeros_like(u, tf.bool)
    return u < 0.5


def _beta(seed, n, alpha: float) -> tf.Tensor:
    """``n`` Beta(alpha, alpha) draws, stateless, from a seed pair."""
    g = tf.random.stateless_gamma([2, n], seed=seed, alpha=alpha)
    return g[0] / (g[0] + g[1])


def mix_batch(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, spec: Targets
              ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """A fresh training batch mixed with itself in mirrored order:
    (images, targets, sample weights)."""
    augment = spec.augment
    n = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    u = tf.random.stateless_uniform([n], seed=seeds[0])
    cut = _choose(u, augment)
    lam = tf.where(cut, _beta(seeds[1], n, augment.cutmix or 1.0),
                   _beta(seeds[2], n, augment.mixup or 1.0))
    centre = tf.random.stateless_uniform([n, 2], seed=seeds[3])
    labels = as_labels(labels)
    mixed, kept = mix(images, tf.reverse(images, [0]), lam, cut, centre)
    y, w = targets(spec, labels, tf.reverse(labels, [0]), kept)
    return mixed, y, w


@dataclass(frozen=True)
class ViewMix:
    """One cached view's mixing draws, per image: the partner, Beta draw, CutMix or not,
    box centre."""

    partner: np.ndarray
    lam: np.ndarray
    cut: np.ndarray
    centre: np.ndarray

    def rows(self, rows: slice) -> ViewMix:
        return ViewMix(self.partner[rows], self.lam[rows], self.cut[rows], self.centre[rows])


def view_draws(n: int, seed: int, augment: AugmentParams) -> ViewMix:
    """The mixing of a view of ``n`` images drawn from the view's ``seed`` alone."""
    rng = np.random.default_rng([seed, 0x313])
    partner = rng.permutation(n)
    cut = _choose(tf.constant(rng.random(n, dtype=np.float32)), augment).numpy()
    lam = np.where(cut, rng.beta(augment.cutmix or 1.0, augment.cutmix or 1.0, n),
                   rng.beta(augment.mixup or 1.0, augment.mixup or 1.0, n))
    return ViewMix(partner, lam.astype(np.float32), cut,
                   rng.random((n, 2), dtype=np.float32))


def view_targets(spec: Targets, labels: np.ndarray, draws: ViewMix | None, image_size: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The targets and sample weights of a cached view's images (unmixed without draws)."""
    labels = as_labels(tf.constant(np.asarray(labels)))
    if draws is None:
        y, w = plain_targets(spec, labels)
    else:
        bounds = box_bounds(draws.lam, draws.centre, image_size, image_size)
        lam = weight_of_first(draws.lam, tf.constant(draws.cut), bounds, image_size,
                              image_size)  # from the boxes' bounds: no (n, H, W) mask
        y, w = targets(spec, labels, tf.gather(labels, draws.partner), lam)
    return y.numpy(), w.numpy()
