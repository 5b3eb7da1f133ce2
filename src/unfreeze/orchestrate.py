"""What the retrain flow needs from DVC and the working copy, without Prefect.

- the stage graph, read from the project's ``dvc.yaml`` through DVC's own index;
- one stage run as ``python -m dvc --wait-for-lock repro --single-item <stage>`` in a
  subprocess, classified as ran / up to date, and failures as transient (retry) or not;
- a cheap listing key and a content fingerprint of the data source;
- metric snapshots, a ``dvc metrics diff``-style comparison and a summary table.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from unfreeze.io import read_json
from unfreeze.runtime import QUIET_ENV

TEST_METRICS = Path("reports/evaluate/metrics.json")
CV_METRICS = Path("reports/cv/metrics.json")
TRANSIENT_PATTERNS = (
    r"Unable to acquire lock", r"lock .* is (busy|held)", r"Resource temporarily unavailable",
    r"Device or resource busy", r"Too many open files", r"Stale file handle",
    r"Input/output error", r"Connection (reset|refused)", r"Interrupted system call",
)


class StageFailed(RuntimeError):
    """A stage failed for a reason that retrying will not fix (params, data, code)."""


class TransientStageError(RuntimeError):
    """A stage failed for a reason that may pass (a lock or an I/O hiccup): retry it."""


@dataclass(frozen=True)
class StageRun:
    stage: str
    ran: bool
    seconds: float


def quiet_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes: no DVC analytics, no Prefect telemetry, quiet TF."""
    env = dict(os.environ if base is None else base)
    env.update({k: env.get(k, v) for k, v in QUIET_ENV.items()})
    env.update(DVC_NO_ANALYTICS="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    bin_dir = str(Path(sys.executable).parent)  # stages call `python`: use this environment's
    if not env.get("PATH", "").startswith(bin_dir):
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def stage_graph(root: str | Path) -> dict[str, list[str]]:
    """Every stage of ``root/dvc.yaml`` (foreach stages expanded) → the stages it depends on.

    The order of the keys is a valid execution order (dependencies first).
    """
    import networkx as nx
    from dvc.repo import Repo

    root = Path(root).resolve()
    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        names = {stage: _address(stage, root) for stage in graph.nodes}
        order = list(reversed(list(nx.topological_sort(graph))))
        return {names[s]: sorted(names[d] for d in graph.successors(s)) for s in order}


def _address(stage, root: Path) -> str:
    """The stage's name as `dvc repro` takes it when run in ``root`` (whatever our cwd)."""
    rel = Path(os.path.relpath(stage.path, root)).as_posix()
    return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"


def run_stage(root: str | Path, stage: str, force: bool = False,
              timeout: float | None = None) -> StageRun:
    """Reproduce one stage with DVC in a subprocess; raise on failure, classified.

    ``force`` reruns the stage even when DVC thinks it is up to date (a data source that DVC
    does not watch has changed).
    """
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item",
           *(["--force"] if force else []), stage]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=quiet_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise TransientStageError(f"stage {stage!r} timed out after {timeout} s") from exc
    seconds = round(time.perf_counter() - started, 2)
    if proc.returncode != 0:
        raise classify_failure(stage, proc.stdout + "\n" + proc.stderr)
    ran = f"Running stage '{stage}'" in proc.stdout
    return StageRun(stage=stage, ran=ran, seconds=seconds)


def classify_failure(stage: str, output: str) -> Exception:
    """A transient error for lock and I/O hiccups; otherwise StageFailed with the stage's text."""
    reason = stage_error_text(output)
    message = f"stage {stage!r} failed: {reason}"
    if any(re.search(p, output, re.IGNORECASE) for p in TRANSIENT_PATTERNS):
        return TransientStageError(message)
    return StageFailed(message)


def stage_error_text(output: str) -> str:
    """The most useful lines of a failed stage's output: its own error lines, then DVC's."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    own = [line for line in lines if re.match(r"^[\w@]+: error: ", line)]
    dvc = [line for line in lines if line.startswith("ERROR:")]
    tail = [line for line in lines if not line.startswith(("WARNING", "I0000", "E0000"))][-3:]
    return " | ".join(own + dvc) or " | ".join(tail) or "no output"


def listing_key(root: str | Path) -> str:
    """A cheap key of a folder's listing: every file's relative path, size and mtime."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def content_fingerprint(root: str | Path) -> str:
    """The sha256 of every file's relative path and content hash: what the data really is."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        h.update(f"{path.relative_to(root).as_posix()}\0{digest}\n".encode())
    return h.hexdigest()


def flat_metrics(data: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested metrics dict, keyed like ``dvc metrics show``."""
    out: dict[str, float] = {}
    for key, value in data.items():
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
    """Rows of test metric, CV mean, std and 95% CI, for a Prefect table artifact."""
    root = Path(root)
    test = _read(root / TEST_METRICS)
    cv = _read(root / CV_METRICS).get("metrics", {})
    rows = []
    for name in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc",
                 "average_precision"):
        agg = cv.get(name, {})
        ci = agg.get("ci95") or [None, None]
        rows.append({"metric": name, "test": test.get(name), "cv_mean": agg.get("mean"),
                     "cv_std": agg.get("std"), "cv_ci95_low": ci[0], "cv_ci95_high": ci[1]})
    return rows


def _read(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def runs_as_dicts(runs: list[StageRun]) -> list[dict]:
    return [asdict(r) for r in runs]
