"""Promotion: a new model replaces the production one only when it beats it on the test metric;
releases can be listed and switched back.

Layout of the production folder::

    production/releases/<id>/   the whole bundle of one promoted model (what `export` wrote and
                                checked: model.keras, meta.json, labels.txt, saved_model/,
                                TFLite files …; model.keras + meta.json without export) and
                                its metrics.json
    production/current          symlink to the release in use (swapped atomically)
    production/pinned           present after `unfreeze release use`: retrains do not promote
                                until `unfreeze release unpin` (a rollback stays rolled back)
    production/history.parquet  one row per decision: promoted, rejected, unchanged, pinned,
                                switched, unpinned

Every change of ``current`` and of the history holds ``production/.lock``: a promotion and a
`release use` never interleave.
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
from filelock import FileLock

from unfreeze.config.errors import ReleaseError
from unfreeze.io import permissions, read_json, sha256_file, write_json, write_parquet

REQUIRED_FILES = ("model.keras", "meta.json")
PIN_FILE = "pinned"


@dataclass(frozen=True)
class Decision:
    """One promotion decision, as recorded in ``history.parquet``."""

    decision: str  # promoted | rejected | unchanged | pinned | switched | unpinned
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


def lock(production: Path) -> FileLock:
    """The lock every change of ``current`` and of the history takes."""
    production.mkdir(parents=True, exist_ok=True)
    return FileLock(str(production / ".lock"))


def promote(model_dir: Path, metrics_path: Path, production: Path, metric: str,
            min_improvement: float) -> Decision:
    """Compare, then (only if better) publish the model and its metrics; record the decision.

    While a release is pinned (`unfreeze release use`) nothing is promoted: ``pinned``.
    """
    with lock(production):
        return _promote(model_dir, metrics_path, production, metric, min_improvement)


def _promote(model_dir: Path, metrics_path: Path, production: Path, metric: str,
             min_improvement: float) -> Decision:
    new_metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    model_hash = sha256_file(model_dir / "model.keras")
    current = current_release(production)
    current_metrics = (json.loads((current / "metrics.json").read_text(encoding="utf-8"))
                       if current else {})
    same = current is not None and current_metrics.get("model_sha256") == model_hash
    decision, reason = decide_promotion(metric, new_metrics.get(metric),
                                        current_metrics.get(metric), min_improvement, same)
    if decision == "promoted" and (production / PIN_FILE).is_file():
        decision, reason = "pinned", (f"{reason}, but {current.name if current else 'a release'}"
                                      " is pinned by `unfreeze release use`; run `unfreeze "
                                      "release unpin` to let retrains promote again")
    release = ""
    if decision == "promoted":
        release = publish(model_dir, new_metrics | {"model_sha256": model_hash}, production)
    elif current is not None:
        release = current.name
    return _record(production, decision, metric, new_metrics.get(metric),
                   current_metrics.get(metric), model_hash, release, reason, min_improvement)


def publish(model_dir: Path, metrics: dict, production: Path) -> str:
    """Copy the whole bundle into a new release folder, then point ``current`` at it."""
    releases = production / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}-{metrics['model_sha256'][:8]}"
    staging = releases / f".{name}.tmp-{uuid.uuid4().hex[:6]}"
    try:  # hidden leftovers of killed writes (.name.tmp…) are not part of the bundle
        shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns(".*"))
        os.chmod(staging, permissions(directory=True))
        write_json(staging / "metrics.json", metrics)
        os.replace(staging, releases / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    point_current(production, name)
    return name


def point_current(production: Path, name: str) -> None:
    """Swap ``current`` to ``releases/<name>`` atomically: readers see the old or the new."""
    tmp_link = production / f".current.tmp-{uuid.uuid4().hex[:6]}"
    os.symlink(Path("releases") / name, tmp_link)
    os.replace(tmp_link, production / "current")


def list_releases(production: Path) -> list[dict]:
    """Every complete release in the order it was promoted: name, metrics, whether current."""
    current = current_release(production)
    folder = production / "releases"
    promoted = [r["release"] for r in read_history(production) if r["decision"] == "promoted"]
    names = sorted((p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink()
                    and not p.name.startswith(".")) if folder.is_dir() else [],
                   key=lambda n: (promoted.index(n) if n in promoted else len(promoted), n))
    return [{"name": name, "current": current is not None and current.name == name,
             "metrics": _metrics(folder / name)} for name in names
            if all((folder / name / f).is_file() for f in REQUIRED_FILES)]


def use_release(production: Path, name: str, metric: str) -> Decision:
    """Point ``current`` at an earlier (or any) complete release and pin it (retrains then do
    not promote until :func:`unpin`); record the switch in the history."""
    with lock(production):
        known = [r["name"] for r in list_releases(production)]
        if name not in known:
            raise ReleaseError(f"release {name!r} is not in {production / 'releases'}; "
                               "releases: " + (", ".join(known) or "none (nothing promoted yet)"))
        previous = current_release(production)
        release = production / "releases" / name
        before = _metrics(previous) if previous else {}
        point_current(production, name)
        write_json(production / PIN_FILE, {"release": name})
        return _record(production, "switched", metric, _metrics(release).get(metric),
                       before.get(metric), sha256_file(release / "model.keras"), name,
                       f"`unfreeze release use {name}` (was "
                       f"{previous.name if previous else '—'}); pinned")


def unpin(production: Path, metric: str) -> Decision:
    """Let retrains promote again (the current release stays until a better one comes)."""
    with lock(production):
        current = current_release(production)
        (production / PIN_FILE).unlink(missing_ok=True)
        value = _metrics(current).get(metric) if current else None
        return _record(production, "unpinned", metric, value, value,
                       sha256_file(current / "model.keras") if current else "",
                       current.name if current else "", "`unfreeze release unpin`")


def _record(production: Path, decision: str, metric: str, new: float | None,
            old: float | None, sha: str, release: str, reason: str,
            min_improvement: float = 0.0) -> Decision:
    """Append one decision, stamped now, to ``history.parquet``; return it."""
    record = Decision(decision, metric, new, old, min_improvement, sha, release, reason,
                      datetime.now(timezone.utc).isoformat(timespec="seconds"))
    append_history(production / "history.parquet", record)
    return record


def read_history(production: Path) -> list[dict]:
    """Every decision recorded, oldest first."""
    path = production / "history.parquet"
    return pq.read_table(path).to_pylist() if path.is_file() else []


def _metrics(release: Path) -> dict:
    path = release / "metrics.json"
    return read_json(path) if path.is_file() else {}


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
