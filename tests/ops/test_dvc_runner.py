import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_in

from unfreeze.ops import dvc_runner as orchestrate
from unfreeze.ops import snapshot
from unfreeze.ops.dvc_runner import StageFailed, TransientStageError


def test_stage_graph_reads_dvc_yaml_in_dependency_order():
    graph = orchestrate.stage_graph(ROOT)
    order = list(graph)
    assert set(graph) >= {"prepare", "split", "head", "finetune", "evaluate", "folds",
                          "cv_report", *(f"cv@{k}" for k in range(10))}
    for stage, upstream in graph.items():
        assert all(order.index(u) < order.index(stage) for u in upstream), stage
    assert graph["finetune"] == ["head", "split"]
    assert graph["cv@3"] == ["folds"] and "cv@9" in graph["cv_report"]


@pytest.fixture
def tiny_dvc(tmp_path) -> Path:
    """A DVC project whose stages are one-line Python commands (no TensorFlow)."""
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  make:\n"
        "    cmd: python -c \"open('a.txt','w').write(open('in.txt').read())\"\n"
        "    deps: [in.txt]\n"
        "    outs: [a.txt]\n"
        "  bad:\n"
        "    cmd: python fail.py\n"
        "    deps: [a.txt]\n"
        "    outs: [b.txt]\n")
    (tmp_path / "in.txt").write_text("1")
    (tmp_path / "fail.py").write_text(
        "import sys\nprint('bad: error: thing.value must be > 0, got -1', file=sys.stderr)\n"
        "sys.exit(2)\n")
    run_in(tmp_path, "git", "init", "-q")
    run_in(tmp_path, sys.executable, "-m", "dvc", "init", "-q")
    return tmp_path


def test_run_stage_reports_ran_then_up_to_date(tiny_dvc):
    first = orchestrate.run_stage(tiny_dvc, "make")
    assert first.ran and (tiny_dvc / "a.txt").read_text() == "1"
    assert not orchestrate.run_stage(tiny_dvc, "make").ran


def test_a_failing_stage_raises_with_its_own_error_text(tiny_dvc):
    orchestrate.run_stage(tiny_dvc, "make")
    with pytest.raises(StageFailed, match=r"bad: error: thing.value must be > 0, got -1"):
        orchestrate.run_stage(tiny_dvc, "bad")


def test_failures_are_classified():
    lock = orchestrate.classify_failure("x", "ERROR: Unable to acquire lock. Most likely ...")
    assert isinstance(lock, TransientStageError)
    io = orchestrate.classify_failure("x", "OSError: [Errno 5] Input/output error")
    assert isinstance(io, TransientStageError)
    bad = orchestrate.classify_failure(
        "head", "Running stage 'head':\nhead: error: params: `head.epochs` must be ...\n"
                "ERROR: failed to reproduce 'head': exited with 2")
    assert isinstance(bad, StageFailed) and "head: error: params" in str(bad)


def test_snapshot_diff_and_summary(tmp_path):
    from unfreeze.io import write_json

    assert snapshot.snapshot(tmp_path) == {}
    write_json(tmp_path / snapshot.TEST_METRICS, {"accuracy": 0.5, "roc_auc": 0.6,
                                                      "per_class": {"a": {"f1": 0.4}}})
    before = snapshot.snapshot(tmp_path)
    write_json(tmp_path / snapshot.TEST_METRICS, {
        "accuracy": 0.75, "roc_auc": 0.6, "per_class": {"a": {"f1": 0.4}},
        "ci95": {"accuracy": {"low": 0.66, "high": 0.83}, "roc_auc": None}})
    write_json(tmp_path / snapshot.CV_METRICS, {"folds": 3, "metrics": {
        "accuracy": {"values": [0.1, 0.2], "mean": 0.7, "std": 0.05, "ci95": [0.6, 0.8]}}})
    md = snapshot.diff_markdown(before, snapshot.snapshot(tmp_path))
    assert "| reports/evaluate/metrics.json | accuracy | 0.5000 | 0.7500 | +0.2500 |" in md
    assert "roc_auc" not in md and "metrics.accuracy.mean" in md and "values" not in md
    rows = {r["metric"]: r for r in snapshot.summary_table(tmp_path)}
    assert rows["accuracy"] == {"metric": "accuracy", "test": 0.75, "test_ci95_low": 0.66,
                                "test_ci95_high": 0.83, "cv_mean": 0.7, "cv_std": 0.05,
                                "cv_ci95_low": 0.6, "cv_ci95_high": 0.8}
    assert rows["roc_auc"]["test_ci95_low"] is None  # an undefined interval stays empty
    assert snapshot.diff_markdown(before, before).startswith("No metric changed")
