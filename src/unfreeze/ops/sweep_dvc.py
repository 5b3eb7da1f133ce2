"""One sweep trial as a real DVC experiment: ``dvc exp run --temp`` in a subprocess, the files
it needs copied in, its score read back from the experiment, and what a killed run left.

- **--temp**: each trial runs in DVC's temporary copy of the project (HEAD plus the
  workspace's uncommitted changes to tracked files), so the workspace, its params.yaml and
  its outputs are never touched, even when a sweep is killed; and every trial starts from
  the same baseline. ``dvc exp show`` lists the trial, ``dvc exp apply NAME`` restores it.
- **Untracked files**: DVC's copy holds only what git tracks (dvc#8854), so a trial gets
  ``-C PATH`` for (1) every untracked, not ignored path of the workspace (``git ls-files
  --others --exclude-standard --directory``) and (2) ``data.source`` and ``model.weights``
  when they are paths in the project that git does not track (ignored folders included);
  never DVC outputs (DVC restores those), ``.dvc/``, ``.unfreeze/``, the sweeps' own folder
  or an untracked folder holding one of them. A path is copied from its highest untracked
  folder, so that DVC's copy has its parent folder. A relative path leading out of the
  project is refused: it would not resolve from DVC's copy. Each trial copies them again:
  a large image folder is cheaper tracked by DVC (``dvc add``, linked from its cache) or
  given as an absolute ``data.source``.
- **Decoded images**: the stages of every trial read and fill the project's own decoded-image
  cache (``UNFREEZE_CACHE_DIR`` made absolute), so trials decode each image once.
- **Checking**: a trial's params are the workspace's params.yaml with the trial's values set
  by DVC's own ``-S`` code (on a copy of the file), read back by
  :func:`unfreeze.config.params.load_params` exactly as the stages will: a bad path or value
  is refused before anything runs, naming the param, and so is a value DVC would write in a
  form the params loader reads as something else.
- **The score** is computed from the experiment's cached outputs, read with DVC's file
  system at the experiment's ref: the project's .gitignore keeps ``reports/`` out of git, so
  an experiment's commit holds no metrics file, and cv_report's uncached PNG outputs keep it
  out of DVC's run cache too. CV: cv_report's own aggregate
  (:func:`unfreeze.evaluation.cv_report.build_report`) of the experiment's fold outputs and
  params. Validation: the phase summary in ``models/finetune/meta.json`` (the ``best_val_*``
  that ``reports/finetune/metrics.json`` shows too).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from unfreeze.config.errors import ParamsError, SweepError
from unfreeze.config.params import load_params, read_yaml
from unfreeze.ops.dvc_runner import stage_error_text
from unfreeze.ops.sweep_space import MISSING, Metric, get_path
from unfreeze.runtime import child_env

SWEEPS = Path("reports/sweep")  # one folder per sweep: state, study, logs, ranking
NEVER_COPIED = (".dvc", ".git", ".unfreeze", SWEEPS.as_posix())
PATH_PARAMS = {"data.source": ("elpv",), "model.weights": ("imagenet", None)}
STANDALONE = Path(".dvc/tmp/exps/standalone")  # DVC's --temp copies and their run records
RUNNING = 3  # DVC's TaskStatus: PENDING 0, PREPARING 1, RUNNING 2, SUCCESS 3, …


class TrialFailed(Exception):
    """A trial's DVC experiment failed (not the user's input: the sweep records it)."""


def git(root: Path, *args: str, check: bool = True) -> str | None:
    """``git ARGS`` in ``root``: stdout; None on failure unless ``check`` (then SweepError)."""
    proc = subprocess.run(["git", *args], cwd=root, env=child_env(), capture_output=True,
                          text=True)
    if proc.returncode == 0:
        return proc.stdout
    if check:
        raise SweepError(f"`git {' '.join(args)}` failed in {root}: {proc.stderr.strip()}; "
                         "a sweep needs a git repository with a first commit")
    return None


def override(path: str, value: Any, present: bool = True) -> str:
    """The ``dvc exp run -S`` text setting ``path`` to ``value`` (``+`` adds a missing key)."""
    return f"{'' if present else '+'}{path}={hydra_value(value)}"


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (which ``-S`` parses): strings quoted."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides(raw: dict, values: dict[str, Any]) -> list[str]:
    """The ``-S`` texts of one trial, against the workspace's parsed params ``raw``."""
    return [override(path, value, get_path(raw, path) is not MISSING)
            for path, value in values.items()]


def check_trial(params_file: Path, values: dict[str, Any]) -> None:
    """Refuse ``values`` unless params.yaml, set the way ``dvc exp run -S`` sets them, loads.

    The error names the params and says why.
    """
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    raw = read_yaml(params_file.read_text(encoding="utf-8")) or {}
    texts = overrides(raw, values)
    shown = " ".join(f"-S {t}" for t in texts)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copyfile(params_file, copy)
        try:
            apply_overrides(copy, texts)
            load_params(copy)
        except InvalidArgumentError as exc:
            raise SweepError(f"{shown}: DVC cannot set it ({exc.__cause__ or exc})") from None
        except ParamsError as exc:
            reason = str(exc).removeprefix(f"{copy}: ")
            raise SweepError(f"{shown}: {reason}") from None


def baseline(root: Path) -> str:
    """The commit the trials start from (HEAD)."""
    return git(root, "rev-parse", "HEAD").strip()


def exp_ref(base: str, name: str) -> str:
    """The git ref DVC gives experiment ``name`` of baseline ``base``."""
    return f"refs/exps/{base[:2]}/{base[2:]}/{name}"


def experiments(root: Path, base: str) -> list[str]:
    """Names of the experiments of baseline ``base``."""
    out = git(root, "for-each-ref", "--format=%(refname)", exp_ref(base, ""))
    return [line.rsplit("/", 1)[-1] for line in out.splitlines()]


def dvc_outputs(root: Path) -> list[str]:
    """The project's DVC outputs, as paths relative to ``root``."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [Path(os.path.relpath(o.fs_path, root)).as_posix() for o in repo.index.outs]


def _inside(path: str, folders: list[str] | tuple[str, ...]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def untracked(root: Path, outputs: list[str]) -> list[str]:
    """Untracked, not ignored paths a trial may need (whole folders where git shows them so;
    not one that is, or holds, a DVC output or a folder of :data:`NEVER_COPIED`)."""
    out = git(root, "ls-files", "--others", "--exclude-standard", "--directory", "-z")
    paths = [p.rstrip("/") for p in out.split("\0") if p]
    skip = [*NEVER_COPIED, *outputs]
    return [p for p in paths if not _inside(p, skip) and not any(_inside(s, [p]) for s in skip)]


def tracked_folders(root: Path) -> set[str]:
    """Every folder that holds a git-tracked file (so exists in DVC's copy)."""
    folders = {"."}
    for line in git(root, "ls-files", "-z").split("\0"):
        folders.update(p.as_posix() for p in Path(line).parents)
    return folders


def param_paths(root: Path, params: dict, outputs: list[str], tracked: set[str]) -> list[str]:
    """``data.source`` / ``model.weights`` paths a trial's copy lacks: what to copy for them.

    ``params`` maps dotted paths to the trial's values of those two params.
    """
    root, copies = root.resolve(), []
    for key, value in params.items():
        if value in PATH_PARAMS[key] or Path(str(value)).is_absolute():
            continue
        target = (root / str(value)).resolve()
        if not target.is_relative_to(root):
            raise SweepError(f"{key}: {value!r} leads out of the project ({target}); trials "
                             "run in DVC's temporary copy of the project, where that relative "
                             "path would not resolve: give it as an absolute path")
        rel = Path(os.path.relpath(target, root))
        if rel.as_posix() in tracked or _inside(rel.as_posix(), [*NEVER_COPIED, *outputs]):
            continue
        while rel.parent.as_posix() not in tracked:
            rel = rel.parent
        if target.exists() and git(root, "ls-files", "--error-unmatch", "--", rel.as_posix(),
                                   check=False) is None:
            copies.append(rel.as_posix())
    return copies


def copy_list(paths: list[str]) -> list[str]:
    """``paths`` without repeats and without paths inside another one (copied with it)."""
    unique = sorted(set(paths))
    return [p for p in unique if not _inside(p, [q for q in unique if q != p])]


def trial_env(root: Path) -> dict[str, str]:
    """The trial's environment: quiet, no analytics, the project's decoded-image cache."""
    from unfreeze.training.cache import CACHE_ENV, DEFAULT_CACHE_DIR

    env = child_env()
    cache = env.get(CACHE_ENV, DEFAULT_CACHE_DIR)
    env[CACHE_ENV] = str(root / cache) if cache else ""
    return env


def run_experiment(root: Path, name: str, overrides: list[str], copies: list[str],
                   target: str, log: Path, env: dict[str, str]) -> None:
    """``dvc exp run --temp --name NAME -S … -C … TARGET``, output to ``log``."""
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", name,
           *(a for o in overrides for a in ("-S", o)), *(a for c in copies for a in ("-C", c)),
           target]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd[1:]) + "\n")
        fh.flush()
        code = subprocess.run(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT
                              ).returncode
    if code != 0:
        text = stage_error_text(log.read_text(encoding="utf-8", errors="replace"))
        raise TrialFailed(" | ".join(dict.fromkeys(text.split(" | "))) + f" (log: {log})")


def read_score(root: Path, ref: str, metric: Metric) -> dict:
    """The trial's score from experiment ``ref``: mean, interval and per-fold values (CV)."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(root), rev=ref)
    try:
        if metric.kind == "val":
            meta = json.loads(fs.read_text("models/finetune/meta.json"))
            score = meta.get("training", {}).get(f"best_val_{metric.name}")
            if score is None:
                raise KeyError(f"models/finetune/meta.json has no training.best_val_"
                               f"{metric.name}")
            return {"score": score}
        return _cv_score(fs, metric)
    except (OSError, ValueError, KeyError) as exc:
        raise TrialFailed(f"experiment {ref.rsplit('/', 1)[-1]}: cannot read its "
                          f"{metric.label} ({type(exc).__name__}: {exc})") from exc


def _cv_score(fs, metric: Metric) -> dict:
    """cv_report's aggregate of the experiment's folds, from its cached fold outputs and its
    params (its metrics file is not kept: see the module's docstring)."""
    from unfreeze.evaluation.cv_report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "params.yaml").write_text(fs.read_text("params.yaml"), encoding="utf-8")
        params = load_params(folder / "params.yaml")
        dirs = [folder / f"fold_{k}" for k in range(params.cv.folds)]
        for k, local in enumerate(dirs):
            fs.get(f"reports/cv/fold_{k}", str(local), recursive=True)
        report = build_report(dirs, params.cv, params.evaluate)[0]
    agg = report["metrics"][metric.name]
    return {"score": agg["mean"], "ci95": agg["ci95"], "values": agg["values"],
            "fold_sizes": report["per_fold_n_heldout"]}


def clear_killed_run(root: Path, name: str) -> None:
    """Remove what a killed ``dvc exp run --temp --name NAME`` left: its temporary copy and
    its run record (else ``dvc exp show`` lists it as running for ever)."""
    base = root / STANDALONE
    for info in base.glob("run/*/*.run"):
        try:
            record = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("name") != name or record.get("status", RUNNING) >= RUNNING:
            continue
        copy = Path(record.get("root_dir", ""))
        if copy.parent == base:
            shutil.rmtree(copy, ignore_errors=True)
        shutil.rmtree(info.parent, ignore_errors=True)
