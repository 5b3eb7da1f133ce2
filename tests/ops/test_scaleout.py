"""Cross-validation folds over machines, for real on one machine: the session's `prefect
server` on loopback, a process work pool, two workers each in its own git clone, a local-folder
DVC remote standing in for object storage, and a third clone running the same CV locally for
comparison."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SOURCE, make_project, project_env, run_in, stop

from unfreeze import cli
from unfreeze.ops import scaleout

# Both folds train under MirroredStrategy on 2 logical CPUs (UNFREEZE_LOGICAL_CPUS below), so
# this also runs the real `dvc repro cv@k` with train.strategy=mirrored; op determinism makes
# the workers' folds and the local run's folds comparable number for number.
PARAMS = {
    "data": {"source": "data/images"},
    "split": {"test": 0.25, "val": 0.25},
    "model": {"image_size": 75, "weights": None, "hidden_units": 8},
    "head": {"epochs": 1, "batch_size": 4},
    "train": {"xla": False, "strategy": "mirrored"},
    "cv": {"folds": 2, "phases": ["head"]},
}
POOL, NAME = "unfreeze-test", "test"


def dvc_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, prefect_server) -> dict:
    """Run `unfreeze remote-cv` with two workers and, at the same time, `dvc repro cv_report`
    in a plain clone; end every process started here. Returns paths and outputs."""
    root = tmp_path_factory.mktemp("scaleout")
    coord = make_project(root / "coord", PARAMS, {"cat": 12, "dog": 12})
    params = yaml.safe_load((coord / "params.yaml").read_text())
    (coord / "params.yaml").write_text(yaml.safe_dump(params | {"deterministic": True},
                                                      sort_keys=False))
    run_in(coord, *dvc_cmd("remote", "add", "-d", "store", str(root / "remote")))
    run_in(coord, "git", "commit", "-qam", "DVC remote, determinism")
    clones = {name: root / name for name in ("w0", "w1", "local")}
    for path in clones.values():
        run_in(root, "git", "clone", "-q", str(coord), str(path))
    base = {"PREFECT_API_URL": prefect_server, "PREFECT_WORKER_QUERY_SECONDS": "2",
            "UNFREEZE_LOGICAL_CPUS": "2"}

    def env(path: Path, home: str) -> dict[str, str]:  # each "machine" its own Prefect home
        return project_env(path) | base | {"PREFECT_HOME": str(root / home)}

    unfreeze = [sys.executable, "-m", "unfreeze.cli"]
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as logs:
        def start(args: list[str], cwd: Path, home: str, log: str) -> subprocess.Popen:
            out = logs.enter_context((root / log).open("w"))
            procs.append(subprocess.Popen(args, cwd=cwd, env=env(cwd, home), stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            return procs[-1]

        try:
            deploy = subprocess.run([*unfreeze, "deploy-folds", "--pool", POOL, "--name", NAME],
                                    cwd=coord, env=env(coord, "coord"), capture_output=True,
                                    text=True, timeout=120)
            assert deploy.returncode == 0, deploy.stdout + deploy.stderr
            for name in ("w0", "w1"):
                start([*unfreeze, "worker", "--pool", POOL], clones[name], name, f"{name}.log")
            local = start(dvc_cmd("repro", "cv_report"), clones["local"], "local",
                          "local.log")
            remote = subprocess.run([*unfreeze, "remote-cv", "--deployment",
                                     f"{scaleout.FOLD_FLOW}/{NAME}", "--timeout", "600"],
                                    cwd=coord, env=env(coord, "coord"), capture_output=True,
                                    text=True, timeout=900)
            assert local.wait(900) == 0, (root / "local.log").read_text()[-3000:]
        finally:
            for proc in reversed(procs):
                stop(proc)
    assert all(proc.poll() is not None for proc in procs)  # all processes ended
    return {"root": root, "coord": coord, **clones, "remote": remote, "deploy": deploy}


@pytest.mark.slow
def test_folds_are_spread_over_both_workers_and_aggregated(cluster):
    remote = cluster["remote"]
    assert remote.returncode == 0, remote.stdout[-3000:] + remote.stderr[-3000:]
    assert "unfreeze-fold/test" in cluster["deploy"].stdout
    lines = {line.split(":")[0].strip(): line for line in remote.stdout.splitlines()
             if line.strip().startswith("cv@")}
    assert sorted(lines) == ["cv@0", "cv@1"]
    ran_in = {stage: next(w for w in ("w0", "w1") if str(cluster[w]) in line)
              for stage, line in lines.items()}
    assert sorted(ran_in.values()) == ["w0", "w1"]  # one fold per worker
    for stage, worker in ran_in.items():  # each worker trained its fold, not the other
        k = stage[3:]
        assert (cluster[worker] / f"reports/cv/fold_{k}/views.parquet").is_file()
        other = "w1" if worker == "w0" else "w0"
        assert not (cluster[other] / f"reports/cv/fold_{k}/views.parquet").exists()
    # the coordinator trained nothing: it reproduced the stages up to `folds` and the report
    assert f"ran here: {SOURCE}, prepare, split, folds, cv_report" in remote.stdout
    assert any((cluster["root"] / "remote").rglob("*"))  # artifacts went through the remote


@pytest.mark.slow
def test_the_aggregated_report_equals_a_local_run(cluster):
    coord, local = cluster["coord"], cluster["local"]
    for rel in ("reports/cv/metrics.json", "reports/cv/folds.csv", "reports/cv/roc.csv"):
        assert (coord / rel).read_bytes() == (local / rel).read_bytes(), rel
    for k in (0, 1):
        rel = f"reports/cv/fold_{k}/views.parquet"
        assert pq.read_table(coord / rel).equals(pq.read_table(local / rel)), rel
    metrics = json.loads((coord / "reports/cv/metrics.json").read_text())
    assert metrics["folds"] == 2 and len(metrics["metrics"]["accuracy"]["values"]) == 2
    # the coordinator's dvc.lock now records the workers' folds: nothing is stale (but
    # `source`, which is always_changed: it fingerprints the data on every run)
    status = run_in(coord, *dvc_cmd("status", "--json", "--with-deps", "cv_report")).stdout
    assert set(json.loads(status)) == {SOURCE}


@pytest.mark.slow
def test_fold_stages_trained_with_mirrored_over_two_logical_cpus(cluster):
    for k in (0, 1):  # dvclive summaries pulled from the remote with the fold outputs
        head = json.loads((cluster["coord"] / f"reports/cv/fold_{k}/head/metrics.json"
                           ).read_text())
        assert head["strategy"] == "mirrored" and head["replicas"] == 2
        assert head["global_batch_size"] == 8


def test_uncommitted_changes_missing_remote_and_lock_entries(tmp_path):
    run_in(tmp_path, "git", "init", "-q")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  a:\n    cmd: x\n")
    (tmp_path / "data").mkdir()  # a stage of data/dvc.yaml has its entry in data/dvc.lock
    (tmp_path / "data/dvc.lock").write_text("schema: '2.0'\nstages:\n  s:\n    cmd: z\n")
    run_in(tmp_path, "git", "add", "-A")
    run_in(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "i")
    rev = scaleout.committed_rev(tmp_path)
    scaleout.write_lock_entries(tmp_path, {"b": {"cmd": "y"}, "data/dvc.yaml:t": {"cmd": "w"}})
    assert scaleout.committed_rev(tmp_path) == rev  # lock files may differ
    assert scaleout.lock_entries(tmp_path, ["a", "b", "data/dvc.yaml:s", "data/dvc.yaml:t"]
                                 ) == {"a": {"cmd": "x"}, "b": {"cmd": "y"},
                                       "data/dvc.yaml:s": {"cmd": "z"},
                                       "data/dvc.yaml:t": {"cmd": "w"}}
    assert "t" not in yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    with pytest.raises(scaleout.ScaleOutError, match="no entry for c"):
        scaleout.lock_entries(tmp_path, ["c"])
    run_in(tmp_path, sys.executable, "-m", "dvc", "init", "-q")
    with pytest.raises(scaleout.ScaleOutError, match="no default DVC remote"):
        scaleout.check_remote(tmp_path)
    run_in(tmp_path, sys.executable, "-m", "dvc", "remote", "add", "-d", "store",
           str(tmp_path / "store"))
    assert scaleout.check_remote(tmp_path) == "store"
    config = (tmp_path / ".dvc/config").read_text()
    (tmp_path / ".dvc/config").write_text("[core\nbroken")  # another failure: DVC's own text
    with pytest.raises(scaleout.ScaleOutError) as failed:
        scaleout.check_remote(tmp_path)
    assert "`dvc remote default` failed" in str(failed.value)
    assert "no default DVC remote" not in str(failed.value)
    (tmp_path / ".dvc/config").write_text(config)
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    with pytest.raises(scaleout.ScaleOutError, match=r"params\.yaml changed since the last"):
        scaleout.committed_rev(tmp_path)


def test_workers_and_coordinator_need_a_server_and_a_clone(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert cli.main(["remote-cv", "--deployment", "unfreeze-fold/x"]) == 2
    assert "share one Prefect server" in capsys.readouterr().err
    monkeypatch.setenv(scaleout.WORKDIR_ENV, str(tmp_path))
    with pytest.raises(scaleout.ScaleOutError, match="not a clone of the project"):
        scaleout.worker_clone()
    monkeypatch.setitem(os.environ, scaleout.WORKDIR_ENV, "")
    with pytest.raises(scaleout.ScaleOutError, match="unfreeze worker --pool"):
        scaleout.worker_clone()
