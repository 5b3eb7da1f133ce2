"""Model artifacts: ``model.keras`` + ``meta.json`` in a folder, saved atomically and loaded
with ``safe_mode=True`` only.

``meta.json`` says what the model predicts (class names in output order, image size) and how
it was trained; the exported bundle adds the operating point. Nothing is ever guessed from
folder names when a model is used.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np

from unfreeze.config.errors import DataError
from unfreeze.config.params import PhaseParams
from unfreeze.io import atomic_path, read_json, write_json

MODEL_FILE = "model.keras"
META_FILE = "meta.json"


def save_model(model: keras.Model, out_dir: Path, meta: dict) -> Path:
    """Save ``model.keras`` and ``meta.json`` into ``out_dir``, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        model.save(tmp)
    write_json(out_dir / META_FILE, meta)
    return out_dir / MODEL_FILE


def read_meta(model_dir: Path) -> dict:
    """The ``meta.json`` beside a saved model."""
    return read_json(model_dir / META_FILE)


def phase_meta(classes: list[str], image_size: int, source: str, phase: str,
               phase_params: PhaseParams, summary: dict) -> dict:
    """Metadata saved beside the model: what it predicts and how it was trained."""
    return {"classes": classes, "image_size": image_size, "source": source, "phase": phase,
            "phase_params": asdict(phase_params), "training": summary}


def check_task_match(model: keras.Model, labels: np.ndarray, where: Path) -> None:
    """Stop when a saved model's head (softmax: one class; sigmoids: a label set) is not the
    task of the splits' labels (integers, or multi-hot rows)."""
    from unfreeze.training.model import is_multilabel

    ours, theirs = is_multilabel(model), labels.ndim == 2
    if ours != theirs:
        kinds = {True: "multilabel", False: "multiclass"}
        raise DataError(f"{where}: the model is {kinds[ours]} (its head) but the splits hold a "
                        f"{kinds[theirs]} task; rerun the earlier stages (`dvc repro`) after "
                        "changing `task`")


def check_classes_match(model_classes: list[str], data_classes: list[str], where: Path) -> None:
    """Stop when a saved model predicts other classes than the data has."""
    if list(model_classes) != list(data_classes):
        raise DataError(f"{where}: the model predicts classes {model_classes} but the splits "
                        f"have {data_classes}; rerun the earlier stages (`dvc repro`)")


def load_model(path: str | Path, legacy_h5: bool = False) -> keras.Model:
    """Load a ``.keras`` model with ``safe_mode=True`` (no arbitrary code from the file).

    A legacy HDF5 model (``.h5``) loads only with ``legacy_h5=True`` and a warning: that
    format has carried code-execution exploits, so only files you trust should be opened.
    """
    path = Path(path)
    if path.suffix == ".h5" and legacy_h5:
        warnings.warn(f"loading legacy HDF5 model {path}: only do this for a file you trust; "
                      "re-save it as .keras (`model.save('model.keras')`) and use that",
                      UserWarning, stacklevel=2)
    elif path.suffix == ".h5":
        raise ValueError(f"refusing to load {path}: legacy HDF5 (.h5) models are off by "
                         "default because the format has carried code-execution exploits; "
                         "re-save it as .keras in a trusted environment, or pass the explicit "
                         "legacy-.h5 flag if you trust this file")
    elif path.suffix != ".keras":
        raise ValueError(f"refusing to load {path}: only `.keras` files are supported "
                         "(legacy `.h5` behind an explicit flag)")
    return keras.models.load_model(path, safe_mode=True, compile=False)
