"""End to end: the real `dvc repro` in a temporary copy of the project on a tiny config."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import make_image_folder, make_project, run_in, set_params

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"source": "data/images"},
    "split": {"test": 0.25, "val": 0.25, "group_by": "group"},
    "model": {"image_size": 75, "weights": None, "hidden_units": 8},
    "head": {"epochs": 1, "batch_size": 8},
    "finetune": {"epochs": 1, "batch_size": 8},
    "cv": {"folds": 3, "phases": ["head"]},
}
MAIN = ["prepare", "split", "head", "finetune", "evaluate"]
FOLD_STAGES = [f"cv@{k}" for k in range(10)]


def run(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_in(project, *args, check=check)


def repro(project: Path, *targets: str) -> list[str]:
    """Run `dvc repro [targets]`; return the names of the stages that actually ran."""
    out = run(project, sys.executable, "-m", "dvc", "repro", *targets).stdout
    return re.findall(r"Running stage '([^']+)'", out)


def stale_stages(project: Path) -> list[str]:
    """Stages `dvc repro` would run now, from `dvc status --json` (nothing is run)."""
    out = run(project, sys.executable, "-m", "dvc", "status", "--json").stdout
    return sorted(json.loads(out))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project with 16 images per class in groups of 2 (and one broken file)."""
    return make_project(tmp_path_factory.mktemp("project"), TINY, {"cat": 16, "dog": 16},
                        group_size=2)


def test_repro_builds_every_output_then_reruns_only_what_changed(project):
    assert repro(project, "evaluate") == MAIN

    manifest = pq.read_table(project / "data/manifest.parquet").to_pylist()
    assert len(manifest) == 33
    assert {r["path"]: r["status"] for r in manifest}["cat/broken.jpg"] == "rejected"
    report = json.loads((project / "reports/prepare/data.json").read_text())
    assert report["classes"] == {"cat": 16, "dog": 16} and report["n_rejected"] == 1

    splits = pq.read_table(project / "data/splits.parquet").to_pylist()
    by = {s: {r["path"] for r in splits if r["split"] == s} for s in ("train", "val", "test")}
    assert not (by["train"] & by["val"] or by["train"] & by["test"] or by["val"] & by["test"])
    assert sum(map(len, by.values())) == 32 and by["test"]
    group_splits = {}
    for r in splits:
        group_splits.setdefault(r["group"], set()).add(r["split"])
    assert all(len(v) == 1 for v in group_splits.values())  # split.group_by: group

    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc",
                "average_precision"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["n_test"] == len(by["test"]) and set(metrics["per_class"]) == {"cat", "dog"}
    assert metrics["leakage_checks"] == {"test_paths_not_in_train_or_val": True,
                                         "test_contents_not_in_train_or_val": True,
                                         "no_group_in_two_splits": True}
    preds = pq.read_table(project / "reports/evaluate/predictions.parquet")
    assert preds.num_rows == len(by["test"]) and set(preds["path"].to_pylist()) == by["test"]
    assert {"prob_cat", "prob_dog", "label", "predicted"} <= set(preds.column_names)
    for name in ("confusion.png", "roc.png", "pr.png", "confusion.csv", "roc.csv", "pr.csv"):
        assert (project / "reports/evaluate" / name).stat().st_size > 0
    for phase in ("head", "finetune"):
        meta = json.loads((project / f"models/{phase}/meta.json").read_text())
        assert meta["classes"] == ["cat", "dog"] and meta["image_size"] == 75
        assert json.loads((project / f"reports/{phase}/metrics.json").read_text())["n_train"] \
            == len(by["train"])

    shown = json.loads(run(project, sys.executable, "-m", "dvc", "metrics", "show",
                           "--json").stdout)
    assert "reports/evaluate/metrics.json" in json.dumps(shown)

    # nothing changed: nothing runs
    assert repro(project, "evaluate") == []

    # only finetune.learning_rate changed: finetune and evaluate rerun, nothing else upstream
    set_params(project, finetune={"learning_rate": 5e-5})
    assert repro(project, "evaluate") == ["finetune", "evaluate"]

    # library code used only by evaluate changed: only evaluate reruns
    with (project / "src/unfreeze/evaluate.py").open("a") as fh:
        fh.write("\n# touched by the end-to-end test\n")
    assert repro(project, "evaluate") == ["evaluate"]


def test_cross_validation_folds_and_report(project):
    ran = repro(project)
    assert ran[:1] == ["folds"] and sorted(ran[1:-1]) == sorted(FOLD_STAGES)
    assert ran[-1] == "cv_report"
    assert not set(ran) & set(MAIN)  # CV never retrains or re-evaluates the main model

    splits = pq.read_table(project / "data/splits.parquet").to_pylist()
    pool = {r["path"] for r in splits if r["split"] != "test"}
    test = {r["path"] for r in splits if r["split"] == "test"}
    held = []
    for k in range(3):
        fold = pq.read_table(project / f"reports/cv/fold_{k}/predictions.parquet")
        held.append(set(fold["path"].to_pylist()))
    assert sum(map(len, held)) == len(pool) and set.union(*held) == pool  # disjoint, complete
    assert not set.union(*held) & test
    folds = pq.read_table(project / "data/folds.parquet").to_pylist()
    assert not {r["path"] for r in folds} & test
    group_folds = {}
    for r in folds:
        group_folds.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(v) == 1 for v in group_folds.values())
    for k in range(3, 10):
        marker = json.loads((project / f"reports/cv/fold_{k}/metrics.json").read_text())
        assert marker == {"fold": k, "folds": 3, "active": False}

    report = json.loads((project / "reports/cv/metrics.json").read_text())
    fold_metrics = [json.loads((project / f"reports/cv/fold_{k}/metrics.json").read_text())
                    for k in range(3)]
    for name in ("accuracy", "balanced_accuracy", "f1", "roc_auc"):
        values = [f["metrics"][name] for f in fold_metrics]
        agg = report["metrics"][name]
        assert agg["values"] == pytest.approx(values)
        assert agg["mean"] == pytest.approx(sum(values) / 3)
        assert agg["std"] == pytest.approx(statistics.stdev(values))
        assert agg["ci95"][0] <= agg["mean"] <= agg["ci95"][1]
    assert report["pooled_oof"]["n_oof"] == len(pool) and report["phases"] == ["head"]
    for name in ("folds.png", "roc.png", "folds.csv", "roc.csv"):
        assert (project / "reports/cv" / name).stat().st_size > 0

    # only cv.phases changed: DVC would rerun the fold stages and the report, nothing else
    set_params(project, cv={"phases": ["head", "finetune"]})
    assert sorted(stale_stages(project)) == sorted([*FOLD_STAGES, "cv_report"])
    set_params(project, cv={"phases": ["head"]})
    assert stale_stages(project) == []

    # new images under data/images: DVC sees the change at the first stage
    make_image_folder(project / "data/images", {"eel": 6}, size=48)
    status = run(project, sys.executable, "-m", "dvc", "status", "prepare").stdout
    assert "modified:" in status and "data/images" in status


def test_invalid_params_stop_the_pipeline_with_a_clear_message(project, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(project, bad, ignore=shutil.ignore_patterns("models", "reports"))
    set_params(bad, finetune={"unfreeze_from": "mixed42"})
    proc = run(bad, sys.executable, "-m", "dvc", "repro", "-f", "prepare", check=False)
    assert proc.returncode != 0
    assert "finetune.unfreeze_from" in proc.stderr + proc.stdout
    assert "'mixed42'" in proc.stderr + proc.stdout
