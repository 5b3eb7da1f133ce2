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

import pyarrow.compute as pc
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from unfreeze.config.params import RetrainParams, load_params
from unfreeze.dataset.rows import is_split
from unfreeze.io import read_json, read_parquet
from unfreeze.ops import champion, promote, snapshot
from unfreeze.ops.dvc_runner import StageFailed, TransientStageError, run_stage, stage_graph

LOCK_FILE = Path(".unfreeze/retrain.lock")
SOURCE_FILE = Path("data/source.json")


def retry_if_transient(task, task_run, state) -> bool:
    """Retry a stage only when it failed for a transient reason (lock, I/O hiccup)."""
    return isinstance(state.result(raise_on_failure=False), TransientStageError)


@task(task_run_name="dvc {stage}", retries=2, retry_delay_seconds=[2, 10, 30],
      retry_condition_fn=retry_if_transient)
def dvc_stage(project: str, stage: str) -> dict:
    """``dvc --wait-for-lock repro --single-item <stage>`` in the project root."""
    result = run_stage(project, stage)
    get_run_logger().info("%s: %s in %.1f s", stage, "ran" if result.ran else "up to date",
                          result.seconds)
    return asdict(result)


@task
def promote_model(project: str, retrain: RetrainParams) -> dict:
    """Score the promoted model on the new test images, compare both image by image, and
    promote the new model only if ``retrain.rule`` says it is better.

    The exported bundle's model is promoted (its meta.json carries the operating point that
    ``unfreeze predict`` applies); a pipeline without the export stage promotes the finetuned
    model.
    """
    root = Path(project)
    exported = root / "models/export"
    source = exported if (exported / "model.keras").is_file() else root / "models/finetune"
    rule = promote.Rule(retrain.metric, retrain.min_improvement, retrain.rule,
                        retrain.on_incomparable)
    trained_on = None  # the content hashes of train + val, kept with the release
    if (root / champion.SPLITS).is_file():
        splits = read_parquet(root / champion.SPLITS)
        trained_on = splits.filter(pc.invert(is_split(splits, "test")))["sha256"].to_pylist()
    decision = promote.promote(
        source, root / snapshot.TEST_METRICS, root / retrain.production_dir, rule,
        compare=lambda current: champion.compare_on_test(root, source, current, retrain),
        trained_on=trained_on)
    get_run_logger().info("promotion: %s (%s)", decision.decision, decision.reason)
    create_markdown_artifact(promotion_markdown(asdict(decision)), key="unfreeze-promotion",
                             description="Champion vs challenger on the same test images")
    return asdict(decision)


def promotion_markdown(d: dict) -> str:
    """The decision as a small markdown table: both models on the same images, the interval
    of the difference, McNemar's p, the rule and the reason."""
    def fmt(v, spec=".4f"):
        return "—" if v is None else format(v, spec)

    ci = (f"[{fmt(d['ci95_low'], '+.4f')}, {fmt(d['ci95_high'], '+.4f')}]"
          if d.get("ci95_low") is not None else "—")
    diff = (d["new_value"] - d["current_value"]
            if d.get("new_value") is not None and d.get("current_value") is not None else None)
    return (f"## Promotion: {d['decision']}\n\n"
            "| metric | images | new | promoted | difference | 95% CI | McNemar p | rule |\n"
            "|---|---|---|---|---|---|---|---|\n"
            f"| {d['metric']} | {d.get('n') or '—'} | {fmt(d['new_value'])} | "
            f"{fmt(d['current_value'])} | {fmt(diff, '+.4f')} | {ci} | "
            f"{fmt(d.get('mcnemar_p'), '.3g')} | {d.get('rule') or '—'} "
            f"(min_improvement {d['min_improvement']}) |\n\n"
            f"{d['reason']}\n\nTest split fingerprint: `{d.get('test_fingerprint') or '—'}`\n")


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


def run_stages(project: Path, graph: dict[str, list[str]], workers: int, retries: int
               ) -> list[dict]:
    """One task per stage, upstream futures as ``wait_for``, at most ``workers`` at once.

    Raises :class:`StageFailed` carrying the failed stages' own error text.
    """
    stage_task = dvc_stage.with_options(retries=retries)
    futures = {}
    with ThreadPoolTaskRunner(max_workers=workers) as runner:
        for stage, upstream in graph.items():
            parameters = {"project": str(project), "stage": stage}
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
        # the `source` stage fingerprints the data wherever it lives, as in a plain `dvc
        # repro`: `prepare` runs when the images changed, and only then
        previous = _fingerprint(root)
        stages = run_stages(root, stage_graph(root), params.retrain.workers,
                            params.retrain.stage_retries)
        changed = previous is not None and previous != _fingerprint(root)
        publish_artifacts(root, before, snapshot.snapshot(root), stages)
        decision = promote_model(str(root), params.retrain)
    return {"project": str(root), "source_changed": changed, "stages": stages,
            "warnings": snapshot.warnings(root), "promotion": decision}


def publish_artifacts(root: Path, before: dict, after: dict, stages: list[dict]) -> None:
    """Table of test metrics and CV mean ± CI; markdown diff with the previous run."""
    create_table_artifact(snapshot.summary_table(root), key="unfreeze-test-metrics",
                          description="Test metrics and cross-validation mean, std, 95% CI")
    ran = [s["stage"] for s in stages if s["ran"]]
    caveats = "".join(f"> **Warning:** {w}\n>\n" for w in snapshot.warnings(root))
    markdown = (caveats + f"## Metrics compared with the previous run\n\nStages run: "
                f"{', '.join(ran) or 'none (everything was up to date)'}\n\n"
                + snapshot.diff_markdown(before, after))
    create_markdown_artifact(markdown, key="unfreeze-metrics-diff",
                             description="dvc metrics diff-style comparison")


def _fingerprint(root: Path) -> str | None:
    """The data fingerprint the `source` stage wrote last (None before its first run)."""
    path = root / SOURCE_FILE
    return read_json(path).get("fingerprint") if path.is_file() else None
