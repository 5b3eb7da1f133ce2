"""The DVC command runner: what the flows need from DVC, without Prefect.

- the stage graph, read from the project's ``dvc.yaml`` through DVC's own index;
- one stage run as ``python -m dvc --wait-for-lock repro --single-item <stage>`` in a
  subprocess, classified as ran / up to date, and failures as transient (retry) or not.

DVC's Python API resolves paths against the current directory and is not thread-safe when
one ``Repo`` is shared, so stages run as subprocesses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from unfreeze.runtime import child_env

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
    """One stage's run: whether DVC ran it (else it was up to date) and its wall time."""

    stage: str
    ran: bool
    seconds: float


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


def run_stage(root: str | Path, stage: str, timeout: float | None = None) -> StageRun:
    """Reproduce one stage with DVC in a subprocess; raise on failure, classified."""
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=child_env(), capture_output=True, text=True,
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
