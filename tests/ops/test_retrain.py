"""The retrain flow's own logic on a project whose stages are tiny Python scripts (no TF):
a data source outside the project, transient-failure retries, the CLI summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, project_env, run_in

PREPARE = """\
import hashlib, pathlib, sys
src = pathlib.Path(sys.argv[1])
lines = [f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()}" for p in sorted(src.iterdir())]
pathlib.Path("data").mkdir(exist_ok=True)
pathlib.Path("data/manifest.txt").write_text("\\n".join(lines))
"""
EVALUATE = """\
import json, pathlib
manifest = pathlib.Path("data/manifest.txt").read_text()
attempts = pathlib.Path("attempts")
n = int(attempts.read_text()) + 1 if attempts.exists() else 1
attempts.write_text(str(n))
if pathlib.Path("flaky").exists() and n == 1:
    raise SystemExit("ERROR: Unable to acquire lock. Most likely another DVC process is running")
pathlib.Path("models/finetune").mkdir(parents=True, exist_ok=True)
pathlib.Path("models/finetune/model.keras").write_text(manifest)
pathlib.Path("models/finetune/meta.json").write_text("{}")
pathlib.Path("reports/evaluate").mkdir(parents=True, exist_ok=True)
score = 0.5 + 0.4 * (len(manifest) % 7) / 7
pathlib.Path("reports/evaluate/metrics.json").write_text(json.dumps({"roc_auc": score}))
"""
DVC_YAML = f"""\
stages:
  source:
    cmd: python {ROOT}/stages/source.py --out data/source.json --hashes .unfreeze/hashes.json
    always_changed: true
    outs: [data/source.json]
  prepare:
    cmd: python prepare.py ../external
    deps: [prepare.py, data/source.json]
    outs: [data/manifest.txt]
  evaluate:
    cmd: python evaluate.py
    deps: [evaluate.py, data/manifest.txt]
    outs: [models/finetune]
    metrics: [{{reports/evaluate/metrics.json: {{cache: false}}}}]
"""


@pytest.fixture
def fake_project(tmp_path) -> Path:
    external = tmp_path / "external"
    external.mkdir()
    (external / "a.png").write_bytes(b"image a")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "prepare.py").write_text(PREPARE)
    (proj / "evaluate.py").write_text(EVALUATE)
    (proj / "dvc.yaml").write_text(DVC_YAML)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = "../external"
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    run_in(proj, "git", "init", "-q")
    run_in(proj, sys.executable, "-m", "dvc", "init", "-q")
    return proj


def ran(result: dict) -> list[str]:
    return [s["stage"] for s in result["stages"] if s["ran"]]


@pytest.mark.slow
def test_a_changed_source_outside_the_project_reruns_prepare(prefect_harness, fake_project):
    """The flow relies on the `source` stage, as a plain `dvc repro` does: it runs every
    time, and `prepare` follows only when the content changed."""
    from unfreeze.ops.retrain import retrain_flow

    first = retrain_flow(project=str(fake_project))
    assert ran(first) == ["source", "prepare", "evaluate"]
    assert not first["source_changed"]  # a first fingerprint: nothing to compare it with
    assert ran(retrain_flow(project=str(fake_project))) == ["source"]

    external = fake_project.parent / "external"
    st = (external / "a.png").stat()
    os.utime(external / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = retrain_flow(project=str(fake_project))  # new listing, same content
    assert not touched["source_changed"] and ran(touched) == ["source"]

    manifest = (fake_project / "data/manifest.txt").read_text()
    (external / "a.png").write_bytes(b"image a, re-exported")
    changed = retrain_flow(project=str(fake_project))
    assert changed["source_changed"] and ran(changed) == ["source", "prepare", "evaluate"]
    assert (fake_project / "data/manifest.txt").read_text() != manifest
    assert ran(retrain_flow(project=str(fake_project))) == ["source"]


@pytest.mark.slow
def test_a_transient_stage_failure_is_retried(prefect_harness, fake_project):
    from unfreeze.ops.retrain import retrain_flow

    (fake_project / "flaky").write_text("fail the first attempt with a DVC lock error")
    state = retrain_flow(project=str(fake_project), return_state=True)
    assert state.is_completed(), state.message
    assert (fake_project / "attempts").read_text() == "2"
    assert ran(state.result()) == ["source", "prepare", "evaluate"]


@pytest.mark.slow
def test_retrain_command_prints_the_summary_quietly(fake_project, tmp_path):
    env = project_env(fake_project) | {"PREFECT_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.run([sys.executable, str(ROOT / "flows/retrain.py"), str(fake_project)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("retrain of ") and lines[-1].startswith("promotion: promoted")
    assert any(line.split()[:2] == ["prepare", "ran"] for line in lines)
    noise = [line for line in proc.stderr.splitlines()
             if any(w in line.lower() for w in ("telemetry", "analytics", "traceback"))]
    assert noise == [], proc.stderr[-4000:]  # the whole traceback, to tell whose it is
