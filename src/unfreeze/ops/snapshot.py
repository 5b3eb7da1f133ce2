"""Metric snapshots of a working copy, a ``dvc metrics diff``-style comparison of two, and
the summary table the retrain flow publishes."""

from __future__ import annotations

from pathlib import Path

from unfreeze.config.params import METRIC_NAMES
from unfreeze.evaluation.caveats import caveats
from unfreeze.io import read_json

TEST_METRICS = Path("reports/evaluate/metrics.json")
CV_METRICS = Path("reports/cv/metrics.json")
NOISE = ("ci95", "bootstrap")  # intervals move with every point value: noise in a diff


def flat_metrics(data: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested metrics dict, keyed like ``dvc metrics show`` (intervals
    and bootstrap settings left out)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        if key in NOISE:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def snapshot(root: str | Path) -> dict[str, dict[str, float]]:
    """Current test and CV metrics of the working copy (empty when not produced yet)."""
    out = {}
    for rel in (TEST_METRICS, CV_METRICS):
        path = Path(root) / rel
        if path.is_file():
            data = read_json(path)
            if rel == CV_METRICS:  # per-fold value lists are noise in a diff
                data = {k: v for k, v in data.items() if k != "metrics"} | {
                    "metrics": {m: {k: v[k] for k in ("mean", "std")}
                                for m, v in data.get("metrics", {}).items()}}
            out[rel.as_posix()] = flat_metrics(data)
    return out


def diff_markdown(before: dict, after: dict) -> str:
    """A ``dvc metrics diff``-style markdown table of what changed between two snapshots."""
    rows = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path, {}), after.get(path, {})
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key), new.get(key)
            if a != b:
                change = f"{b - a:+.4f}" if a is not None and b is not None else "—"
                rows.append(f"| {path} | {key} | {_fmt(a)} | {_fmt(b)} | {change} |")
    if not rows:
        return "No metric changed since the previous run."
    head = "| Path | Metric | Previous | New | Change |\n|---|---|---|---|---|"
    return head + "\n" + "\n".join(rows)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def summary_table(root: str | Path) -> list[dict]:
    """Rows of test metric with its bootstrap 95% CI, CV mean, std and 95% CI, for a Prefect
    table artifact."""
    root = Path(root)
    test = _read(root / TEST_METRICS)
    cv = _read(root / CV_METRICS).get("metrics", {})
    rows = []
    for name in METRIC_NAMES:
        agg = cv.get(name, {})
        ci = agg.get("ci95") or [None, None]
        test_ci = (test.get("ci95") or {}).get(name) or {}
        rows.append({"metric": name, "test": test.get(name),
                     "test_ci95_low": test_ci.get("low"), "test_ci95_high": test_ci.get("high"),
                     "cv_mean": agg.get("mean"), "cv_std": agg.get("std"),
                     "cv_ci95_low": ci[0], "cv_ci95_high": ci[1]})
    return rows


def warnings(root: str | Path) -> list[str]:
    """The caveats of the working copy's test and CV metrics (degenerate models, a CV that
    does not estimate the main model): shown before any number."""
    root = Path(root)
    return caveats(_read(root / TEST_METRICS), _read(root / CV_METRICS))


def _read(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}
