"""tf.data input pipeline: decode, resize, batch, augment (training only), prefetch.

Images are decoded as 3-channel RGB uint8 (grayscale and palette expanded, alpha dropped, GIF
first frame), resized to a square ``image_size`` with antialiased bilinear filtering and handed
to the model as float32 raw pixels in [0, 255]; the model does its own ``preprocess_input``.
Evaluation datasets are never shuffled and keep the last partial batch, so predictions line up
with the manifest rows one to one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from unfreeze.params import AugmentParams

AUTOTUNE = tf.data.AUTOTUNE


def decode_resize(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read one file and return a (size, size, 3) float32 image with values in [0, 255]."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    resized = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)


def augmenter(params: AugmentParams, seed: int) -> keras.Sequential:
    """Keras preprocessing layers equivalent to the ImageDataGenerator arguments."""
    fill = params.fill_mode
    steps: list[keras.layers.Layer] = []
    flip = {(True, False): "horizontal", (False, True): "vertical",
            (True, True): "horizontal_and_vertical"}.get(
        (params.horizontal_flip, params.vertical_flip))
    if flip:
        steps.append(keras.layers.RandomFlip(flip, seed=seed))
    if params.rotation:
        steps.append(keras.layers.RandomRotation(params.rotation / 360.0, fill_mode=fill,
                                                 seed=seed + 1))
    if params.width_shift or params.height_shift:
        steps.append(keras.layers.RandomTranslation(
            (-params.height_shift, params.height_shift), (-params.width_shift, params.width_shift),
            fill_mode=fill, seed=seed + 2))
    if params.shear:
        factor = math.tan(math.radians(params.shear))
        steps.append(keras.layers.RandomShear(x_factor=factor, y_factor=factor, fill_mode=fill,
                                              seed=seed + 3))
    if params.zoom:
        steps.append(keras.layers.RandomZoom((-params.zoom, params.zoom),
                                             (-params.zoom, params.zoom), fill_mode=fill,
                                             seed=seed + 4))
    return keras.Sequential(steps, name="augment")


def make_dataset(paths: Sequence[str], labels: Sequence[int] | np.ndarray | None,
                 image_size: int, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 augment: AugmentParams | None = None) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` (or images alone when ``labels`` is None).

    ``shuffle`` reshuffles every epoch; ``augment`` is applied on whole batches after decoding.
    No sample is dropped: the last batch may be smaller.
    """
    ds = tf.data.Dataset.from_tensor_slices(list(paths))
    if labels is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(
            np.asarray(labels, dtype=np.int32)))
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(path, *label):
        image = decode_resize(path, image_size)
        return (image, *label) if label else image

    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    aug = augmenter(augment, seed) if augment is not None else None
    if aug is not None and aug.layers:  # an all-zero augment section means no augmentation

        def apply(images, *label):
            images = aug(images, training=True)
            return (images, *label) if label else images

        ds = ds.map(apply, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def load_images(paths: Sequence[str], image_size: int) -> np.ndarray:
    """Decode a few images into one float32 array (tests, predict on small inputs)."""
    ds = make_dataset(paths, None, image_size, batch_size=max(1, len(paths)))
    return np.concatenate([batch.numpy() for batch in ds]) if paths else np.zeros(
        (0, image_size, image_size, 3), np.float32)
