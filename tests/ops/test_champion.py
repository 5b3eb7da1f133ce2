"""The promoted model scored on the new test images through the real `unfreeze predict`
subprocess, paired image by image with the new model's predictions."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_image_folder

from unfreeze.config.params import RetrainParams
from unfreeze.io import sha256_file
from unfreeze.ops import champion

CLASSES = ["cat", "dog"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with a test split of 8 images, the new model's (perfect) predictions of
    them, and a champion release holding a real, untrained tiny model."""
    from unfreeze.config.params import HeadParams, ModelParams
    from unfreeze.training.artifacts import phase_meta, save_model
    from unfreeze.training.model import build

    root = tmp_path_factory.mktemp("champion")
    images = make_image_folder(root / "images", {"cat": 6, "dog": 6})
    rows = [{"path": f"{c}/{c}_{i:03d}.png", "label": c, "group": None,
             "split": "test" if i < 4 else "train"} for c in CLASSES for i in range(6)]
    for r in rows:
        r["sha256"] = sha256_file(images / r["path"])
    table = pa.Table.from_pylist(rows).replace_schema_metadata({"source": str(images)})
    (root / "data").mkdir()
    pq.write_table(table, root / champion.SPLITS)
    test = [r for r in rows if r["split"] == "test"]
    evaluate = root / "reports/evaluate"
    evaluate.mkdir(parents=True)
    is_dog = np.array([r["label"] == "dog" for r in test], float)
    pq.write_table(pa.table({"path": [r["path"] for r in test],
                             "label": [r["label"] for r in test],
                             "predicted": [r["label"] for r in test],
                             "prob_cat": 0.9 - 0.8 * is_dog, "prob_dog": 0.1 + 0.8 * is_dog}),
                   root / champion.PREDICTIONS)
    (root / champion.TEST_METRICS).write_text(json.dumps({"positive_class": "dog"}))
    challenger = root / "models/export"
    challenger.mkdir(parents=True)
    (challenger / "meta.json").write_text(json.dumps({"classes": CLASSES}))
    release = root / "production/releases/r1"
    model = build(ModelParams(image_size=75, weights=None, hidden_units=4), 2)
    save_model(model, release, phase_meta(CLASSES, 75, "x", "head", HeadParams(), {}))
    return root


def test_the_champion_is_scored_on_the_same_images_and_paired(project):
    retrain = RetrainParams(metric="accuracy", bootstrap=200)
    result = champion.compare_on_test(project, project / "models/export",
                                      project / "production/releases/r1", retrain)
    assert result["comparable"] and result["n"] == 8 and result["new_value"] == 1.0
    scored = pq.read_table(project / champion.WORK_DIR / "predictions.parquet").to_pylist()
    assert [r["path"].split("/")[-1] for r in scored] == [
        f"{c}_{i:03d}.png" for c in CLASSES for i in range(4)]  # the test rows, in order
    right = [r["predicted"] == r["path"].split("/")[-2] for r in scored]
    assert result["current_value"] == pytest.approx(np.mean(right))
    assert result["mcnemar"]["new_only_correct"] == right.count(False)
    assert result["mcnemar"]["current_only_correct"] == 0
    assert len(result["test_fingerprint"]) == 64 and result["ci95"] is not None


def test_other_classes_or_an_unloadable_champion_are_incomparable(project, tmp_path):
    retrain = RetrainParams(metric="accuracy", bootstrap=200)
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"classes": ["cat", "dog", "eel"]}))
    result = champion.compare_on_test(project, project / "models/export", other, retrain)
    assert not result["comparable"] and "['cat', 'dog', 'eel']" in result["reason"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text(json.dumps({"classes": CLASSES}))  # no model.keras
    result = champion.compare_on_test(project, project / "models/export", broken, retrain)
    assert not result["comparable"] and "`unfreeze predict --model" in result["reason"]
    assert "no such model file" in result["reason"]


def test_test_images_the_champion_trained_on_are_left_out(project, tmp_path):
    import shutil

    from unfreeze.ops.promote import TRAINED_ON

    release = tmp_path / "r2"
    shutil.copytree(project / "production/releases/r1", release)
    splits = pq.read_table(project / champion.SPLITS).to_pylist()
    seen = [r["sha256"] for r in splits if r["path"] in ("cat/cat_000.png", "dog/dog_003.png")]
    pq.write_table(pa.table({"sha256": seen}), release / TRAINED_ON)
    result = champion.compare_on_test(project, project / "models/export", release,
                                      RetrainParams(metric="accuracy", bootstrap=200))
    assert result["comparable"] and result["n"] == 6
    assert result["excluded_seen_by_champion"] == 2 and result["champion_training_known"]
    scored = pq.read_table(project / champion.WORK_DIR / "predictions.parquet")
    names = {p.split("/")[-1] for p in scored["path"].to_pylist()}
    assert names.isdisjoint({"cat_000.png", "dog_003.png"}) and len(names) == 6


def test_multilabel_predictions_are_read_as_label_rows():
    """The new run's predictions carry `labels`; `unfreeze predict`'s carry the decided
    labels joined by `;` (or none for an unreadable image): both become 0/1 rows."""
    from unfreeze.ops.champion import _by_path

    new = pa.Table.from_pylist([
        {"path": "a.png", "labels": ["red"], "predicted": "blue;red", "prob_blue": 0.7,
         "prob_red": 0.9},
        {"path": "b.png", "labels": [], "predicted": "", "prob_blue": 0.1, "prob_red": 0.2}])
    y, probs, decided = _by_path(new, ["b.png", "a.png"], ["blue", "red"], "new", True)
    assert y.tolist() == [[0, 0], [0, 1]] and decided.tolist() == [[0, 0], [1, 1]]
    assert probs.tolist() == [[0.1, 0.2], [0.7, 0.9]]
    old = pa.Table.from_pylist([{"path": "a.png", "predicted": None, "prob_blue": None,
                                 "prob_red": None}])
    _, probs, decided = _by_path(old, ["a.png"], ["blue", "red"], "champion", True)
    assert np.isnan(probs).all() and decided.tolist() == [[0, 0]]
