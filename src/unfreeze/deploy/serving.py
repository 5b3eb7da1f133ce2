"""Serving one model to many clients (`unfreeze api`): the loaded release and hot reload of
the folder a model path points to (the micro-batches are :mod:`unfreeze.deploy.batching`'s).

- A :class:`Release` is a model folder (``model.keras`` + ``meta.json``, loaded with
  ``safe_mode=True`` by :func:`~unfreeze.deploy.predict.load_saved`) warmed up by one
  prediction. It is named by its folder (a promoted release's name, e.g.
  ``20261130T101500Z-1a2b3c4d``; another folder: ``<name>@<model hash>``) and answers with the
  probabilities ``unfreeze predict`` gives: the stored TTA views, then the temperature(s).
- :class:`Holder` keeps the release in use and reloads when the model path changes (the
  ``production/current`` symlink switched, or a folder rewritten): the new release is loaded
  and warmed up on another thread while the old one answers, then swapped in one assignment.
  A batch runs wholly on the release it started with, and says which.
"""

from __future__ import annotations

import asyncio
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
from unfreeze.deploy.batching import StaleImageSize
from unfreeze.deploy.card import CARD_FILE, CARD_JSON
from unfreeze.deploy.predict import UNDECODABLE, SavedModel, explained_index, load_saved
from unfreeze.evaluation.calibrate import calibrate_probs
from unfreeze.evaluation.inference import TTA_VIEWS
from unfreeze.io import read_json, sha256_file
from unfreeze.training.artifacts import META_FILE, MODEL_FILE

log = logging.getLogger("unfreeze.api")
CHUNK = 64  # images per forward call: bounds the activations held at once


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
