"""The Prefect retrain flow for real: a temporary Prefect API, real DVC, a tiny project.

Every test starts from the module's `retrained` project (one first retrain, run once) and
asserts on what its own run adds, so the tests pass in any order and alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from conftest import SOURCE, make_project, project_env, set_params, stop, wait_until

pytestmark = pytest.mark.slow

TINY = {
    "data": {"source": "data/images"},
    "split": {"test": 0.25, "val": 0.25},
    "model": {"image_size": 75, "weights": None, "hidden_units": 8},
    "head": {"epochs": 1, "batch_size": 8},
    "finetune": {"epochs": 1, "batch_size": 8},
    "train": {"xla": False},  # XLA compiles for ~23 s per phase; tested in test_pipeline
    "cv": {"folds": 2, "phases": ["head"]},
    "retrain": {"workers": 2},
    # the bundle with its operating point only; the formats are tested in test_pipeline
    "export": {"savedmodel": False, "tflite": False, "quantize": False},
}
MAIN = {SOURCE, "prepare", "split", "head", "finetune", "evaluate", "export", "report"}
CV = {"folds", "cv_report", *(f"cv@{k}" for k in range(10))}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("flowproject"), TINY, {"cat": 12, "dog": 12})


@pytest.fixture(scope="module")
def retrained(prefect_harness, project) -> dict:
    """The project after its first retrain; returns that run's result."""
    import os

    from unfreeze.ops.retrain import retrain_flow

    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(project / "src")  # the stages run the project's copy
    try:
        return retrain_flow(project=str(project))
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = before


def retrain(project: Path, monkeypatch, **kwargs):
    monkeypatch.setenv("PYTHONPATH", str(project / "src"))
    from unfreeze.ops.retrain import retrain_flow

    return retrain_flow(project=str(project), **kwargs)


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


def test_first_retrain_runs_every_stage_and_promotes(retrained, project):
    result = retrained
    assert ran(result) == MAIN | CV
    assert all(s["seconds"] > 0 for s in result["stages"])
    assert result["promotion"]["decision"] == "promoted"
    current = project / "production/current"
    assert current.is_symlink() and (current / "model.keras").is_file()
    released = json.loads((current / "metrics.json").read_text())
    assert released["roc_auc"] == result["promotion"]["new_value"]
    assert released["model_sha256"] == result["promotion"]["model_sha256"]
    assert "operating_point" in json.loads((current / "meta.json").read_text())  # the bundle
    page = (project / "reports/index.html").read_text()
    assert "Cross-validation (2 folds" in page and "Export parity" in page
    assert "savedmodel_max_abs_diff" not in page  # export.savedmodel: false
    assert history(project)[0]["decision"] == "promoted"

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        table = client.read_latest_artifacts()
    keys = {a.key for a in table}
    assert {"unfreeze-test-metrics", "unfreeze-metrics-diff"} <= keys


def test_a_retrain_with_nothing_changed_runs_nothing_and_promotes_nothing(
        retrained, project, monkeypatch):
    release = (project / "production/current").resolve()
    decided = len(history(project))
    state = retrain(project, monkeypatch, return_state=True)
    result = state.result()
    assert ran(result) == {SOURCE} and not result["source_changed"]  # source: a listing
    assert result["promotion"]["decision"] == "unchanged"
    assert (project / "production/current").resolve() == release
    assert [h["decision"] for h in history(project)[decided:]] == ["unchanged"]


def test_changing_the_threshold_rule_reruns_no_training_and_no_fold(
        retrained, project, monkeypatch):
    release = (project / "production/current").resolve()
    set_params(project, evaluate={"threshold": "youden"})
    try:
        result = retrain(project, monkeypatch)
    finally:
        set_params(project, evaluate={"threshold": TINY.get("evaluate", {}).get(
            "threshold", 0.5)})
    # no training, no fold: the CV report re-applies the rule to the folds' stored views
    assert ran(result) == {SOURCE, "evaluate", "cv_report", "export", "report"}
    # the same model, re-exported: a threshold never moves ROC-AUC, so it is not promoted
    decision = history(project)[-1]
    assert decision["new_value"] == decision["current_value"]
    assert decision["decision"] == "rejected" == result["promotion"]["decision"]
    assert (project / "production/current").resolve() == release


def test_after_new_data_the_champion_is_rescored_on_the_new_test_images(
        retrained, project, monkeypatch, tmp_path):
    """New images: every stage reruns, a new test split is drawn, and the promoted model is
    scored on exactly those images (through `unfreeze predict`) before the decision."""
    import shutil

    import numpy as np
    from conftest import make_image_folder

    from unfreeze.dataset.splits import split_fingerprint
    from unfreeze.evaluation.metrics import compute_metrics

    more = make_image_folder(tmp_path / "more", {"cat": 4, "dog": 4}, seed=5)
    for image in more.glob("*/*.png"):
        shutil.copy(image, project / "data/images" / image.parent.name / f"new_{image.name}")
    decided = len(history(project))
    result = retrain(project, monkeypatch)
    assert result["source_changed"] and {"prepare", "split", "head", "evaluate"} <= ran(result)
    row = history(project)[decided]
    test = json.loads((project / "reports/evaluate/metrics.json").read_text())
    splits = pq.read_table(project / "data/splits.parquet")
    assert row["rule"] == "ci"
    assert row["decision"] == ("promoted" if row["ci95_low"] > 0.0 else "rejected")
    # the new test split may hold images the champion trained on: they are left out
    trained_on = set(pq.read_table(
        project / "production/releases" / history(project)[decided - 1]["release"]
        / "trained_on.parquet")["sha256"].to_pylist())
    test_rows = [r for r in splits.to_pylist() if r["split"] == "test"]
    unseen = [r for r in test_rows if r["sha256"] not in trained_on]
    assert test["n_test"] == len(test_rows) == 8  # 32 images, split.test 0.25
    assert row["n"] == len(unseen) > 0
    assert row["test_fingerprint"] == split_fingerprint(splits)
    # the champion's value is its own, on these images, at its own operating point
    scored = pq.read_table(project / ".unfreeze/champion/predictions.parquet").to_pylist()
    truth = {r["path"]: r["label"] for r in splits.to_pylist()}
    rel = [str(Path(r["path"]).relative_to(project / "data/images")) for r in scored]
    assert sorted(rel) == sorted(r["path"] for r in unseen)  # exactly the unseen test images
    labels = [truth[path] for path in rel]
    y = np.array([["cat", "dog"].index(label) for label in labels])
    probs = np.array([[r["prob_cat"], r["prob_dog"]] for r in scored])
    champion = compute_metrics(y, probs, ["cat", "dog"], test["positive_class"])
    assert row["current_value"] == pytest.approx(champion["roc_auc"])
    new = {r["path"]: r for r in pq.read_table(
        project / "reports/evaluate/predictions.parquet").to_pylist()}
    new_probs = np.array([[new[p]["prob_cat"], new[p]["prob_dog"]] for p in rel])
    challenger = compute_metrics(y, new_probs, ["cat", "dog"], test["positive_class"])
    assert row["new_value"] == pytest.approx(challenger["roc_auc"])
    assert row["ci95_low"] <= row["new_value"] - row["current_value"] <= row["ci95_high"]
    assert 0 <= row["mcnemar_p"] <= 1

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_latest_artifacts()}
    assert "unfreeze-promotion" in keys


def test_a_failing_stage_fails_the_flow_with_its_message_and_no_retries(
        retrained, project, monkeypatch):
    decided = len(history(project))
    set_params(project, split={"group_by": "site"})  # valid type, no such manifest column
    try:
        state = retrain(project, monkeypatch, return_state=True)
    finally:
        set_params(project, split={"group_by": None})
    assert state.is_failed()
    assert "split: error: split.group_by: column 'site' is not in the manifest" in state.message
    runs = [t for t in task_runs(state.state_details.flow_run_id) if t.name == "dvc split"]
    assert len(runs) == 1 and runs[0].run_count == 1  # deterministic: not retried
    assert (project / "models/finetune/model.keras").is_file()  # earlier outputs intact
    assert len(history(project)) == decided  # a failed retrain decides nothing


def test_a_second_retrain_of_the_same_working_copy_is_refused(retrained, project):
    from filelock import FileLock

    from unfreeze.ops.retrain import LOCK_FILE, retrain_flow

    with FileLock(str(project / LOCK_FILE)):
        state = retrain_flow(project=str(project), return_state=True)
    assert state.is_failed() and "another retrain is running" in state.message


def test_served_deployment_on_a_real_server_completes(retrained, project, tmp_path,
                                                      prefect_server):
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
