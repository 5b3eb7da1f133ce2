"""The shared pass: activations of the frozen lower base, computed once, kept on disk.

Below ``finetune.unfreeze_from`` the base is frozen and in inference mode in *both* phases,
so it maps a view of an image to the same activations in phase one, in phase two and in every
run until its weights, the image, the view or the cut change. Phase one computes them for
the views either phase trains on (:func:`unfreeze.training.features.cached_features`, given
:func:`unfreeze.training.recipe.shared_pass`), derives its pooled features from them, and
leaves them here; phase two (another process: the `finetune` stage, a CV fold) finds them by
their key instead of running the lower base again.

A view is one unaugmented pass (``cached_views: 1``) or augmented view ``v`` of ``K``: each
image warped by its own draw from the view's seed (:func:`~unfreeze.training.inputs.
view_draws`), so a view does not depend on the phase, the batch size or the process. View
passes run at a fixed batch (:data:`VIEW_BATCH` per replica).

One file per view, ``<cache root>/activations/<key[:2]>/<key>.npy`` (``(n, ...)`` float32,
read memory-mapped: a data set larger than RAM streams from disk). ``<key>`` hashes what
decides every number in it: the weights of the lower base (by content), the depth of the
layer it ends at, its output shape and dtype, the image size, the images (content hashes, in
order), the view (its augmentation params and seed, or none), the decoder, the Keras and
NumPy releases, the devices and :data:`VIEWS_VERSION`. A change of any gives another file.
Files are written atomically: a killed pass leaves only a temporary file (removed after a
day) and the next run reuses every view already complete. They are entries of the
decoded-image cache (:class:`~unfreeze.training.cache.DecodedCache`): bounded by
``UNFREEZE_CACHE_MAX`` with it, least recently used first, never one a running stage needs.
Without a cache (``UNFREEZE_CACHE_DIR=""``) or content keys, and in a multi-worker cluster,
the views are computed in memory, as before (:meth:`ActivationStore.enabled`).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from unfreeze.config.params import AugmentParams
from unfreeze.io import write_atomic
from unfreeze.training import hardware, inputs, mixing
from unfreeze.training.cache import ACTIVATIONS, RECENT, DecodedCache, decoder, default_cache
from unfreeze.training.distribute import batch_sizes, is_multi_worker, replicas_of

# Bump VIEWS_VERSION whenever what a view holds changes for the same key facts: the view
# draws and warp (inputs.view_draws, transforms_from_uniform, warp, make_view_dataset), the
# cut (features.split_at) or the preprocessing in front of the base.
VIEWS_VERSION = 1
VIEW_SEED_STRIDE = 1009  # view v of a run seeded s: seed s + 1009 * v (as before)
VIEW_BATCH = 32  # images per replica per batch of a view pass, whatever the phase's batch
CHUNK_BATCHES = 16  # batches predicted at a time, then written out (memory stays bounded)


@dataclass(frozen=True)
class View:
    """One view of the training images: unaugmented (``augment`` None) or augmented with the
    draws of ``seed``."""

    augment: AugmentParams | None = None
    seed: int = 0

    def describe(self) -> dict:
        return {"augment": asdict(self.augment), "seed": self.seed} if self.augment else {}


def views_of(count: int, augment: AugmentParams, seed: int) -> list[View]:
    """The views ``<phase>.cached_views: count`` trains on: ``0`` none, ``1`` the unaugmented
    view, ``K > 1`` K augmented ones (seeds ``seed + 1009 v``; one view when the augment
    section changes nothing)."""
    if count == 0:
        return []
    if count == 1 or not (inputs.augments(augment) or mixing.mixes(augment)):
        return [View()]
    return [View(augment, seed + VIEW_SEED_STRIDE * v) for v in range(count)]


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of every weight of ``model`` (names, shapes, dtypes and values), in order."""
    digest = hashlib.sha256()
    for variable in model.weights:  # not by name: names depend on what a process built before
        value = np.ascontiguousarray(variable.numpy())
        digest.update(f"{value.shape}|{value.dtype}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


class ActivationStore:
    """Views of images through a frozen ``lower`` model, on disk under the cache root."""

    def __init__(self, cache: DecodedCache | None = None) -> None:
        self.cache = cache if cache is not None else default_cache()

    def key(self, lower_id: str, image_size: int, keys: Sequence[str], view: View) -> str:
        """The file name of one view's activations: a hash of what decides them."""
        images = hashlib.sha256("\n".join(keys).encode()).hexdigest()
        facts = {"version": VIEWS_VERSION, "lower": lower_id, "image_size": image_size,
                 "images": images, "n": len(keys), "view": view.describe(),
                 "decoder": decoder(), "keras": keras.__version__, "numpy": np.__version__,
                 "devices": devices()}
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()

    def file(self, key: str) -> Path:
        """Where the view of ``key`` lives."""
        return self.cache.root / ACTIVATIONS / key[:2] / f"{key}.npy"

    def enabled(self, *keys: Sequence[str] | None) -> bool:
        """Whether views of images with these content ``keys`` are stored: a cache, keys,
        and not a multi-worker cluster (workers have their own disks, and one computing a
        view the others found would wait for them forever in ``predict``'s collective)."""
        return (self.cache is not None and all(k is not None for k in keys)
                and not is_multi_worker())

    def views(self, lower: keras.Model, paths: Sequence[str], keys: Sequence[str] | None,
              image_size: int, views: Sequence[View]) -> list[np.ndarray]:
        """Each of ``views`` of ``paths`` through ``lower``: ``(n, ...)`` float32 arrays,
        memory-mapped from the store (computed and stored first where missing). When the
        store is not :meth:`enabled`, the views are computed in memory."""
        if not self.enabled(keys):
            distinct = {view: compute(lower, paths, keys, image_size, view, None)
                        for view in dict.fromkeys(views)}
            return [distinct[view] for view in views]
        lower_id = identity(lower, image_size)
        files = {view: self.file(self.key(lower_id, image_size, keys, view)) for view in views}
        with self.cache.locked():  # marked used before anything is computed: kept
            present = {view for view, file in files.items() if _touch(file)}
        out, wrote = {}, False
        shape = (len(paths), *lower.output.shape[1:])
        for view in dict.fromkeys(views):  # each distinct view once
            file = files[view]
            kept = _load(file, shape) if view in present else None
            if kept is None:
                present.discard(view)
                kept = compute(lower, paths, keys, image_size, view, file)
                wrote = True
            out[view] = kept
        if wrote:
            self.cache.prune(keep=set(files.values()), recent=RECENT)
        reused = sum(view in present for view in dict.fromkeys(views))
        print(f"activations of {end_layer(lower)[0]} {tuple(lower.output.shape[1:])}: "
              f"{len(out)} view(s) of {len(paths)} images, {reused} reused from the store",
              flush=True)
        return [out[view] for view in views]


def identity(lower: keras.Model, image_size: int) -> str:
    """What the lower model computes: its weights (by content, in order), the layer it ends
    at, its output shape and dtype (a mixed-precision model computes other numbers), and
    whether XLA compiles its pass on images of ``image_size`` px (other kernels, other last
    bits)."""
    return hashlib.sha256(json.dumps({
        "weights": weights_fingerprint(lower), "depth": end_layer(lower)[1],
        "shape": list(lower.output.shape[1:]), "dtype": str(lower.output.dtype),
        "xla": hardware.xla("features", replicas=replicas_of(lower), image_size=image_size),
    }).encode()).hexdigest()


def end_layer(lower: keras.Model) -> tuple[str, int]:
    """The name and depth (layers up to it) of the layer whose output ``lower`` gives, inside
    a nested base model. The depth, not the name, goes into keys: auto-generated names
    depend on what a process built before."""
    last = lower.layers[-1]
    inner = last if isinstance(last, keras.Model) else lower
    return inner.layers[-1].name, len(inner.layers)


@cache
def devices() -> list[str]:
    """The CPU model and the GPUs (a view computed on one kind may differ in its last bits
    on another, and a cache may be shared between machines)."""
    gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")]
    return [hardware.cpu()[0], *gpus]


def view_batch(model: keras.Model) -> int:
    """The global batch of a view pass: :data:`VIEW_BATCH` per replica, whatever the phase's
    batch size, so a view stored by phase one equals the one phase two would compute."""
    return VIEW_BATCH * replicas_of(model)


def row_chunks(n: int, batch: int, replicas: int) -> list[slice]:
    """Consecutive rows of :data:`CHUNK_BATCHES` batches each, cut at the batch bounds of
    :func:`~unfreeze.training.distribute.batch_sizes`: no chunk is smaller than
    ``replicas`` (no replica gets an empty shard)."""
    sizes = batch_sizes(n, batch, replicas)
    if not sizes:
        return []
    starts = [int(x) for x in np.cumsum([0, *sizes])[:len(sizes):CHUNK_BATCHES]]
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], n], strict=True)]


def compute(lower: keras.Model, paths: Sequence[str], keys: Sequence[str] | None,
            image_size: int, view: View, file: Path | None) -> np.ndarray:
    """One view through ``lower``, :data:`CHUNK_BATCHES` batches at a time, each chunk
    written out before the next is predicted (atomically to ``file``, then memory-mapped;
    in memory without a file): memory holds one chunk, not the data set."""
    n, shape = len(paths), tuple(lower.output.shape[1:])
    hardware.for_use(lower, "features", image_size)
    draws = inputs.view_draws(n, view.seed) if view.augment else None
    mix = mixing.view_draws(n, view.seed, view.augment) if mixing.mixes(view.augment) else None
    batch, replicas = view_batch(lower), replicas_of(lower)
    cache = default_cache() if keys is not None else None
    if cache is not None:  # decode what is missing once, not chunk by chunk (one prune)
        cache.fill(paths, keys, image_size, inputs.decode_all)

    def fill(out: np.ndarray) -> None:
        for rows in row_chunks(n, batch, replicas):
            ds = inputs.make_view_dataset(
                paths[rows], image_size, batch, view.augment,
                None if draws is None else draws[rows],
                keys=None if keys is None else keys[rows], replicas=replicas,
                partners=None if mix is None else partners_of(paths, keys, draws, mix, rows))
            values = lower.predict(ds, verbose=0)
            if len(values) != rows.stop - rows.start:
                raise RuntimeError(f"got {len(values)} activation rows for "
                                   f"{rows.stop - rows.start} images")
            out[rows] = values

    if file is None:
        out = np.empty((n, *shape), np.float32)
        fill(out)
        return out

    def write(tmp: Path) -> None:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, *shape))
        fill(array)
        array.flush()
        del array

    write_atomic(file, write)
    return np.load(file, mmap_mode="r")


def partners_of(paths: Sequence[str], keys: Sequence[str] | None, draws: np.ndarray | None,
                mix: mixing.ViewMix, rows: slice) -> inputs.ViewPartners:
    """The partners of the images in ``rows`` of a mixed view (paths, keys, warp draws)."""
    partner = mix.partner[rows]
    return inputs.ViewPartners(
        [paths[i] for i in partner], None if keys is None else [keys[i] for i in partner],
        None if draws is None else draws[partner], mix.rows(rows))


def pooled_rows(pooled: keras.Model, acts: np.ndarray, image_size: int) -> np.ndarray:
    """``pooled`` over (memory-mapped) activations of images of ``image_size`` px, chunk by
    chunk, in batches of :func:`view_batch` cut as :func:`row_chunks` cuts them; in memory
    (small)."""
    batch, replicas = view_batch(pooled), replicas_of(pooled)
    hardware.for_use(pooled, "features", image_size)
    out = np.empty((len(acts), *pooled.output.shape[1:]), np.float32)
    for rows in row_chunks(len(acts), batch, replicas):
        chunk = tf.data.Dataset.from_tensor_slices(np.asarray(acts[rows]))
        out[rows] = pooled.predict(inputs.tuned(inputs.batched(
            chunk, rows.stop - rows.start, batch, replicas)), verbose=0)
    return out


def _load(file: Path, shape: tuple) -> np.ndarray | None:
    """A stored view, memory-mapped; None when it cannot be read as the expected array (a
    damaged file is computed again)."""
    try:
        array = np.load(file, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return array if array.shape == shape and array.dtype == np.float32 else None


def _touch(file: Path) -> bool:
    """Mark a stored view used now; False when it is missing (compute it)."""
    try:
        os.utime(file)
    except FileNotFoundError:
        return False
    except PermissionError:  # a shared read-only cache: usable
        return True
    return True
