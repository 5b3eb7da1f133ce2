"""Shared fixtures: tiny generated image folders and a quiet TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

COLOURS = {"cat": (200, 40, 40), "dog": (40, 40, 200), "eel": (40, 200, 40)}


def make_image_folder(root: Path, per_class: dict[str, int], size: int = 40,
                      seed: int = 0, group_size: int = 0) -> Path:
    """Write ``per_class[label]`` noisy, class-coloured PNGs under ``root/<label>/``.

    With ``group_size``, images go in groups of that size into ``root/<label>/<group>/``.
    """
    rng = np.random.default_rng(seed)
    for label, n in per_class.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array(COLOURS.get(label, (128, 128, 128)))
        for i in range(n):
            pixels = (rng.normal(0, 25, (size, size, 3)) + colour).clip(0, 255).astype(np.uint8)
            target = folder / f"{label}_g{i // group_size}" if group_size else folder
            target.mkdir(exist_ok=True)
            Image.fromarray(pixels).save(target / f"{label}_{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes of 12 small PNG images each."""
    return make_image_folder(tmp_path / "images", {"cat": 12, "dog": 12})
