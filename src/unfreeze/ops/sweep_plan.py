"""The plan of a sweep: its name and state, and which trial runs next — every combination
of a grid, or an Optuna study's proposals for random and TPE — so that a rerun resumes.

The state (``reports/sweep/NAME/state.json``) is the record of the trials: params, DVC
experiment, status (``pending`` → ``running`` → ``done`` | ``failed``; ``duplicate``: a
proposal equal to a finished trial, told its score and not run), score and seconds. Random
and TPE sweeps also keep their Optuna study in ``study.journal`` (a journal file) and bring
it in step with the state when they start (:meth:`OptunaSearch.reconcile`): a killed sweep
may have finished a trial the study was not told of, or asked for one it never recorded.
Choices go to Optuna as their JSON text (a choice may be a list, such as ``cv.phases:
[head]``, which Optuna's categorical distribution cannot hold).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from unfreeze.config.errors import SweepError
from unfreeze.io import read_json
from unfreeze.ops.sweep_dvc import check_trial, experiments
from unfreeze.ops.sweep_space import Choice, Range, Space, SweepSpec, grid

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_TRIALS = 10


def canonical(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value, sort_keys=True))


def identity(spec: SweepSpec) -> dict:
    """What must not change when a sweep resumes."""
    space = {p: {"values": list(d.values)} if isinstance(d, Choice) else
             {"low": d.low, "high": d.high, "log": d.log, "int": d.integer}
             for p, d in spec.space.items()}
    return canonical({"method": spec.method, "metric": spec.metric.label, "seed": spec.seed,
                      "space": space})


def sweep_name(spec: SweepSpec) -> str:
    """``--name``, checked; or ``sweep-<hash of the identity>``."""
    if spec.name is None:
        text = json.dumps(identity(spec), sort_keys=True)
        return "sweep-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    if not NAME.match(spec.name) or spec.name.endswith(".lock") or ".." in spec.name:
        raise SweepError(f"--name {spec.name!r}: use letters, digits, '.', '_' and '-' (up to "
                         "63, starting with a letter or digit): it names DVC experiments")
    return spec.name


def trial_count(spec: SweepSpec, combos: list[dict]) -> int:
    """How many trials the sweep proposes in all."""
    if spec.method not in ("grid", "random", "tpe"):
        raise SweepError(f"--method {spec.method!r}: give grid, random or tpe")
    if spec.method == "grid":
        if spec.trials is not None:
            raise SweepError(f"--trials {spec.trials}: grid runs every combination "
                             f"({len(combos)}); --trials is for --method random or tpe")
        return len(combos)
    trials = DEFAULT_TRIALS if spec.trials is None else spec.trials
    if trials < 1:
        raise SweepError(f"--trials {trials}: give at least 1")
    return trials


def check_space(params_file: Path, space: Space, method: str) -> list[dict[str, Any]]:
    """Check the space before anything runs; the grid's combinations (empty otherwise).

    Grid: every combination. Random/TPE: each choice and each range's ends, one param at a
    time (each sampled trial is checked again before it runs).
    """
    if method == "grid":
        combos = grid(space)
        for combo in combos:
            check_trial(params_file, combo)
        return combos
    for path, dim in space.items():
        for value in dim.values if isinstance(dim, Choice) else (dim.low, dim.high):
            check_trial(params_file, {path: value})
    return []


def open_state(root: Path, folder: Path, spec: SweepSpec, base: str) -> dict:
    """The sweep's state: a new one, or the saved one made ready to resume."""
    path, name = folder / "state.json", folder.name
    ident = identity(spec)
    if not path.is_file():
        taken = [e for e in experiments(root, base) if e.startswith(f"{name}-")]
        if taken:
            raise SweepError(f"experiments {', '.join(taken)} exist but {path} does not (its "
                             "folder was removed?): choose another --name, or remove them "
                             f"(`dvc exp remove {' '.join(taken)}`)")
        return {"name": name, "identity": ident, "baseline": base, "trials": []}
    state = read_json(path)
    if state.get("identity") != ident:
        raise SweepError(f"{path} holds sweep {name} with another method, metric, space or "
                         f"seed ({state.get('identity')}): choose another --name, or remove "
                         f"{folder} to start it again")
    if state.get("baseline") != base:
        raise SweepError(f"sweep {name} started at commit {state.get('baseline')}, HEAD is now "
                         f"{base}: its trials ran other code or data. Check out that commit "
                         "to resume it, or start a new sweep with another --name")
    for trial in state["trials"]:
        if trial["status"] == "running" or (trial["status"] == "failed"
                                            and spec.retry_failed):
            trial["status"] = "pending"
    return state


def new_trial(state: dict, params: dict, optuna: int | None = None) -> dict:
    """Append trial N (experiment NAME-N) with ``params`` to the state."""
    number = len(state["trials"]) + 1
    trial = {"number": number, "experiment": f"{state['name']}-{number}",
             "params": canonical(params), "status": "pending", "optuna": optuna}
    state["trials"].append(trial)
    return trial


def pending(state: dict) -> dict | None:
    """The first trial to run again (interrupted, or failed with --retry-failed)."""
    return next((t for t in state["trials"] if t["status"] == "pending"), None)


def next_grid(state: dict, combos: list[dict]) -> dict | None:
    """The next grid trial: a pending one, else the first combination not tried yet."""
    trial = pending(state)
    if trial is not None:
        return trial
    tried = [t["params"] for t in state["trials"]]
    combo = next((c for c in map(canonical, combos) if c not in tried), None)
    return None if combo is None else new_trial(state, combo)


def next_optuna(state: dict, search: OptunaSearch, total: int) -> dict | None:
    """The next random / TPE trial: a pending one, else a new proposal; None once ``total``
    were proposed. A proposal equal to a finished trial is not run again: it is told that
    trial's score, and counts."""
    trial = pending(state)
    if trial is not None:
        search.reopen(trial)
        return trial
    while len(state["trials"]) < total:
        params, number = search.ask()
        trial = new_trial(state, params, optuna=number)
        twin = next((t for t in state["trials"] if t["status"] == "done"
                     and t["params"] == trial["params"]), None)
        if twin is None:
            return trial
        trial.update(status="duplicate", experiment=None, duplicate_of=twin["number"],
                     score=twin.get("score"))
        search.finish(trial)
    return None


def distributions(space: Space) -> dict:
    """Optuna distributions of the search space."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out = {}
    for path, dim in space.items():
        if isinstance(dim, Choice):
            out[path] = CategoricalDistribution([json.dumps(v) for v in dim.values])
        elif dim.integer:
            out[path] = IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        else:
            out[path] = FloatDistribution(dim.low, dim.high, log=dim.log)
    return out


class OptunaSearch:
    """Proposes the trials of a random or TPE sweep and is told their scores."""

    def __init__(self, journal: Path, spec: SweepSpec, state: dict, total: int) -> None:
        """Open (or create) the study in ``journal`` and bring it in step with ``state``."""
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        seed = spec.seed + len(state["trials"])  # a restart must not redraw the first trials
        sampler = (optuna.samplers.TPESampler(seed=seed,
                                              n_startup_trials=min(10, max(2, total // 3)))
                   if spec.method == "tpe" else optuna.samplers.RandomSampler(seed=seed))
        self.study = optuna.create_study(
            study_name=state["name"], storage=JournalStorage(JournalFileBackend(str(journal))),
            sampler=sampler, direction="maximize" if spec.metric.maximize else "minimize",
            load_if_exists=True)
        self.space: Space = spec.space
        self.reconcile(state)

    def _running(self, number: int | None) -> bool:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        return number is not None and number < len(trials) and \
            trials[number].state == TrialState.RUNNING

    def reconcile(self, state: dict) -> None:
        """Tell the study what a killed sweep could not: trials the state finished, and
        proposals the state never recorded (failed)."""
        from optuna.trial import TrialState

        known = {t.get("optuna") for t in state["trials"]}
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in known:
                self.study.tell(trial.number, state=TrialState.FAIL)
        for trial in state["trials"]:
            if trial["status"] != "pending":
                self.finish(trial)

    def encode(self, params: dict) -> dict:
        """Trial params as Optuna holds them (choices as JSON text)."""
        return {p: json.dumps(v) if isinstance(self.space[p], Choice) else v
                for p, v in params.items()}

    def decode(self, params: dict) -> dict:
        """Optuna's params as trial params."""
        return {p: json.loads(v) if isinstance(self.space[p], Choice) else
                (int(v) if isinstance(self.space[p], Range) and self.space[p].integer else v)
                for p, v in params.items()}

    def ask(self) -> tuple[dict, int]:
        """A new proposal: its params and its Optuna trial number."""
        asked = self.study.ask(distributions(self.space))
        return self.decode(asked.params), asked.number

    def reopen(self, trial: dict) -> None:
        """Make a trial that runs again an open Optuna trial (a new one with its params when
        its own was closed, e.g. failed)."""
        if not self._running(trial.get("optuna")):
            self.study.enqueue_trial(self.encode(trial["params"]))
            trial["optuna"] = self.ask()[1]

    def finish(self, trial: dict) -> None:
        """Tell the study a trial's score (failed, or no score: a failed Optuna trial)."""
        from optuna.trial import TrialState

        number: Any = trial.get("optuna")
        if not self._running(number):
            return
        if trial["status"] in ("done", "duplicate") and trial.get("score") is not None:
            self.study.tell(number, trial["score"])
        else:
            self.study.tell(number, state=TrialState.FAIL)
