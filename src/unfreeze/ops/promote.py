"""Promotion: a new model replaces the production one only when it beats it on the test metric.

Layout of the production folder::

    production/releases/<id>/   model.keras, meta.json, metrics.json of one promoted model
    production/current          symlink to the promoted release (swapped atomically)
    production/history.parquet  one row per decision: promoted, rejected or unchanged
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from unfreeze.io import sha256_file, write_parquet

MODEL_FILES = ("model.keras", "meta.json")


@dataclass(frozen=True)
class Decision:
    """One promotion decision, as recorded in ``history.parquet``."""

    decision: str  # promoted | rejected | unchanged
    metric: str
    new_value: float | None
    current_value: float | None
    min_improvement: float
    model_sha256: str
    release: str
    reason: str
    time: str


def decide_promotion(metric: str, new_value: float | None, current_value: float | None,
                     min_improvement: float, same_model: bool) -> tuple[str, str]:
    """(decision, reason). The first model is promoted; later ones must beat the current one
    by more than ``min_improvement`` (higher is better)."""
    if new_value is None:
        return "rejected", f"the new model has no test {metric}"
    if same_model:
        return "unchanged", "the new model is the promoted model"
    if current_value is None:
        return "promoted", "no model was promoted before"
    if new_value > current_value + min_improvement:
        return "promoted", (f"{metric} {new_value:.4f} beats {current_value:.4f} "
                            f"by more than {min_improvement}")
    return "rejected", (f"{metric} {new_value:.4f} does not beat the promoted "
                        f"{current_value:.4f} by more than {min_improvement}")


def current_release(production: Path) -> Path | None:
    """The release folder ``production/current`` points to, or None."""
    link = production / "current"
    return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None


def promote(model_dir: Path, metrics_path: Path, production: Path, metric: str,
            min_improvement: float) -> Decision:
    """Compare, then (only if better) publish the model and its metrics; record the decision."""
    new_metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    model_hash = sha256_file(model_dir / "model.keras")
    current = current_release(production)
    current_metrics = (json.loads((current / "metrics.json").read_text(encoding="utf-8"))
                       if current else {})
    same = current is not None and current_metrics.get("model_sha256") == model_hash
    decision, reason = decide_promotion(metric, new_metrics.get(metric),
                                        current_metrics.get(metric), min_improvement, same)
    release = ""
    if decision == "promoted":
        release = publish(model_dir, new_metrics | {"model_sha256": model_hash}, production)
    elif current is not None:
        release = current.name
    record = Decision(decision, metric, new_metrics.get(metric), current_metrics.get(metric),
                      min_improvement, model_hash, release, reason,
                      datetime.now(timezone.utc).isoformat(timespec="seconds"))
    append_history(production / "history.parquet", record)
    return record


def publish(model_dir: Path, metrics: dict, production: Path) -> str:
    """Copy the model into a new release folder, then swap ``current`` to it atomically."""
    releases = production / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}-{metrics['model_sha256'][:8]}"
    staging = releases / f".{name}.tmp-{uuid.uuid4().hex[:6]}"
    staging.mkdir()
    try:
        for file in MODEL_FILES:
            shutil.copy2(model_dir / file, staging / file)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        os.replace(staging, releases / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tmp_link = production / f".current.tmp-{uuid.uuid4().hex[:6]}"
    os.symlink(Path("releases") / name, tmp_link)
    os.replace(tmp_link, production / "current")  # readers see the old or the new, never none
    return name


def append_history(path: Path, record: Decision) -> None:
    """Append one decision to the Parquet history (rewritten atomically)."""
    row = pa.Table.from_pylist([asdict(record)], schema=HISTORY_SCHEMA)
    table = pa.concat_tables([pq.read_table(path), row]) if path.is_file() else row
    write_parquet(path, table)


HISTORY_SCHEMA = pa.schema([
    ("decision", pa.string()), ("metric", pa.string()), ("new_value", pa.float64()),
    ("current_value", pa.float64()), ("min_improvement", pa.float64()),
    ("model_sha256", pa.string()), ("release", pa.string()), ("reason", pa.string()),
    ("time", pa.string()),
])
