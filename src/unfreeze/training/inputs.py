"""tf.data input pipeline: decode and resize once, batch, augment (training only), prefetch.

Images are decoded as 3-channel RGB (grayscale and palette expanded, alpha dropped, GIF first
frame), resized to a square ``image_size`` with antialiased bilinear filtering and rounded to
uint8. Rows with a content hash (``keys``: the manifest's sha256) are decoded once into the
decoded-image cache on disk (:mod:`unfreeze.training.cache`) and read back from there by every
later epoch, stage and fold.
Batches reach the model as float32 raw pixels in [0, 255]; the model does its own
``preprocess_input``. Training augmentation composes rotation, shift, shear, zoom and flips
into one affine matrix per image and warps each image once (ImageDataGenerator semantics).
Evaluation datasets are never shuffled and keep the last partial batch, so predictions line
up with the manifest rows one to one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from unfreeze.config.params import AugmentParams
from unfreeze.training import hardware, mixing
from unfreeze.training.cache import DecodedCache, default_cache
from unfreeze.training.distribute import batch_sizes

AUTOTUNE = tf.data.AUTOTUNE


def decode_resize(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read one file and return a (size, size, 3) uint8 image.

    Cached results are keyed by :func:`unfreeze.training.cache.decoder`: bump its
    ``DECODE_VERSION`` with any change here, or the cache would serve the old pixels.
    """
    return decode_resize_bytes(tf.io.read_file(path), image_size)


def decode_resize_bytes(data: tf.Tensor, image_size: int) -> tf.Tensor:
    """:func:`decode_resize` of an encoded image held in memory (an HTTP upload)."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    resized = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def read_decoded(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read one :class:`DecodedCache` file back as a (size, size, 3) uint8 image."""
    raw = tf.io.decode_raw(tf.io.read_file(path), tf.uint8)
    return tf.broadcast_to(tf.reshape(raw, [image_size, image_size, -1]),
                           [image_size, image_size, 3])  # 1-channel files hold gray images


def decode_all(paths: list[str], image_size: int) -> Iterable[np.ndarray]:
    """Each of ``paths`` decoded and resized (:func:`decode_resize`), in order, in parallel."""
    return tuned(tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string)).map(
        lambda p: decode_resize(p, image_size), num_parallel_calls=AUTOTUNE,
        deterministic=True)).as_numpy_iterator()


def tuned(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` prefetched, with tf.data autotuning as :func:`~unfreeze.training.hardware.
    data_autotune` decides (off on a CPU alone). The elements are the same either way."""
    options = tf.data.Options()
    options.autotune.enabled = hardware.data_autotune()
    return ds.prefetch(AUTOTUNE).with_options(options)


def random_transforms(seed: tf.Tensor, n: tf.Tensor, height: int, width: int,
                      params: AugmentParams) -> tf.Tensor:
    """``(n, 8)`` projective transforms: one ImageDataGenerator draw per image, composed.

    Output pixel (x, y) samples the input at ``M @ (x, y, 1)`` with, as ImageDataGenerator,
    ``M = center · rotation · shift · shear · zoom · uncenter``, followed by the flips. Shifts
    follow their names: ``width_shift`` moves along x, ``height_shift`` along y.
    """
    u = tf.random.stateless_uniform([n, 8], seed=seed, dtype=tf.float32)
    return transforms_from_uniform(u, height, width, params)


def transforms_from_uniform(u: tf.Tensor, height: int, width: int, params: AugmentParams
                            ) -> tf.Tensor:
    """The transforms of :func:`random_transforms` from given ``(n, 8)`` uniform draws."""
    n = tf.shape(u)[0]

    def sym(column: int, limit: float) -> tf.Tensor:
        return (2.0 * u[:, column] - 1.0) * limit

    one = tf.ones([n])
    return affine_transforms(
        theta=sym(0, math.radians(params.rotation)),
        tx=sym(1, params.width_shift * width), ty=sym(2, params.height_shift * height),
        shear=sym(3, math.radians(params.shear)),
        zx=1.0 + sym(4, params.zoom), zy=1.0 + sym(5, params.zoom),
        flip_x=tf.where(u[:, 6] < 0.5, -one, one) if params.horizontal_flip else one,
        flip_y=tf.where(u[:, 7] < 0.5, -one, one) if params.vertical_flip else one,
        height=height, width=width)


def affine_transforms(theta: tf.Tensor, tx: tf.Tensor, ty: tf.Tensor, shear: tf.Tensor,
                      zx: tf.Tensor, zy: tf.Tensor, flip_x: tf.Tensor, flip_y: tf.Tensor,
                      height: int, width: int) -> tf.Tensor:
    """``(n, 8)`` transforms from per-image angles (radians), shifts (pixels), zooms, flips (±1)."""
    one, zero = tf.ones_like(theta), tf.zeros_like(theta)

    def matrix(rows: list[list[tf.Tensor]]) -> tf.Tensor:
        return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)  # (n, 3, 3)

    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    center = matrix([[one, zero, cx * one], [zero, one, cy * one], [zero, zero, one]])
    uncenter = matrix([[one, zero, -cx * one], [zero, one, -cy * one], [zero, zero, one]])
    parts = [
        center,
        matrix([[tf.cos(theta), -tf.sin(theta), zero], [tf.sin(theta), tf.cos(theta), zero],
                [zero, zero, one]]),
        matrix([[one, zero, tx], [zero, one, ty], [zero, zero, one]]),
        matrix([[one, -tf.sin(shear), zero], [zero, tf.cos(shear), zero], [zero, zero, one]]),
        matrix([[zx, zero, zero], [zero, zy, zero], [zero, zero, one]]),
        uncenter,
        # flips act on the output, after the warp: x -> width-1-x is center·(-1)·uncenter
        center,
        matrix([[flip_x, zero, zero], [zero, flip_y, zero], [zero, zero, one]]),
        uncenter,
    ]
    m = parts[0]
    for part in parts[1:]:
        m = tf.linalg.matmul(m, part)
    return tf.concat([tf.reshape(m, [-1, 9])[:, :6], tf.zeros_like(m[:, 0, :2])], axis=1)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, params: AugmentParams) -> tf.Tensor:
    """Warp each float image of a batch once by its own random transform (bilinear)."""
    height, width = images.shape[1], images.shape[2]
    return warp(images, random_transforms(seed, tf.shape(images)[0], height, width, params),
                params.fill_mode)


def warp(images: tf.Tensor, transforms: tf.Tensor, fill_mode: str) -> tf.Tensor:
    """Bilinear projective warp of a float batch, one transform per image."""
    height, width = images.shape[1], images.shape[2]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[height, width],
        fill_value=0.0, interpolation="BILINEAR", fill_mode=fill_mode.upper())


def augments(params: AugmentParams | None) -> bool:
    """Whether ``params`` changes images at all (an all-zero section means no augmentation)."""
    return params is not None and bool(
        params.rotation or params.width_shift or params.height_shift or params.shear
        or params.zoom or params.horizontal_flip or params.vertical_flip)


def make_dataset(paths: Sequence[str], labels: Sequence[int] | np.ndarray | None,
                 image_size: int, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 augment: AugmentParams | None = None, keys: Sequence[str] | None = None,
                 cache: DecodedCache | None = None, replicas: int = 1,
                 targets: mixing.Targets | None = None) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` (or images alone when ``labels`` is None).

    With ``targets``, batches are ``(images, soft targets, sample weights)``
    (:mod:`unfreeze.training.mixing`), mixed after the warps when ``targets`` mixes.

    With ``keys`` (content hashes of ``paths``), images come from ``cache`` (default:
    :func:`default_cache`), decoded there first if needed. ``shuffle`` reshuffles every epoch;
    ``augment`` draws new transforms every epoch. No sample is dropped: the last batch may be
    smaller, but never smaller than ``replicas`` (the replicas of the strategy that consumes
    the batches; see :func:`~unfreeze.training.distribute.batch_sizes`).
    """
    cache = cache or (default_cache() if keys is not None else None)
    if keys is not None and cache is not None:
        sources, load_one = cache.fill(paths, keys, image_size, decode_all), read_decoded
    else:
        sources, load_one = list(paths), decode_resize
    ds = tf.data.Dataset.from_tensor_slices(sources)
    if labels is not None:
        labels = np.asarray(labels)  # class indices, or multi-label (n, L) multi-hot rows
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(
            labels.astype(np.float32 if labels.ndim == 2 else np.int32)))
    if shuffle:
        ds = ds.shuffle(len(sources), seed=seed, reshuffle_each_iteration=True)

    def load(path, *label):
        return (load_one(path, image_size), *label)  # always a tuple, labels or not

    finish = batch_finisher(augment, targets)
    ds = batched(ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True), len(sources),
                 batch_size, replicas)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds).map(finish, num_parallel_calls=AUTOTUNE,
                                            deterministic=True)
    return tuned(ds)


def batch_finisher(augment: AugmentParams | None, targets: mixing.Targets | None):
    """What a training batch ``(uint8 images[, labels])`` becomes, given its seed pair:
    float images, warped if ``augment`` warps, labels as they are or soft targets (mixed
    after the warps when ``targets`` mixes) with their sample weights."""
    augmenting = augments(augment)

    def finish(batch, seed_pair):
        images = tf.cast(batch[0], tf.float32)
        if augmenting:
            images = augment_batch(images, seed_pair, augment)
        if targets is not None and len(batch) > 1:
            if targets.augment is not None:
                return mixing.mix_batch(images, batch[1], seed_pair, targets)
            return (images, *mixing.plain_targets(targets, batch[1]))
        return (images, *batch[1:]) if len(batch) > 1 else images

    return finish


def view_draws(n: int, view_seed: int) -> np.ndarray:
    """``(n, 8)`` uniform draws for one augmented view of ``n`` images: row ``i`` is image
    ``i``'s, from ``view_seed`` alone (not the batch size, nor TensorFlow's global seed)."""
    return np.random.default_rng([view_seed, 0x5EED]).random((n, 8), dtype=np.float32)


def make_view_dataset(paths: Sequence[str], image_size: int, batch_size: int,
                      augment: AugmentParams | None = None, draws: np.ndarray | None = None,
                      keys: Sequence[str] | None = None, replicas: int = 1,
                      partners: ViewPartners | None = None) -> tf.data.Dataset:
    """Batches of the images of ``paths`` in order, for a view computed once (cached views):
    plain without ``augment``, else image ``i`` warped by row ``i`` of ``draws`` (from
    :func:`view_draws`). With ``partners``, image ``i`` is then mixed with its partner, warped
    by the partner's own draws (:mod:`unfreeze.training.mixing`). The same images and draws
    give the same view whatever the batch size, in any process, so two phases can share it."""
    view = _warped_view(paths, image_size, batch_size, augment, draws, keys, replicas)
    if partners is None:
        return view
    other = _warped_view(partners.paths, image_size, batch_size, augment, partners.draws,
                         partners.keys, replicas)
    mix = partners.mix
    rows = batched(tf.data.Dataset.from_tensor_slices((mix.lam, mix.cut, mix.centre)),
                   len(paths), batch_size, replicas)

    def mix_batch(a: tf.Tensor, b: tf.Tensor, row: tuple) -> tf.Tensor:
        return mixing.mix(a, b, *row)[0]

    return tuned(tf.data.Dataset.zip(view, other, rows).map(
        mix_batch, num_parallel_calls=AUTOTUNE, deterministic=True))


@dataclass(frozen=True)
class ViewPartners:
    """The images a mixed view's images are mixed with, row for row: their paths, content
    keys and warp draws, and the mixing draws (:func:`unfreeze.training.mixing.view_draws`)."""

    paths: Sequence[str]
    keys: Sequence[str] | None
    draws: np.ndarray | None
    mix: mixing.ViewMix


def _warped_view(paths: Sequence[str], image_size: int, batch_size: int,
                 augment: AugmentParams | None, draws: np.ndarray | None,
                 keys: Sequence[str] | None, replicas: int) -> tf.data.Dataset:
    """The images of ``paths`` in order, each warped by its row of ``draws`` if ``augment``."""
    plain = make_dataset(paths, None, image_size, batch_size, keys=keys, replicas=replicas)
    if not augments(augment):
        return plain
    if draws is None or len(draws) != len(paths):
        raise ValueError(f"an augmented view needs one row of draws per image ({len(paths)})")
    rows = batched(tf.data.Dataset.from_tensor_slices(draws), len(paths), batch_size, replicas)

    def warp_batch(images: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
        return warp(images, transforms_from_uniform(u, images.shape[1], images.shape[2],
                                                    augment), augment.fill_mode)

    return tuned(tf.data.Dataset.zip(plain, rows).map(warp_batch, num_parallel_calls=AUTOTUNE,
                                                      deterministic=True))


def batched(ds: tf.data.Dataset, n: int, batch_size: int, replicas: int) -> tf.data.Dataset:
    """``ds`` (``n`` elements) in the batches of :func:`~unfreeze.training.distribute.
    batch_sizes`: the classic ones, or for a strategy, none smaller than its replicas."""
    ds = ds.batch(batch_size, drop_remainder=False)
    sizes = batch_sizes(n, batch_size, replicas)
    if sizes == batch_sizes(n, batch_size):
        return ds
    return ds.rebatch(sizes).apply(tf.data.experimental.assert_cardinality(len(sizes)))


def decode_files(paths: Sequence[str], image_size: int) -> tuple[list[int], np.ndarray]:
    """Decode and resize ``paths`` exactly as training does, each file once.

    Returns the indices of the files that decoded, in order, and their ``(n, S, S, 3)`` uint8
    images. A file TensorFlow cannot decode is left out rather than failing the others.
    """
    if not len(paths):
        return [], np.zeros((0, image_size, image_size, 3), np.uint8)
    rows = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)),
                                               tf.constant(list(paths), tf.string)))
    ds = tuned(rows.map(lambda i, p: (i, decode_resize(p, image_size)),
                        num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors())
    decoded = list(ds.as_numpy_iterator())
    if not decoded:
        return [], np.zeros((0, image_size, image_size, 3), np.uint8)
    return [int(i) for i, _ in decoded], np.stack([image for _, image in decoded])


def load_images(paths: Sequence[str], image_size: int) -> np.ndarray:
    """Decode a few images into one float32 array (Grad-CAM samples, export parity, tests)."""
    ds = make_dataset(paths, None, image_size, batch_size=max(1, len(paths)))
    return np.concatenate([batch.numpy() for batch in ds]) if paths else np.zeros(
        (0, image_size, image_size, 3), np.float32)
