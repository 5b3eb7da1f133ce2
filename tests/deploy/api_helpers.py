"""Tiny saved models and a real uvicorn server in a thread, for the HTTP API tests."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from conftest import free_port
from PIL import Image

from unfreeze.config.params import ModelParams
from unfreeze.evaluation.calibrate import OperatingPoint
from unfreeze.training.artifacts import save_model
from unfreeze.training.model import build

SIZE = 75
# A binary operating point: threshold 0.3 on P(dog), temperature 1.5
POINT = OperatingPoint(["cat", "dog"], "dog", 0.3, "f1", 1.5, "none")


def tiny_model(folder: Path, classes=("cat", "dog"), point: OperatingPoint | None = None,
               multilabel: bool = False, seed: int = 0, size: int = SIZE) -> Path:
    """A random-weight unfreeze model saved as model.keras + meta.json (with ``point``)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build(ModelParams(image_size=size, weights=None, hidden_units=8), len(classes),
                  multilabel=multilabel)
    meta = {"classes": list(classes), "image_size": size}
    if point is not None:
        meta["operating_point"] = point.as_dict()
    save_model(model, folder, meta)
    return folder


def carded_model(folder: Path) -> Path:
    """:func:`tiny_model` with :data:`POINT` and a model card, as an export bundle has."""
    tiny_model(folder, point=POINT)
    (folder / "MODEL_CARD.md").write_text("# Model card\n\nA tiny test model.\n")
    (folder / "MODEL_CARD.json").write_text('{"facts": {"test": {"roc_auc": 0.5}}}')
    return folder


def png_bytes(seed: int, size: int = 40) -> bytes:
    """A random RGB PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def serving(app, ready: bool = True, timeout: float = 120.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL
    (after ``/readyz`` answers 200, with ``ready``)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    path = "/readyz" if ready else "/healthz"
    while True:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"server at {url} not {'ready' if ready else 'up'}")
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
