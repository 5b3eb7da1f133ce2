"""Promotion: a new model replaces the production one only when it beats it on the same test
images (the new test split, both models scored); releases can be listed and switched back.

Layout of the production folder::

    production/releases/<id>/   the whole bundle of one promoted model (what `export` wrote and
                                checked: model.keras, meta.json, labels.txt, MODEL_CARD.md,
                                saved_model/, TFLite files …; model.keras + meta.json
                                without export), its metrics.json and trained_on.parquet
                                (the content hashes of its train + val images)
    production/current          symlink to the release in use (swapped atomically)
    production/pinned           present after `unfreeze release use`: retrains do not promote
                                until `unfreeze release unpin` (a rollback stays rolled back)
    production/history.parquet  one row per decision: promoted, rejected, unchanged,
                                incomparable, pinned, switched, unpinned; for a retrain both
                                models' metric on the same images, the interval of the
                                difference, the rule and the test split's fingerprint
    production/serving/unfreeze/<N>
                                TensorFlow Serving's layout (``serving_layout``): each change
                                of ``current`` adds a version one higher, a relative symlink
                                to ``../../releases/<id>/saved_model`` (releases with a
                                SavedModel only; the last few kept), so the highest version is
                                the current release; versions.json names each version's release

Serve it (TF Serving polls the folder and serves the highest version)::

    docker run -p 8501:8501 -v "$PWD/production:/models/production" \\
        -e MODEL_BASE_PATH=/models/production/serving -e MODEL_NAME=unfreeze tensorflow/serving

then ``POST http://localhost:8501/v1/models/unfreeze:predict`` with
``{"instances": [<uint8 HxWx3 nested list>]}`` returns the probabilities.

Every change of ``current`` and of the history holds ``production/.lock``: a promotion and a
`release use` never interleave.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from unfreeze.config.errors import ReleaseError, UnfreezeError
from unfreeze.io import permissions, read_json, sha256_file, write_json, write_parquet
from unfreeze.ops.serving_layout import add_version

REQUIRED_FILES = ("model.keras", "meta.json")
TRAINED_ON = "trained_on.parquet"  # sha256 of the images a release trained / validated on
PIN_FILE = "pinned"


@dataclass(frozen=True)
class Decision:
    """One promotion decision, as recorded in ``history.parquet``.

    For a retrain, ``new_value`` and ``current_value`` are both models' metric on the same
    ``n`` images (the new test split, ``test_fingerprint``), with the paired 95 % interval of
    their difference and McNemar's p-value for accuracy.
    """

    decision: str  # promoted | rejected | unchanged | incomparable | pinned | switched | unpinned
    metric: str
    new_value: float | None
    current_value: float | None
    min_improvement: float
    model_sha256: str
    release: str
    reason: str
    time: str
    rule: str = ""
    n: int | None = None
    ci95_low: float | None = None
    ci95_high: float | None = None
    mcnemar_p: float | None = None
    test_fingerprint: str = ""


@dataclass(frozen=True)
class Rule:
    """How a retrain decides: ``retrain.metric``, ``min_improvement``, ``rule`` and
    ``on_incomparable``."""

    metric: str
    min_improvement: float = 0.0
    rule: str = "ci"  # ci | point
    on_incomparable: str = "keep"  # keep | promote


def decide_promotion(rule: Rule, new_value: float | None, comparison: dict | None,
                     same_model: bool) -> tuple[str, str]:
    """(decision, reason). The first model is promoted. A later one is compared with the
    promoted model on the same images (``comparison``, from
    :func:`unfreeze.evaluation.compare.paired_comparison` plus ``comparable``/``reason``):
    ``ci`` promotes when the lower bound of the difference's interval is above
    ``min_improvement``, ``point`` when the difference is. Higher is better."""
    m, margin = rule.metric, rule.min_improvement
    if new_value is None:
        return "rejected", f"the new model has no test {m}"
    if same_model:
        return "unchanged", "the new model is the promoted model"
    if comparison is None:
        return "promoted", "no model was promoted before"
    if not comparison.get("comparable"):
        why = f"the promoted model cannot be scored on the new test images: {comparison['reason']}"
        if rule.on_incomparable == "promote":
            return "promoted", f"{why}; retrain.on_incomparable is promote"
        return "incomparable", (f"{why}; kept (set retrain.on_incomparable: promote to "
                                "replace it)")
    new, old, diff = comparison["new_value"], comparison["current_value"], comparison["difference"]
    if diff is None:
        return "rejected", f"{m} is undefined on the new test images (one class only)"
    said = f"{m} {new:.4f} vs {old:.4f} " + (
        f"on the same {comparison['n']} images" if comparison.get("n") else
        "as stored with each model (not on the same images)")
    if rule.rule == "point":
        verdict = diff > margin
        said += f": difference {diff:+.4f} {'>' if verdict else '<='} {margin}"
    else:
        ci = comparison.get("ci95")
        if ci is None:
            return "rejected", f"{said}: the difference has no interval (undefined resamples)"
        verdict = ci["low"] > margin
        said += (f": difference {diff:+.4f}, 95% CI [{ci['low']:+.4f}, {ci['high']:+.4f}], "
                 f"lower bound {'>' if verdict else '<='} {margin}")
    return ("promoted" if verdict else "rejected"), said


def current_release(production: Path) -> Path | None:
    """The release folder ``production/current`` points to, or None."""
    link = production / "current"
    return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None


def lock(production: Path) -> FileLock:
    """The lock every change of ``current`` and of the history takes."""
    production.mkdir(parents=True, exist_ok=True)
    return FileLock(str(production / ".lock"))


def promote(model_dir: Path, metrics_path: Path, production: Path, rule: Rule,
            compare: Callable[[Path], dict] | None = None,
            trained_on: list[str] | None = None) -> Decision:
    """Compare, then (only if better) publish the model and its metrics; record the decision.

    ``compare(current_release)`` scores the promoted model on the new test images and
    returns the paired comparison (it runs before ``production/.lock`` is taken, so a long
    scoring never blocks `release use`; a user error in it makes the pair ``incomparable``);
    without it, the metric stored with each model is compared (no interval: only
    ``rule.rule == "point"`` can promote then). ``trained_on`` (content hashes of the images
    the new model trained and validated on) is kept in the release, so that a later
    comparison leaves those images out. While a release is pinned (`unfreeze release use`)
    nothing is compared or promoted: ``pinned``.
    """
    new_metrics = read_json(metrics_path)
    model_hash = sha256_file(model_dir / "model.keras")
    current = current_release(production)
    comparison = _compare(new_metrics, model_hash, production, current, rule, compare)
    with lock(production):
        if current_release(production) != current:  # switched while we were scoring
            current = current_release(production)
            comparison = _compare(new_metrics, model_hash, production, current, rule, compare)
        return _promote(model_dir, new_metrics, model_hash, production, current, rule,
                        comparison, trained_on)


def _compare(new_metrics: dict, model_hash: str, production: Path, current: Path | None,
             rule: Rule, compare: Callable[[Path], dict] | None) -> dict | None:
    """The comparison with ``current``, or None where none is needed (no current model, the
    same model, no new value, a pinned release)."""
    current_metrics = _metrics(current) if current else {}
    new_value = new_metrics.get(rule.metric)
    if (current is None or current_metrics.get("model_sha256") == model_hash
            or new_value is None or (production / PIN_FILE).is_file()):
        return None
    if compare is None:
        return stored_comparison(rule.metric, new_value, current_metrics.get(rule.metric))
    try:
        return compare(current)
    except UnfreezeError as exc:  # e.g. the new run's predictions do not match its split
        return {"comparable": False, "reason": str(exc)}


def _promote(model_dir: Path, new_metrics: dict, model_hash: str, production: Path,
             current: Path | None, rule: Rule, comparison: dict | None,
             trained_on: list[str] | None) -> Decision:
    current_metrics = _metrics(current) if current else {}
    same = current is not None and current_metrics.get("model_sha256") == model_hash
    new_value = new_metrics.get(rule.metric)
    if current is not None and not same and (production / PIN_FILE).is_file():
        decision, reason = "pinned", (f"{current.name} is pinned by `unfreeze release use`: "
                                      "not compared, not promoted; run `unfreeze release "
                                      "unpin` to let retrains promote again")
    else:
        decision, reason = decide_promotion(rule, new_value, comparison, same)
    release = ""
    if decision == "promoted":
        release = publish(model_dir, new_metrics | {"model_sha256": model_hash}, production,
                          trained_on)
    elif current is not None:
        release = current.name
    c = comparison if comparison and comparison.get("comparable") else {}
    ci = c.get("ci95") or {}
    return _record(production, Decision(
        decision, rule.metric, c.get("new_value", new_value),
        c.get("current_value", current_metrics.get(rule.metric)), rule.min_improvement,
        model_hash, release, reason, _now(), rule=rule.rule, n=c.get("n"),
        ci95_low=ci.get("low"), ci95_high=ci.get("high"),
        mcnemar_p=(c.get("mcnemar") or {}).get("p_value"),
        test_fingerprint=(comparison or {}).get("test_fingerprint", "")))


def stored_comparison(metric: str, new_value: float, stored: float | None) -> dict:
    """The comparison without a champion to score: the numbers stored with each model,
    measured on whatever test images each had (no interval, no pairing)."""
    if stored is None:
        return {"comparable": False, "reason": f"the promoted model has no stored {metric}"}
    return {"comparable": True, "new_value": new_value, "current_value": stored,
            "difference": new_value - stored, "n": None, "ci95": None}


def publish(model_dir: Path, metrics: dict, production: Path,
            trained_on: list[str] | None = None) -> str:
    """Copy the whole bundle into a new release folder (with ``trained_on``, the content
    hashes of its training and validation images, as :data:`TRAINED_ON`), then point
    ``current`` at it."""
    releases = production / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}-{metrics['model_sha256'][:8]}"
    staging = releases / f".{name}.tmp-{uuid.uuid4().hex[:6]}"
    try:  # hidden leftovers of killed writes (.name.tmp…) are not part of the bundle
        shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns(".*"))
        os.chmod(staging, permissions(directory=True))
        write_json(staging / "metrics.json", metrics)
        if trained_on is not None:
            write_parquet(staging / TRAINED_ON, pa.table({"sha256": sorted(set(trained_on))}))
        os.replace(staging, releases / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    point_current(production, name)
    return name


def point_current(production: Path, name: str) -> None:
    """Swap ``current`` to ``releases/<name>`` atomically: readers see the old or the new;
    then add its TF Serving version (:func:`unfreeze.ops.serving_layout.add_version`)."""
    tmp_link = production / f".current.tmp-{uuid.uuid4().hex[:6]}"
    os.symlink(Path("releases") / name, tmp_link)
    os.replace(tmp_link, production / "current")
    try:
        version = add_version(production, name)
    except OSError as exc:  # the switch stands: a failed link must not lose its record
        warnings.warn(f"{production}/serving: could not link {name} for TF Serving ({exc}); "
                      "TF Serving keeps serving the previous version", stacklevel=2)
        return
    if version is None:
        warnings.warn(f"release {name} has no saved_model/ (exported without "
                      "export.savedmodel): TF Serving keeps serving the previous version of "
                      f"{production}/serving; `unfreeze api` serves {name}", stacklevel=2)


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
        return _record(production, Decision(
            "switched", metric, _metrics(release).get(metric), before.get(metric), 0.0,
            sha256_file(release / "model.keras"), name, f"`unfreeze release use {name}` (was "
            f"{previous.name if previous else '—'}); pinned", _now()))


def unpin(production: Path, metric: str) -> Decision:
    """Let retrains promote again (the current release stays until a better one comes)."""
    with lock(production):
        current = current_release(production)
        (production / PIN_FILE).unlink(missing_ok=True)
        value = _metrics(current).get(metric) if current else None
        return _record(production, Decision(
            "unpinned", metric, value, value, 0.0,
            sha256_file(current / "model.keras") if current else "",
            current.name if current else "", "`unfreeze release unpin`", _now()))


def _record(production: Path, record: Decision) -> Decision:
    """Append one decision to ``history.parquet``; return it."""
    append_history(production / "history.parquet", record)
    return record


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
    if path.is_file():  # a history written before a column existed gets nulls there
        old = pq.read_table(path)
        old = pa.table({f.name: old[f.name] if f.name in old.column_names
                        else pa.nulls(old.num_rows, f.type) for f in HISTORY_SCHEMA},
                       schema=HISTORY_SCHEMA)
        row = pa.concat_tables([old, row])
    write_parquet(path, row)


HISTORY_SCHEMA = pa.schema([
    ("decision", pa.string()), ("metric", pa.string()), ("new_value", pa.float64()),
    ("current_value", pa.float64()), ("min_improvement", pa.float64()),
    ("model_sha256", pa.string()), ("release", pa.string()), ("reason", pa.string()),
    ("time", pa.string()), ("rule", pa.string()), ("n", pa.int64()),
    ("ci95_low", pa.float64()), ("ci95_high", pa.float64()), ("mcnemar_p", pa.float64()),
    ("test_fingerprint", pa.string()),
])
