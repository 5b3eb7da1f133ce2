"""Predict new images with a saved model: `unfreeze predict` and `unfreeze explain`.

The model is a ``.keras`` file (or a folder holding ``model.keras``) with the ``meta.json``
that unfreeze saves beside it: class names and image size come from there, never from
guesses. An exported model's meta also carries the operating point fitted on validation
(temperature, binary threshold, TTA), which prediction applies. Every input file is checked
(opened and fully decoded) first; a file that cannot be read becomes a row with an
``error`` and no probabilities, and the rest are predicted in batches through the same
tf.data pipeline as evaluation.
"""

from __future__ import annotations

import glob
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from unfreeze.calibrate import OperatingPoint, apply_temperature, decide
from unfreeze.io import read_json, write_csv, write_parquet

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


class PredictError(ValueError):
    """Bad model path or inputs; the message says which and what to do."""


@dataclass(frozen=True)
class SavedModel:
    """A loaded model with what its meta.json says about it."""

    model: object
    classes: list[str]
    image_size: int
    point: OperatingPoint | None  # None: arg-max, no temperature, no TTA


def load_saved(path: str | Path) -> SavedModel:
    """Load ``path`` (a .keras file or a folder with model.keras) with ``safe_mode=True``."""
    from unfreeze import model as model_lib

    path = Path(path)
    file = path / "model.keras" if path.is_dir() else path
    meta_file = file.with_name("meta.json")
    if not file.is_file():
        raise PredictError(f"--model {path}: no such model file; give a .keras file saved "
                           "by unfreeze (e.g. models/export/model.keras)")
    if not meta_file.is_file():
        raise PredictError(f"--model {path}: {meta_file} is missing, so the class names are "
                           "unknown; use a model folder written by unfreeze (models/finetune, "
                           "models/export) that has meta.json beside model.keras")
    meta = read_json(meta_file)
    model = model_lib.load(file)
    point = meta.get("operating_point")
    return SavedModel(model, list(meta["classes"]), int(meta["image_size"]),
                      OperatingPoint.from_dict(point) if point else None)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders searched recursively for images, globs expanded; sorted, unique.

    An input that matches nothing is an error naming it.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*")
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                             and not any(part.startswith(".") for part in p.parts))
        elif path.exists():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True)
                             if Path(p).is_file())
        if not matches:
            raise PredictError(f"input {item!r}: no such file, or no image in that folder or "
                               "glob (images: " + ", ".join(IMAGE_SUFFIXES) + ")")
        found.update(dict.fromkeys(matches))
    return list(found)


def readable(files: list[Path]) -> list[str]:
    """Per file: "" when it decodes as a supported image, else why not (scan's own check)."""
    from unfreeze.scan import Candidate, check_image

    errors = []
    for file in files:
        absolute = file.resolve()
        record = check_image(Path(absolute.anchor),
                             Candidate(str(absolute.relative_to(absolute.anchor)), "?"))
        errors.append(record.reason if record.status != "ok" else "")
    return errors


def predict_files(saved: SavedModel, files: list[Path], batch_size: int = 32,
                  tta: str | None = None, progress: bool = True) -> pa.Table:
    """One row per file: path, predicted label, one probability per class, error."""
    from unfreeze.metrics import predict_views

    point = saved.point
    tta = tta or (point.tta if point else "none")
    errors = readable(files)
    good = [i for i, e in enumerate(errors) if not e]
    probs = np.full((len(files), len(saved.classes)), np.nan, np.float32)
    chunk = max(batch_size * 8, 1)  # the progress bar advances per chunk of batches
    for start in _progress(range(0, len(good), chunk), len(good), chunk, progress):
        rows = good[start:start + chunk]
        views = predict_views(saved.model, [str(files[i]) for i in rows], saved.image_size,
                              batch_size, tta=tta)
        probs[rows] = apply_temperature(np.mean(views, axis=0),
                                        point.temperature if point else 1.0)
    predicted: list[str | None] = [None] * len(files)
    if good:
        for i, k in zip(good, decide(probs[good], point), strict=True):
            predicted[i] = saved.classes[k]
    columns = {"path": [str(f) for f in files], "predicted": predicted}
    for j, name in enumerate(saved.classes):
        columns[f"prob_{name}"] = pa.array(
            [None if e else float(probs[i, j]) for i, e in enumerate(errors)], pa.float64())
    columns["error"] = [e or None for e in errors]
    return pa.table(columns)


def _progress(chunks: range, total: int, chunk: int, enabled: bool):
    """Yield ``chunks`` while drawing a progress bar (images done / total) on stderr."""
    from tqdm import tqdm

    with tqdm(total=total, unit="img", disable=not enabled or not total, file=sys.stderr,
              desc="predict") as bar:
        for start in chunks:
            yield start
            bar.update(min(chunk, total - start))


def write_table(table: pa.Table, out: Path) -> Path:
    """Write ``table`` as Parquet (``.parquet``) or CSV (``.csv``), atomically."""
    suffix = out.suffix.lower()
    if suffix == ".parquet":
        return write_parquet(out, table)
    if suffix == ".csv":
        return write_csv(out, table.to_pylist(), table.column_names)
    raise PredictError(f"--out {out}: the file name must end in .parquet or .csv")
