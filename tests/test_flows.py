"""The Prefect retrain flow for real: a temporary Prefect API, real DVC, a tiny project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from conftest import make_project, project_env, set_params, stop, wait_until

TINY = {
    "data": {"source": "data/images"},
    "split": {"test": 0.25, "val": 0.25},
    "model": {"image_size": 75, "weights": None, "hidden_units": 8},
    "head": {"epochs": 1, "batch_size": 8},
    "finetune": {"epochs": 1, "batch_size": 8},
    "train": {"xla": False},  # XLA compiles for ~23 s per phase; tested in test_recipe
    "cv": {"folds": 2, "phases": ["head"]},
    "retrain": {"workers": 2},
    # the bundle with its operating point only; the formats are tested in test_pipeline
    "export": {"savedmodel": False, "tflite": False, "quantize": False},
}
MAIN = {"prepare", "split", "head", "finetune", "evaluate", "export", "report"}
CV = {"folds", "cv_report", *(f"cv@{k}" for k in range(10))}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("flowproject"), TINY, {"cat": 12, "dog": 12})


def ran(result: dict) -> set[str]:
    return {s["stage"] for s in result["stages"] if s["ran"]}


def history(project: Path) -> list[dict]:
    return pq.read_table(project / "production/history.parquet").to_pylist()


def task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))


def test_first_retrain_runs_every_stage_and_promotes(prefect_harness, project, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(project / "src"))
    from unfreeze.retrain import retrain_flow

    result = retrain_flow(project=str(project))
    assert ran(result) == MAIN | CV
    assert all(s["seconds"] > 0 for s in result["stages"])
    assert result["promotion"]["decision"] == "promoted"
    current = project / "production/current"
    assert current.is_symlink() and (current / "model.keras").is_file()
    assert (current / "metrics.json").read_text().count("roc_auc")
    assert "operating_point" in (current / "meta.json").read_text()  # the exported bundle
    page = (project / "reports/index.html").read_text()
    assert "Cross-validation (2 folds" in page and "Export parity" in page
    assert "savedmodel_max_abs_diff" not in page  # export.savedmodel: false
    assert [h["decision"] for h in history(project)] == ["promoted"]

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        table = client.read_latest_artifacts()
    keys = {a.key for a in table}
    assert {"unfreeze-test-metrics", "unfreeze-metrics-diff"} <= keys


def test_second_retrain_runs_nothing_and_promotes_nothing(prefect_harness, project, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(project / "src"))
    from unfreeze.retrain import retrain_flow

    release = (project / "production/current").resolve()
    state = retrain_flow(project=str(project), return_state=True)
    result = state.result()
    assert ran(result) == set() and not result["source_changed"]
    assert result["promotion"]["decision"] == "unchanged"
    assert (project / "production/current").resolve() == release
    assert [h["decision"] for h in history(project)] == ["promoted", "unchanged"]
    fingerprints = [t for t in task_runs(state.state_details.flow_run_id)
                    if t.name.startswith("fingerprint_source")]
    assert [t.state.name for t in fingerprints] == ["Cached"]  # no image was re-read


def test_changing_the_threshold_rule_reruns_evaluate_export_and_report_only(
        prefect_harness, project, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(project / "src"))
    from unfreeze.retrain import retrain_flow

    set_params(project, evaluate={"threshold": "youden"})
    result = retrain_flow(project=str(project))
    assert ran(result) == {"evaluate", "export", "report"}  # no training, no CV fold
    decisions = [h["decision"] for h in history(project)]
    assert len(decisions) == 3 and decisions[-1] in {"promoted", "rejected", "unchanged"}
    meta = (project / "production/current/meta.json").read_text()
    assert ('"threshold_rule": "youden"' in meta) == (decisions[-1] == "promoted")


def test_a_failing_stage_fails_the_flow_with_its_message_and_no_retries(
        prefect_harness, project, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(project / "src"))
    from unfreeze.retrain import retrain_flow

    set_params(project, split={"group_by": "site"})  # valid type, no such manifest column
    try:
        state = retrain_flow(project=str(project), return_state=True)
    finally:
        set_params(project, split={"group_by": None})
    assert state.is_failed()
    assert "split: error: split.group_by: column 'site' is not in the manifest" in state.message
    runs = [t for t in task_runs(state.state_details.flow_run_id) if t.name == "dvc split"]
    assert len(runs) == 1 and runs[0].run_count == 1  # deterministic: not retried
    assert (project / "models/finetune/model.keras").is_file()  # earlier outputs intact
    assert len(history(project)) == 3  # a failed retrain decides nothing


def test_a_second_retrain_of_the_same_working_copy_is_refused(prefect_harness, project):
    from filelock import FileLock

    from unfreeze.retrain import LOCK_FILE, retrain_flow

    with FileLock(str(project / LOCK_FILE)):
        state = retrain_flow(project=str(project), return_state=True)
    assert state.is_failed() and "another retrain is running" in state.message


def test_served_deployment_on_a_real_server_completes(project, tmp_path, prefect_server):
    url = prefect_server
    env = project_env(project) | {"PREFECT_HOME": str(tmp_path / "home"),
                                  "PREFECT_API_URL": url}
    with (tmp_path / "serve.log").open("w") as serve_log:
        served = subprocess.Popen(
            [sys.executable, "-m", "unfreeze.cli", "serve", "--project", str(project), "--cron",
             "0 3 * * *", "--name", "test"], env=env, start_new_session=True,
            stdout=serve_log, stderr=subprocess.STDOUT)
        try:
            deployment = wait_until(lambda: _deployment_id(url, "retrain/test"), 90)
            run_id = wait_until(lambda: _create_run(url, deployment), 60)
            final = wait_until(lambda: _terminal_state(url, run_id), 300)
            assert final == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
            info = httpx.get(f"{url}/deployments/{deployment}", timeout=10).json()
            assert info["global_concurrency_limit"]["limit"] == 1  # one run per working copy
        finally:
            stop(served)
    assert served.poll() is not None


def _deployment_id(url: str, name: str) -> str | None:
    resp = httpx.get(f"{url}/deployments/name/{name}", timeout=5)
    return resp.json()["id"] if resp.status_code == 200 else None


def _create_run(url: str, deployment: str) -> str | None:
    """Trigger a run of the deployment; None (retry) while the server answers with an error."""
    resp = httpx.post(f"{url}/deployments/{deployment}/create_flow_run", json={}, timeout=10)
    if resp.status_code >= 300:
        print(f"create_flow_run answered {resp.status_code}: {resp.text[:500]}")
        return None
    return resp.json()["id"]


def _terminal_state(url: str, run_id: str) -> str | None:
    state = httpx.get(f"{url}/flow_runs/{run_id}", timeout=5).json()["state"]["type"]
    return state if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None
