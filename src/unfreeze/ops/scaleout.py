"""Cross-validation folds spread over machines: Prefect work pool workers and a DVC remote.

No shared filesystem is assumed. The machines share three services:
- a git remote: the coordinator's commit, which every worker checks out (code, params);
- a DVC remote (S3, GCS, Azure, SSH or a local folder): the data a fold needs and the
  outputs it produces travel through ``dvc push`` / ``dvc pull``;
- a Prefect server: the fold runs, and each fold's DVC lock entry as an artifact.

Roles:
- a **worker** runs ``unfreeze worker --pool POOL`` in its own clone of the project, which
  polls the work pool and runs :func:`fold_flow` there (``UNFREEZE_WORKDIR`` is the clone);
- the **coordinator**, in the main working copy, runs :func:`remote_cv_flow`
  (``unfreeze remote-cv --deployment unfreeze-fold/NAME``): it reproduces the stages up to
  ``folds`` and pushes their outputs, starts one deployment run per active fold, and then, as
  the aggregate step, writes the folds' lock entries, pulls their outputs and runs
  ``cv_report``, which gives the report a local ``dvc repro cv_report`` gives.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from unfreeze.config.errors import ScaleOutError
from unfreeze.config.params import MAX_FOLDS, load_params
from unfreeze.io import atomic_path
from unfreeze.ops.dvc_runner import run_stage, stage_error_text, stage_graph
from unfreeze.runtime import child_env

WORKDIR_ENV = "UNFREEZE_WORKDIR"
FOLD_FLOW = "unfreeze-fold"
UPSTREAM = "folds"  # a fold needs this stage's outputs and those of the stages before it
ARTIFACT_KEY = "unfreeze-fold-{fold}"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
NO_REMOTE = "No default remote set"  # what `dvc remote default` prints when there is none


def command(cwd: Path, *args: str, what: str,
            allowed: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``args`` in ``cwd``; raise naming ``what`` with its error text when it fails,
    unless its output contains one of the ``allowed`` messages (the caller handles those)."""
    proc = subprocess.run(args, cwd=cwd, env=child_env(), capture_output=True, text=True)
    output = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0 and not any(text in output for text in allowed):
        raise ScaleOutError(f"{what} failed in {cwd}: {stage_error_text(output)}")
    return proc


def dvc(cwd: Path, *args: str) -> str:
    """``python -m dvc ARGS`` in ``cwd``: its stdout, or a ScaleOutError with its error text."""
    return command(cwd, sys.executable, "-m", "dvc", *args,
                   what=f"`dvc {' '.join(args)}`").stdout


def git(cwd: Path, *args: str) -> str:
    """``git ARGS`` in ``cwd``: its stdout, or a ScaleOutError with its error text."""
    return command(cwd, "git", *args, what=f"`git {' '.join(args)}`").stdout


def _lock_address(root: Path, stage: str) -> tuple[Path, str]:
    """The lock file holding ``stage`` (an address as `dvc repro` takes it: ``name`` in
    ``dvc.yaml``, or ``path/dvc.yaml:name``) and the stage's name in that file."""
    dvcfile, _, name = stage.rpartition(":")
    return root / Path(dvcfile or "dvc.yaml").with_suffix(".lock"), name


def lock_entries(root: Path, stages: list[str]) -> dict[str, dict]:
    """The lock entries of ``stages`` (what each ran on and produced, by hash), by address."""
    out = {}
    for stage in stages:
        path, name = _lock_address(root, stage)
        lock = (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}
        if name not in lock.get("stages", {}):
            raise ScaleOutError(f"{path} has no entry for {stage}: the stage has not run in "
                                "this working copy")
        out[stage] = lock["stages"][name]
    return out


def write_lock_entries(root: Path, entries: dict[str, dict]) -> None:
    """Put ``entries`` (by stage address) into their lock files (atomically), keeping every
    other entry."""
    by_file: dict[Path, dict[str, dict]] = {}
    for stage, entry in entries.items():
        path, name = _lock_address(root, stage)
        by_file.setdefault(path, {})[name] = entry
    for path, found in by_file.items():
        lock = (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}
        lock.setdefault("schema", "2.0")
        lock.setdefault("stages", {}).update(found)
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(lock, sort_keys=False))


def committed_rev(root: Path) -> str:
    """The commit workers check out; refuses when tracked files differ from it."""
    changed = [line[3:] for line in git(root, "status", "--porcelain",
                                        "--untracked-files=no").splitlines()
               if Path(line[3:]).name != "dvc.lock"]
    if changed:
        raise ScaleOutError(f"{root}: {', '.join(changed)} changed since the last commit. "
                            "Workers check out a commit: commit (and push to the git remote "
                            "the workers fetch from), then rerun")
    return git(root, "rev-parse", "HEAD").strip()


def check_remote(root: Path) -> str:
    """The default DVC remote's name; a clear error when the project has none."""
    proc = command(root, sys.executable, "-m", "dvc", "remote", "default",
                   what="`dvc remote default`", allowed=(NO_REMOTE,))
    if proc.returncode != 0:  # DVC said there is none; any other failure raised above
        raise ScaleOutError(f"{root}: no default DVC remote, and the workers exchange data and "
                            "outputs through one: `dvc remote add -d store s3://BUCKET/PATH` "
                            "(or gs://, azure://, ssh://, a shared folder), commit .dvc/config "
                            "and push it")
    return proc.stdout.strip()


def tracked_data(root: Path) -> list[str]:
    """``.dvc`` files in git (e.g. ``data/images.dvc``): data the stages read, to pull too."""
    return [p for p in git(root, "ls-files", "*.dvc").splitlines() if p]


def upstream_stages(root: Path) -> list[str]:
    """``folds`` and every stage before it, in execution order."""
    graph = stage_graph(root)
    needed, todo = set(), [UPSTREAM]
    while todo:
        stage = todo.pop()
        if stage not in needed:
            needed.add(stage)
            todo += graph[stage]
    return [s for s in graph if s in needed]


def worker_clone() -> Path:
    """The worker's clone of the project, from ``UNFREEZE_WORKDIR``."""
    value = os.environ.get(WORKDIR_ENV)
    if not value or not (Path(value) / "dvc.yaml").is_file():
        raise ScaleOutError(f"{WORKDIR_ENV}={value!r} is not a clone of the project (no "
                            "dvc.yaml): start workers with `unfreeze worker --pool POOL` "
                            "inside their clone")
    return Path(value).resolve()


@flow(name=FOLD_FLOW)
def fold_flow(rev: str, fold: int, upstream: dict[str, dict]) -> dict:
    """On a worker: check out ``rev`` in its clone, pull what fold ``fold`` needs, run the
    ``cv@fold`` stage with DVC, push its outputs, publish its lock entry as an artifact."""
    log = get_run_logger()
    clone = worker_clone()
    git(clone, "fetch", "--quiet", "origin")
    try:
        git(clone, "checkout", "--quiet", "--force", "--detach", rev)
    except ScaleOutError as exc:
        raise ScaleOutError(f"commit {rev} is not in this worker's git remote: push it to the "
                            f"remote the workers fetch from ({exc})") from None
    write_lock_entries(clone, upstream)
    dvc(clone, "pull", "--quiet", *upstream, *tracked_data(clone))
    stage = f"cv@{fold}"
    started = time.perf_counter()
    result = run_stage(clone, stage)
    dvc(clone, "push", "--quiet", stage)
    done = {"fold": fold, "worker": f"{socket.gethostname()}:{clone}", "ran": result.ran,
            "seconds": round(time.perf_counter() - started, 2),
            "lock": lock_entries(clone, [stage])[stage]}
    log.info("%s %s in %s in %.1f s; outputs pushed", stage,
             "ran" if result.ran else "was up to date", done["worker"], done["seconds"])
    create_markdown_artifact(
        key=ARTIFACT_KEY.format(fold=fold),
        markdown=f"## {stage} at {rev[:12]}\n\n```json\n{json.dumps(done)}\n```\n",
        description=f"{stage}: the worker that ran it and its dvc.lock entry (inputs and "
                    "outputs by hash)")
    return {k: v for k, v in done.items() if k != "lock"}


def deploy_folds(pool: str, name: str) -> str:
    """Deploy :func:`fold_flow` to work pool ``pool`` (a process pool is created if missing);
    return the deployment's full name. Workers import the flow by module path, from the
    ``unfreeze`` installed in their environment: no code is uploaded."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import EntrypointType
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   base_job_template=template))
    fold_flow.deploy(name=name, work_pool_name=pool, build=False, push=False,
                     entrypoint_type=EntrypointType.MODULE_PATH, print_next_steps=False,
                     ignore_warnings=True)
    return f"{FOLD_FLOW}/{name}"


def read_fold(flow_run_id, fold: int) -> dict:
    """What a fold run published as its artifact: worker, seconds and ``lock`` entry."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    key = ARTIFACT_KEY.format(fold=fold)
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    if not found:
        raise ScaleOutError(f"fold run {flow_run_id} published no {key} artifact")
    text = found[0].data
    return json.loads(text[text.index("```json") + 7:text.rindex("```")])


def wait_for_runs(run_ids: dict[int, object], timeout: float) -> dict[int, object]:
    """Poll the fold runs until each is final; their final flow runs, by fold."""
    from prefect.client.orchestration import get_client

    deadline, final = time.monotonic() + timeout, {}
    with get_client(sync_client=True) as client:
        while len(final) < len(run_ids):
            for fold, run_id in run_ids.items():
                if fold not in final:
                    run = client.read_flow_run(run_id)
                    if run.state and run.state.type.value in FINAL:
                        final[fold] = run
            if len(final) < len(run_ids):
                if time.monotonic() > deadline:
                    waiting = sorted(set(run_ids) - set(final))
                    raise ScaleOutError(f"folds {waiting} did not finish within {timeout} s: "
                                        "are workers polling the deployment's work pool?")
                time.sleep(2)
    return final


@flow(name="unfreeze-remote-cv")
def remote_cv_flow(project: str, deployment: str, timeout: float = 24 * 3600) -> dict:
    """Cross-validate with the folds run by the workers of ``deployment``'s work pool.

    The coordinator's working copy must be committed (and pushed) and have a default DVC
    remote. Returns which worker ran which fold and the stages run here.
    """
    from prefect.deployments import run_deployment

    log = get_run_logger()
    root = Path(project).resolve()
    params = load_params(root / "params.yaml")
    rev = committed_rev(root)
    check_remote(root)
    here = [run_stage(root, s) for s in upstream_stages(root)]
    upstream = lock_entries(root, [s.stage for s in here])
    dvc(root, "push", "--quiet", *upstream, *tracked_data(root))
    active = list(range(params.cv.folds))
    runs = {k: run_deployment(deployment, parameters={"rev": rev, "fold": k,
                                                      "upstream": upstream},
                              flow_run_name=f"cv@{k}-{rev[:8]}", timeout=0).id
            for k in active}
    log.info("started %d fold runs of %s at %s", len(runs), deployment, rev[:12])
    inactive = [f"cv@{k}" for k in range(params.cv.folds, MAX_FOLDS)]
    if inactive:  # markers only (no training): here, while the workers train
        dvc(root, "repro", "--quiet", "--single-item", *inactive)
    final = wait_for_runs(runs, timeout)
    failed = {k: f"{r.state.type.value}: {r.state.message}" for k, r in final.items()
              if r.state.type.value != "COMPLETED"}
    if failed:
        raise ScaleOutError("fold runs failed: " + "; ".join(
            f"cv@{k} ({final[k].id}) {m}" for k, m in failed.items()))
    return _aggregate(root, {k: read_fold(run_id, k) for k, run_id in runs.items()}, runs, here)


def _aggregate(root: Path, folds: dict[int, dict], runs: dict[int, object], here: list) -> dict:
    """Write the folds' lock entries, pull their outputs, check them, run ``cv_report``."""
    stages = [f"cv@{k}" for k in folds]
    write_lock_entries(root, {f"cv@{k}": fold["lock"] for k, fold in folds.items()})
    dvc(root, "pull", "--quiet", *stages)
    stale = json.loads(dvc(root, "status", "--json", *stages) or "{}")
    if stale:
        raise ScaleOutError(f"the workers' fold outputs do not match this working copy "
                            f"({', '.join(sorted(stale))} changed: {stale}); were the workers' "
                            "code and params the committed ones?")
    report = run_stage(root, "cv_report")
    rows = [{k: v for k, v in fold.items() if k != "lock"} | {"flow_run": str(runs[k])}
            for k, fold in folds.items()]
    create_table_artifact(rows, key="unfreeze-remote-cv",
                          description="Which worker ran which cross-validation fold")
    return {"project": str(root), "folds": rows,
            "stages_here": [s.stage for s in [*here, report] if s.ran]}
