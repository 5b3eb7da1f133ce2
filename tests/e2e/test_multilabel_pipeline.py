"""End to end: `dvc repro` of a multi-label task from a label file, on generated images
(colour labels `red` / `blue`, a quarter of the images with none, patients of 3 images)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import SOURCE, make_project, run_in

pytestmark = pytest.mark.slow

TINY = {
    "task": "multilabel",
    "data": {"source": "data/labels.csv"},
    "split": {"test": 0.25, "val": 0.25, "group_by": "patient"},
    "model": {"image_size": 75, "weights": None, "hidden_units": 8},
    "head": {"epochs": 2, "batch_size": 8, "class_weight": "balanced"},
    "finetune": {"epochs": 1, "batch_size": 8},
    "train": {"xla": False},
    "evaluate": {"threshold": "f1", "gradcam": 1, "gradcam_label": "red", "bootstrap": 200},
    "export": {"quantize": False},
    "cv": {"folds": 2},
}


def repro(project: Path, *targets: str) -> str:
    return run_in(project, sys.executable, "-m", "dvc", "repro", *targets).stdout


def read(project: Path, path: str) -> dict:
    return json.loads((project / path).read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("ml_project"), TINY, None, group_size=3,
                           label_rows=72)
    repro(project, "report")  # every stage: export, CV, the HTML report
    return project


def test_a_second_repro_runs_only_the_fingerprint(project):
    """The label file lies in data/, beside the pipeline's own outputs (data/source.json,
    the manifest): only the images its rows name are fingerprinted, so nothing reruns."""
    import re

    ran = re.findall(r"Running stage '([^']+)'", repro(project, "report"))
    assert ran == [SOURCE]


def test_label_file_to_exported_multilabel_model(project):
    data = read(project, "reports/prepare/data.json")
    assert data["task"] == "multilabel" and data["classes"] == {"blue": 36, "red": 36}
    assert data["no_label"] == 18
    splits = pq.read_table(project / "data/splits.parquet").to_pylist()
    for split in ("train", "val", "test"):  # every label in every split, patients whole
        rows = [r for r in splits if r["split"] == split]
        assert {x for r in rows for x in r["labels"]} == {"blue", "red"}, split
    patients = {}
    for r in splits:
        patients.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in patients.values())
    split_report = read(project, "reports/split/split.json")
    assert "iterative" in split_report["stratification"]

    m = read(project, "reports/evaluate/metrics.json")
    assert m["task"] == "multilabel" and set(m["per_label"]) == {"blue", "red"}
    assert m["n_test"] == sum(r["split"] == "test" for r in splits)
    assert {"map", "subset_accuracy", "hamming_loss", "macro_f1", "micro_f1"} <= set(m)
    assert m["ci95"]["roc_auc"] is None or m["ci95"]["roc_auc"]["low"] <= m["roc_auc"]
    meta = read(project, "models/export/meta.json")
    assert meta["classes"] == ["blue", "red"]
    assert len(meta["operating_point"]["thresholds"]) == 2
    assert read(project, "reports/export/metrics.json")["passed"]
    assert (project / "models/export/saved_model/saved_model.pb").is_file()

    cv = read(project, "reports/cv/metrics.json")
    assert cv["folds"] == 2 and "roc_auc" in cv["metrics"]
    assert len(cv["operating_point"]["per_fold"][0]["thresholds"]) == 2

    page = (project / "reports/index.html").read_text()
    assert "subset accuracy" in page and "red" in page
    card = (project / "models/export/MODEL_CARD.md").read_text()
    assert "multi-label: blue, red" in card

    out = run_in(project, sys.executable, "-m", "unfreeze.cli", "predict", "--model",
                 "models/export", "data/images/img_000.png", "data/images/img_003.png",
                 "--out", "p.csv", "--no-progress")
    assert out.returncode == 0
    rows = (project / "p.csv").read_text().splitlines()
    assert rows[0].startswith("path,predicted,prob_blue,prob_red")


def test_a_changed_label_file_reruns_prepare(project):
    labels = project / "data/labels.csv"
    text = labels.read_text().replace("images/img_000.png,", "images/img_000.png,red", 1)
    labels.write_text(text)
    assert "Running stage 'prepare'" in repro(project, "split")
    manifest = pq.read_table(project / "data/manifest.parquet").to_pylist()
    assert next(r for r in manifest if r["path"] == "images/img_000.png")["labels"] == ["red"]
    assert "label_file_sha256" in read(project, "data/source.json")
