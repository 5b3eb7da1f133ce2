"""Serving one model to many clients (`unfreeze api`): the loaded release, micro-batches of
concurrent requests, and hot reload of the folder a model path points to.

- A :class:`Release` is a model folder (``model.keras`` + ``meta.json``, loaded with
  ``safe_mode=True`` by :func:`~unfreeze.deploy.predict.load_saved`) warmed up by one
  prediction. It is named by its folder (a promoted release's name, e.g.
  ``20261130T101500Z-1a2b3c4d``; another folder: ``<name>@<model hash>``) and answers with the
  probabilities ``unfreeze predict`` gives: the stored TTA views, then the temperature(s).
- :class:`Batcher` gathers the images of concurrent requests into one forward pass: up to
  ``max_batch`` images, waiting at most ``max_wait_s`` after the first for more. Its queue
  holds at most ``max_queue`` images; beyond that :class:`QueueFull` (HTTP 503) instead of
  growing memory. TensorFlow runs on one worker thread: the event loop never waits on it.
- :class:`Holder` keeps the release in use and reloads when the model path changes (the
  ``production/current`` symlink switched, or a folder rewritten): the new release is loaded
  and warmed up on another thread while the old one answers, then swapped in one assignment.
  A batch runs wholly on the release it started with, and says which.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unfreeze.config.params import MAX_PIXELS
from unfreeze.dataset.scan import header_problem
from unfreeze.deploy.card import CARD_FILE, CARD_JSON
from unfreeze.deploy.predict import UNDECODABLE, SavedModel, explained_index, load_saved
from unfreeze.evaluation.calibrate import calibrate_probs
from unfreeze.evaluation.inference import TTA_VIEWS
from unfreeze.io import read_json, sha256_file
from unfreeze.training.artifacts import META_FILE, MODEL_FILE

log = logging.getLogger("unfreeze.api")
CHUNK = 64  # images per forward call: bounds the activations held at once


class QueueFull(Exception):
    """The batch queue holds ``max_queue`` images already: answer 503, Retry-After."""


class StaleImageSize(Exception):
    """The release was swapped for one with another image size after the images were
    decoded: decode them again at the new size."""


def model_signature(path: Path) -> tuple | None:
    """What identifies the model ``path`` points to now: its resolved folder, and the inode
    and mtime of its model file and meta.json (a folder rewritten in place changes them);
    None if either is missing (or the path is a symlink loop)."""
    try:
        folder = path.resolve()
        files = [(folder / name).stat() for name in (MODEL_FILE, META_FILE)]
    except (OSError, RuntimeError):
        return None
    return (str(folder), *((st.st_ino, st.st_mtime_ns) for st in files))


@dataclass
class Release:
    """A loaded, warmed-up model folder."""

    name: str
    folder: Path
    saved: SavedModel
    model_sha256: str
    signature: tuple | None
    card_markdown: str | None = None
    card_json: dict | None = None
    metrics: dict | None = None
    _forward: Callable | None = field(default=None, repr=False)

    @property
    def image_size(self) -> int:
        return self.saved.image_size

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of uint8 images (n, S, S, 3), as ``unfreeze predict``."""
        import tensorflow as tf

        if images.shape[1:3] != (self.image_size, self.image_size):
            raise StaleImageSize(f"{images.shape[1:3]} != {self.image_size}")
        point = self.saved.point
        batch, views = tf.convert_to_tensor(images, tf.uint8), []
        for axes in TTA_VIEWS[point.tta if point else "none"]:
            x = tf.reverse(batch, list(axes)) if axes else batch
            views.append(np.concatenate([self._forward(x[i:i + CHUNK]).numpy()
                                         for i in range(0, len(images), CHUNK)]))
        return calibrate_probs(np.mean(views, axis=0), point)

    def identity(self) -> dict:
        """What every answer computed by this release says about it."""
        return {"release": self.name, "model_sha256": self.model_sha256,
                "task": self.saved.task}

    def describe(self) -> dict:
        """What ``GET /v1/model`` answers: classes, size, operating point, card."""
        point = self.saved.point
        return {**self.identity(), "classes": self.saved.classes,
                "image_size": self.image_size,
                "operating_point": point.as_dict() if point else None,
                "card": {"markdown": self.card_markdown, "json": self.card_json,
                         "metrics": self.metrics}}


def load_release(path: Path) -> Release:
    """Load the folder ``path`` points to now (safe mode) and warm it up."""
    import tensorflow as tf

    signature = model_signature(path)
    folder = Path(signature[0]) if signature else path
    saved = load_saved(folder)
    size, model = saved.image_size, saved.model

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def forward(images):
        return tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)

    digest = sha256_file(folder / MODEL_FILE)
    name = folder.name if folder.parent.name == "releases" else f"{folder.name}@{digest[:8]}"
    card, card_json, metrics = (folder / CARD_FILE, folder / CARD_JSON,
                                folder / "metrics.json")
    release = Release(name, folder, saved, digest, signature,
                      card.read_text(encoding="utf-8") if card.is_file() else None,
                      read_json(card_json) if card_json.is_file() else None,
                      read_json(metrics) if metrics.is_file() else None, forward)
    release.probabilities(np.zeros((1, size, size, 3), np.uint8))  # warm-up: traces once
    return release


@functools.lru_cache(maxsize=4)
def _decoder(image_size: int) -> Callable:
    import tensorflow as tf

    from unfreeze.training.inputs import decode_resize_bytes

    return tf.function(lambda data: decode_resize_bytes(data, image_size),
                       input_signature=[tf.TensorSpec([], tf.string)])


def decode_upload(data: bytes, image_size: int, max_pixels: int = MAX_PIXELS,
                  name: str = "upload") -> tuple[np.ndarray | None, str]:
    """One uploaded file as the (S, S, 3) uint8 image training would see, or why not: the
    header first, by ``prepare``'s rules (format; bombs are never decoded), then one decode
    by the training code, as ``unfreeze predict`` does. A reason names the upload ``name``,
    never an in-memory object."""
    import tensorflow as tf

    if not data:
        return None, "empty file (0 bytes)"
    buffer = io.BytesIO(data)
    reason = header_problem(buffer, max_pixels)
    if reason:
        return None, reason.replace(repr(buffer), repr(name))
    try:
        return _decoder(image_size)(tf.constant(data)).numpy(), ""
    except tf.errors.OpError:
        return None, UNDECODABLE
    except Exception as exc:  # never a 500 for one image; the log keeps the traceback
        log.exception("decoding upload %r failed", name)
        return None, f"{UNDECODABLE}: {type(exc).__name__}"


def image_result(release: Release, probs: np.ndarray, decision: np.ndarray) -> dict:
    """One image's answer: decision, every probability, and the operating point used."""
    saved, point = release.saved, release.saved.point
    out = {"ok": True, "predicted": saved.named(decision),
           "probabilities": {c: float(p) for c, p in zip(saved.classes, probs, strict=True)}}
    if saved.multilabel:
        per_label = point is not None and point.multilabel
        out["labels"] = [c for c, on in zip(saved.classes, decision, strict=True) if on]
        out["thresholds"] = dict(zip(saved.classes, point.thresholds if per_label
                                     else [0.5] * len(saved.classes), strict=True))
        out["temperatures"] = dict(zip(saved.classes, point.temperatures if per_label
                                       else [1.0] * len(saved.classes), strict=True))
    else:
        binary = point is not None and point.threshold is not None
        out["rule"] = "threshold" if binary else "arg-max"
        out["threshold"] = point.threshold if binary else None
        out["positive_class"] = point.positive_class if binary else None
        out["temperature"] = point.temperature if point else 1.0
    out["tta"] = point.tta if point else "none"
    return out


def explain_image(release: Release, image: np.ndarray, label: str | None
                  ) -> tuple[bytes, dict]:
    """Grad-CAM overlay PNG of one image and its answer (the same decision as predict);
    a multi-label model explains ``label`` (default: the most probable)."""
    from unfreeze.evaluation.gradcam import gradcam

    saved = release.saved
    probs = release.probabilities(image[None])
    decisions = saved.decide(probs)
    chosen = explained_index(saved, probs, decisions, label)
    heat, _ = gradcam(saved.model, image[None].astype(np.float32), chosen)
    answer = image_result(release, probs[0], decisions[0])
    answer["explained"] = saved.classes[int(chosen[0])]
    return overlay_png(image, heat[0]), answer


def overlay_png(image: np.ndarray, heat: np.ndarray) -> bytes:
    """The image with its heatmap blended over it (jet, 40 %, as the Grad-CAM grids)."""
    from matplotlib import colormaps
    from PIL import Image

    colour = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    blended = 0.6 * image.astype(np.float32) + 0.4 * colour
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class _Item:
    images: np.ndarray
    future: asyncio.Future


class Batcher:
    """Gathers queued images into forward passes run by ``run`` on one worker thread.

    ``run(images)`` returns ``(probabilities, context)``; each request gets its rows and the
    context (the release that computed them). ``on_batch(n)`` is told each batch's size.
    """

    def __init__(self, run: Callable, max_batch: int, max_wait_s: float, max_queue: int,
                 on_batch: Callable[[int], None] = lambda n: None) -> None:
        self.run, self.on_batch = run, on_batch
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.queued = 0  # images waiting, not yet in a batch
        self.calls = 0  # admitted calls (Grad-CAM) waiting for or on the model thread
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="unfreeze-model")
        self._items: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    @property
    def alive(self) -> bool:
        """Whether the batch loop runs (it only ends when stopped)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """End the loop, fail what still waits, let the model thread finish its pass."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._items:
            item = self._items.popleft()
            if not item.future.done():
                item.future.set_exception(QueueFull("the server is shutting down"))
        await asyncio.to_thread(self.executor.shutdown, wait=True)

    async def submit(self, images: np.ndarray) -> tuple[np.ndarray, object]:
        """Probabilities of ``images`` and the context that computed them."""
        if self.queued + self.calls + len(images) > self.max_queue:
            raise QueueFull(f"{self.queued} images queued; at most {self.max_queue}")
        future = asyncio.get_running_loop().create_future()
        self._items.append(_Item(images, future))
        self.queued += len(images)
        self._wake.set()
        return await future

    async def call(self, fn: Callable, *args, admit: bool = False):
        """Run ``fn(*args)`` on the model thread, between batches (Grad-CAM). ``admit``:
        count it against ``max_queue`` like one image (:class:`QueueFull` beyond)."""
        if admit and self.queued + self.calls + 1 > self.max_queue:
            raise QueueFull(f"{self.queued} images and {self.calls} explanations queued; "
                            f"at most {self.max_queue}")
        self.calls += admit
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.calls -= admit

    async def _loop(self) -> None:
        while True:
            await self._gather()
            batch = self._take()
            live = [item for item in batch if not item.future.done()]  # gone: timed out
            try:
                if live:
                    await self._answer(live)
            except Exception as exc:  # a bug outside the pass: fail these, keep serving
                log.exception("batch of %d requests failed", len(live))
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)

    async def _gather(self) -> None:
        """Wait for a first item, then up to ``max_wait_s`` until ``max_batch`` images."""
        while not self._items:
            self._wake.clear()
            await self._wake.wait()
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while self.queued < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Item]:
        """Items from the front, of one image shape, up to ``max_batch`` images (at least
        one item)."""
        batch = [self._items.popleft()]
        size = len(batch[0].images)
        while (self._items and size + len(self._items[0].images) <= self.max_batch
               and self._items[0].images.shape[1:] == batch[0].images.shape[1:]):
            batch.append(self._items.popleft())
            size += len(batch[-1].images)
        self.queued -= size
        return batch

    async def _answer(self, live: list[_Item]) -> None:
        images = np.concatenate([item.images for item in live])
        try:
            probs, context = await self.call(self.run, images)
        except Exception as exc:  # each request gets it (stale size, or a bug: logged)
            if not isinstance(exc, StaleImageSize):
                log.exception("forward pass of %d images failed", len(images))
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.on_batch(len(images))
        start = 0
        for item in live:
            end = start + len(item.images)
            if not item.future.done():
                item.future.set_result((probs[start:end], context))
            start = end


class Holder:
    """The release in use for the model path, reloaded when the path's target changes."""

    def __init__(self, path: Path, on_swap: Callable[[Release | None, Release], None]
                 = lambda old, new: None, on_error: Callable[[str], None] = lambda e: None
                 ) -> None:
        self.path, self.on_swap, self.on_error = path, on_swap, on_error
        self.current: Release | None = None
        self.error = ""  # why the last load failed ("" when the current one is up to date)
        self._failed: tuple | None = None
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="unfreeze-loader")

    async def refresh(self) -> bool:
        """Load the path's target if it changed (not again after it failed to load, until
        it changes again); True when a new release was swapped in."""
        loop = asyncio.get_running_loop()
        signature = await loop.run_in_executor(self._loader, model_signature, self.path)
        if signature is None:
            self.error = f"--model {self.path}: no {MODEL_FILE} and {META_FILE} there (yet)"
            return False
        if self.current and signature == self.current.signature:
            self.error = ""  # back to what is served (e.g. after a half-written folder)
            return False
        if signature == self._failed:
            return False
        try:
            new = await loop.run_in_executor(self._loader, load_release, self.path)
        except Exception as exc:  # a half-written folder, a bad model: keep the old one
            self._failed, self.error = signature, f"{type(exc).__name__}: {exc}"
            self.on_error(self.error)
            log.error("could not load %s (%s); still serving %s", signature[0], self.error,
                      self.current.name if self.current else "nothing")
            return False
        old, self.current, self.error = self.current, new, ""
        self.on_swap(old, new)
        log.info("serving release %s (was %s)", new.name, old.name if old else "none")
        return True

    async def watch(self, interval_s: float) -> None:
        """Refresh now, then every ``interval_s`` seconds."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # never let hot reload die silently
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("checking %s failed", self.path)
            await asyncio.sleep(interval_s)

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)
