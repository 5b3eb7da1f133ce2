"""The Prefect retrain flow: every DVC stage of the project as one task, in dependency order.

DVC decides what is stale; Prefect runs, retries, limits concurrency and shows the results.
Nothing here configures Prefect at import time: settings come from the environment (the CLI
and ``flows/retrain.py`` set the quiet-offline defaults before importing this module).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from unfreeze.config.params import load_params
from unfreeze.dataset.sources import content_fingerprint, listing_key, resolve_root
from unfreeze.io import read_json, write_json
from unfreeze.ops import promote, snapshot
from unfreeze.ops.dvc_runner import StageFailed, TransientStageError, run_stage, stage_graph

STATE_FILE = Path(".unfreeze/state.json")
LOCK_FILE = Path(".unfreeze/retrain.lock")


def retry_if_transient(task, task_run, state) -> bool:
    """Retry a stage only when it failed for a transient reason (lock, I/O hiccup)."""
    return isinstance(state.result(raise_on_failure=False), TransientStageError)


@task(task_run_name="dvc {stage}", retries=2, retry_delay_seconds=[2, 10, 30],
      retry_condition_fn=retry_if_transient)
def dvc_stage(project: str, stage: str, force: bool = False) -> dict:
    """``dvc --wait-for-lock repro --single-item <stage>`` in the project root."""
    result = run_stage(project, stage, force=force)
    get_run_logger().info("%s: %s in %.1f s", stage, "ran" if result.ran else "up to date",
                          result.seconds)
    return asdict(result)


def _listing_cache_key(context, parameters: dict) -> str:
    return f"unfreeze-source-{parameters['listing']}"


@task(cache_key_fn=_listing_cache_key, persist_result=True)
def fingerprint_source(data_root: str, listing: str) -> str:
    """Content fingerprint of the data source. Cached by its listing (paths, sizes, mtimes):
    an unchanged listing is recognised without reading a single image."""
    get_run_logger().info("hashing the content of %s", data_root)
    return content_fingerprint(data_root)


@task
def promote_model(project: str, production_dir: str, metric: str, min_improvement: float
                  ) -> dict:
    """Promote the final model only if it beats the promoted one on the test metric.

    The exported bundle's model is promoted (its meta.json carries the operating point that
    ``unfreeze predict`` applies); a pipeline without the export stage promotes the finetuned
    model.
    """
    root = Path(project)
    exported = root / "models/export"
    source = exported if (exported / "model.keras").is_file() else root / "models/finetune"
    decision = promote.promote(source, root / snapshot.TEST_METRICS,
                               root / production_dir, metric, min_improvement)
    get_run_logger().info("promotion: %s (%s)", decision.decision, decision.reason)
    return asdict(decision)


@contextlib.contextmanager
def working_copy_lock(root: Path, timeout: float) -> Iterator[None]:
    """One retrain per working copy: a second one waits ``timeout`` seconds, then is refused."""
    from filelock import FileLock, Timeout

    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise RuntimeError(
            f"another retrain is running in {root} (lock {path} is held); this one was not "
            f"started. Wait for it to finish, or raise retrain.lock_timeout to queue.") from None
    try:
        yield
    finally:
        lock.release()


def run_stages(project: Path, graph: dict[str, list[str]], workers: int, retries: int,
               force_prepare: bool) -> list[dict]:
    """One task per stage, upstream futures as ``wait_for``, at most ``workers`` at once.

    Raises :class:`StageFailed` carrying the failed stages' own error text.
    """
    stage_task = dvc_stage.with_options(retries=retries)
    futures = {}
    with ThreadPoolTaskRunner(max_workers=workers) as runner:
        for stage, upstream in graph.items():
            parameters = {"project": str(project), "stage": stage,
                          "force": force_prepare and stage == "prepare"}
            futures[stage] = runner.submit(stage_task, parameters,
                                           wait_for=[futures[u] for u in upstream])
        wait(list(futures.values()))
    results, errors = [], []
    for future in futures.values():
        if future.state.is_completed():
            results.append(future.result())
        elif future.state.is_failed():
            errors.append(str(future.result(raise_on_failure=False)))
    if errors:
        raise StageFailed("; ".join(errors))
    return results


@flow(name="retrain", log_prints=True)
def retrain_flow(project: str = ".") -> dict:
    """Run the project's DVC pipeline stage by stage, publish metrics, promote if better."""
    root = Path(project).resolve()
    params = load_params(root / "params.yaml")  # invalid params fail here, before any stage
    with working_copy_lock(root, params.retrain.lock_timeout):
        before = snapshot.snapshot(root)
        data_root = resolve_root(params.data.source, root)
        fingerprint = fingerprint_source(str(data_root), listing_key(data_root))
        state = _read_state(root)
        changed = state.get("source_fingerprint") not in (None, fingerprint)
        stages = run_stages(root, stage_graph(root), params.retrain.workers,
                            params.retrain.stage_retries, changed)
        _write_state(root, {"source_fingerprint": fingerprint})
        publish_artifacts(root, before, snapshot.snapshot(root), stages)
        decision = promote_model(str(root), params.retrain.production_dir,
                                 params.retrain.metric, params.retrain.min_improvement)
    return {"project": str(root), "source_changed": changed, "stages": stages,
            "promotion": decision}


def publish_artifacts(root: Path, before: dict, after: dict, stages: list[dict]) -> None:
    """Table of test metrics and CV mean ± CI; markdown diff with the previous run."""
    create_table_artifact(snapshot.summary_table(root), key="unfreeze-test-metrics",
                          description="Test metrics and cross-validation mean, std, 95% CI")
    ran = [s["stage"] for s in stages if s["ran"]]
    markdown = (f"## Metrics compared with the previous run\n\nStages run: "
                f"{', '.join(ran) or 'none (everything was up to date)'}\n\n"
                + snapshot.diff_markdown(before, after))
    create_markdown_artifact(markdown, key="unfreeze-metrics-diff",
                             description="dvc metrics diff-style comparison")


def _read_state(root: Path) -> dict:
    path = root / STATE_FILE
    return read_json(path) if path.is_file() else {}


def _write_state(root: Path, state: dict) -> None:
    write_json(root / STATE_FILE, state)
