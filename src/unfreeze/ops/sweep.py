"""``unfreeze sweep``: a search over params, each trial a real DVC experiment, scored by
cross-validation (or validation), never by test; one trial at a time, resumable, within a
wall-clock budget. What is searched and scored: :mod:`~unfreeze.ops.sweep_space`; the state
and which trial runs next: :mod:`~unfreeze.ops.sweep_plan`; one trial as a DVC experiment
(``--temp``, untracked files, the decoded-image cache): :mod:`~unfreeze.ops.sweep_dvc`; the
ranking and its "not distinguishable from the best" rule: :mod:`~unfreeze.ops.sweep_rank`.

Decisions:

- **Methods.** ``grid``: every combination, in the order given. ``random`` and ``tpe``:
  Optuna's ``RandomSampler`` / ``TPESampler``, asked and told one trial at a time; the study
  is kept in the sweep's folder (a journal file), so a resumed sweep samples knowing every
  earlier trial, and its sampler is seeded with ``--seed`` plus the number of trials so far
  (a restarted seeded sampler would otherwise draw the first trials' params again). TPE
  samples at random for its first ``min(10, max(2, trials // 3))`` trials.
- **--trials N** (random/tpe, default 10): the trials proposed in all, earlier runs of the
  sweep included. A proposal equal to a finished trial's params is not run again: it is told
  that trial's score and counts. Grid runs every combination; ``--trials`` is refused there.
- **One trial at a time**, no ``--jobs``: DVC's parallel queue workers are unreliable
  (dvc#10673, dvc#10562), and one trial already uses every core.
- **State** in ``reports/sweep/NAME/``: ``state.json`` (each trial's params, experiment,
  status, score, seconds; written atomically before and after each trial), ``study.journal``
  (Optuna), ``trial-N.log`` (DVC's output), ``ranking.csv`` and ``ranking.md``. NAME is
  ``--name``, or ``sweep-`` and a hash of the method, metric, space and seed, so that the
  same command resumes. Trial N's experiment is ``NAME-N``.
- **Resume.** Rerunning the sweep skips finished trials (grid: matched by their param values)
  and runs an interrupted one again under its name, after clearing what its killed DVC run
  left; if DVC had committed its experiment before the kill, that is read instead. Failed
  trials are not retried unless ``--retry-failed``. A resumed sweep must have the same method,
  metric, space and seed and start from the same commit: trials of another commit ran other
  code or data (uncommitted edits to tracked files, which DVC gives every trial too, are
  not compared: keep them as they were while a sweep is unfinished).
- **Failures.** A failed trial is recorded (ranked last, with its error) and the sweep goes
  on; two failures in a row stop it: then the set-up, not the params, is likely at fault.
- **Budget** (``--budget``): the wall clock of one invocation (a resumed sweep gets it
  again). No trial starts once the budget is spent, nor once what is left is less than the
  median time of the sweep's finished trials; a running trial is never cut short. The
  ranking is written after every trial and when the sweep stops, however it stops.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unfreeze.config.errors import SweepError
from unfreeze.config.params import read_yaml
from unfreeze.io import write_json
from unfreeze.ops import sweep_dvc as dvc
from unfreeze.ops.sweep_plan import (
    check_space,
    next_grid,
    next_optuna,
    open_state,
    sweep_name,
    trial_count,
)
from unfreeze.ops.sweep_rank import comparison_mode, rank, summary, write_ranking
from unfreeze.ops.sweep_space import MISSING, Choice, SweepSpec, get_path

MAX_FAILURES = 2  # failed trials in a row that stop a sweep


@dataclass
class Run:
    """One invocation of a sweep: where, what, its state and its clock."""

    root: Path
    spec: SweepSpec
    state: dict
    folder: Path
    say: Callable[[str], None]
    combos: list[dict] = field(default_factory=list)
    total: int = 0
    search: Any = None  # OptunaSearch for random / tpe
    started: float = field(default_factory=time.monotonic)
    facts: dict = field(default_factory=dict)  # raw params, DVC outputs, copies, env


def budget_stop(budget: float | None, started: float, durations: list[float]) -> str | None:
    """Why no trial may start now, or None. See the module's docstring."""
    if budget is None:
        return None
    left = budget - (time.monotonic() - started)
    if left <= 0:
        return f"the budget ({budget:.0f} s) is spent"
    if durations and left < statistics.median(durations):
        return (f"{left:.0f} s of the budget left, less than the median trial time "
                f"({statistics.median(durations):.0f} s)")
    return None


def run_sweep(root: str | Path, spec: SweepSpec, say: Callable[[str], None] = print
              ) -> list[str]:
    """Run (or resume) the sweep in project ``root``; return the ranking's lines.

    Everything the user gave is checked before the first trial: the space (every trial of a
    grid), the metric, the paths trials need. Raises :class:`SweepError` for bad input, and
    when two trials in a row failed.
    """
    root = Path(root).resolve()
    params_file = root / "params.yaml"
    combos = check_space(params_file, spec.space, spec.method)
    name = sweep_name(spec)
    run = Run(root, spec, {}, root / dvc.SWEEPS / name, say, combos,
              trial_count(spec, combos))
    _gather_facts(run)
    base = dvc.baseline(root)
    with _locked(run.folder):
        run.state = open_state(root, run.folder, spec, base)
        if spec.method != "grid":
            from unfreeze.ops.sweep_plan import OptunaSearch

            run.search = OptunaSearch(run.folder / "study.journal", spec, run.state,
                                      run.total)
        _say_start(run)
        try:
            stop = _loop(run)
        finally:
            _save(run)
            lines = _ranking(run)
            say("\n".join(lines))
        say(f"stopped: {stop}; ranking in {run.folder / 'ranking.md'} and ranking.csv")
    return lines


def _gather_facts(run: Run) -> None:
    """What every trial needs: the workspace's params, DVC's outputs, the copies, the env."""
    raw = read_yaml((run.root / "params.yaml").read_text(encoding="utf-8")) or {}
    outputs = dvc.dvc_outputs(run.root)
    run.facts = {"raw": raw, "outputs": outputs,
                 "tracked": dvc.tracked_folders(run.root),
                 "untracked": dvc.untracked(run.root, outputs), "env": dvc.trial_env(run.root)}
    candidates = run.combos or [{}] + [{p: v} for p, d in run.spec.space.items()
                                      if p in dvc.PATH_PARAMS and isinstance(d, Choice)
                                      for v in d.values]
    for values in candidates:  # refuse a path a trial could not reach, before any trial
        _copies(run, values)


def _copies(run: Run, values: dict) -> list[str]:
    """The ``-C`` paths of a trial with ``values``."""
    paths = {p: values[p] if p in values else get_path(run.facts["raw"], p)
             for p in dvc.PATH_PARAMS}
    paths = {p: None if v is MISSING else v for p, v in paths.items()}
    found = dvc.param_paths(run.root, paths, run.facts["outputs"], run.facts["tracked"])
    return dvc.copy_list(run.facts["untracked"] + found)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One process per sweep: a second one is refused."""
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SweepError(f"sweep {folder.name} is running already (lock {folder / '.lock'} "
                         "is held): wait for it or stop it; running it again then resumes "
                         "it") from None
    try:
        yield
    finally:
        lock.release()


def _say_start(run: Run) -> None:
    trials = run.state["trials"]
    done = sum(t["status"] in ("done", "duplicate") for t in trials)
    again = sum(t["status"] == "pending" for t in trials)
    resumed = f", resuming: {done} done, {again} to run again" if trials else ""
    run.say(f"sweep {run.state['name']}: {run.spec.method}, {run.total} trials, metric "
            f"{run.spec.metric.label}{resumed}")


def _loop(run: Run) -> str:
    """Run trials until none is left, the budget stops them, or two fail in a row."""
    failures = 0
    while True:
        durations = [t["seconds"] for t in run.state["trials"]
                     if t["status"] == "done" and t.get("seconds")]
        stop = budget_stop(run.spec.budget, run.started, durations)
        if stop:
            return stop
        trial = (next_optuna(run.state, run.search, run.total) if run.search
                 else next_grid(run.state, run.combos))
        if trial is None:
            return "every trial has run"
        _save(run)
        _run_trial(run, trial)
        _save(run)
        _ranking(run)
        failures = failures + 1 if trial["status"] == "failed" else 0
        if failures >= MAX_FAILURES:
            raise SweepError(f"{MAX_FAILURES} trials in a row failed, the last one with: "
                             f"{trial['error']}. Fix the cause, then rerun the sweep with "
                             "--retry-failed")


def _run_trial(run: Run, trial: dict) -> None:
    """Run one trial as a DVC experiment (or read the one a killed sweep left) and score it."""
    name, started = trial["experiment"], time.monotonic()
    ref = dvc.exp_ref(run.state["baseline"], name)
    run.say(f"trial {trial['number']} ({name}): "
            + " ".join(f"{k}={v}" for k, v in trial["params"].items()))
    trial["status"] = "running"
    _save(run)
    try:
        if dvc.git(run.root, "rev-parse", "-q", "--verify", ref, check=False) is None:
            dvc.check_trial(run.root / "params.yaml", trial["params"])
            dvc.clear_killed_run(run.root, name)
            dvc.run_experiment(run.root, name, dvc.overrides(run.facts["raw"], trial["params"]),
                               _copies(run, trial["params"]), run.spec.metric.target,
                               run.folder / f"trial-{trial['number']}.log", run.facts["env"])
        trial.update(dvc.read_score(run.root, ref, run.spec.metric),
                     status="done", error=None)
    except (dvc.TrialFailed, SweepError) as exc:
        trial.update(status="failed", error=str(exc))
    trial["seconds"] = round(time.monotonic() - started, 1)
    if run.search:
        run.search.finish(trial)
    score = trial.get("score")
    run.say(f"  failed: {trial['error']}" if trial["status"] == "failed" else
            f"  {run.spec.metric.label} {'–' if score is None else f'{score:.4f}'}"
            f" in {trial['seconds']:.0f} s")


def _save(run: Run) -> None:
    if run.state:
        write_json(run.folder / "state.json", run.state)


def _ranking(run: Run) -> list[str]:
    """Rank the trials, write ranking.csv and ranking.md; the ranking's lines."""
    trials = run.state.get("trials", [])
    mode, note = comparison_mode(run.spec.metric, list(run.spec.space), trials)
    rows = rank(trials, run.spec.metric, mode)
    done = sum(t["status"] == "done" for t in trials)
    lines = summary(rows, run.spec.metric, note,
                    f"# Sweep {run.folder.name} ({run.spec.method}): {done} of {run.total} "
                    "trials done")
    write_ranking(run.folder, rows, lines)
    return lines
