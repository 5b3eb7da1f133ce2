import json

import numpy as np
import pyarrow as pa
import pytest

from unfreeze import model as model_lib
from unfreeze import train
from unfreeze.data import DataError
from unfreeze.params import AugmentParams, HeadParams, ModelParams


def splits_for(folder, test_paths=()):
    rows = []
    for label in ("cat", "dog"):
        files = sorted((folder / label).glob("*.png"))
        for i, f in enumerate(files):
            split = "val" if i < 3 else "train"
            rows.append({"path": f"{label}/{f.name}", "label": label, "split": split})
    rows += [{"path": p, "label": "cat", "split": "test"} for p in test_paths]
    return pa.Table.from_pylist(rows)


def test_training_rows_drop_the_test_split(image_folder):
    table = splits_for(image_folder, test_paths=["cat/never_read.png"])
    data = train.training_rows(table, image_folder)
    assert data.classes == ["cat", "dog"]
    assert len(data.train.paths) == 18 and len(data.val.paths) == 6
    assert not any("never_read" in p for p in data.train.paths + data.val.paths)
    assert sorted(set(data.train.labels.tolist())) == [0, 1]


def test_class_weights_balanced():
    w = train.class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    assert w == pytest.approx({0: 4 / 6, 1: 2.0})
    assert train.class_weights(np.array([0, 1]), 2, None) is None


def test_summarize_history_picks_the_lowest_val_loss():
    s = train.summarize_history({"loss": [1.0, 0.8, 0.7], "val_loss": [0.9, 0.5, 0.6],
                                 "accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.4, 0.8, 0.7]})
    assert s == {"epochs_run": 3, "best_epoch": 2, "best_train_loss": 0.8,
                 "best_val_loss": 0.5, "best_train_accuracy": 0.6, "best_val_accuracy": 0.8}


def test_fit_phase_trains_logs_with_dvclive_and_saves_atomically(image_folder, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)  # dvclive looks for a DVC repo from the working directory
    # test rows point at files that do not exist: training must never try to read them
    data = train.training_rows(splits_for(image_folder, ["cat/missing.png"]), image_folder)
    m = model_lib.build(ModelParams(image_size=75, weights=None, hidden_units=8), 2)
    phase = HeadParams(epochs=2, batch_size=8, patience=1, learning_rate=1e-2)
    model_lib.compile_for(m, phase)
    before = np.array(m.get_layer("predictions").kernel)
    summary = train.fit_phase(m, data, phase, AugmentParams(), 75, 0, tmp_path / "report")
    assert not np.array_equal(before, np.array(m.get_layer("predictions").kernel))
    assert summary["n_train"] == 18 and summary["n_val"] == 6
    assert summary["best_epoch"] >= 1 and summary["best_epoch"] <= summary["epochs_run"] <= 2
    assert summary["weights_from_epoch"] == summary["best_epoch"]  # best weights restored
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["best_epoch"] == summary["best_epoch"]
    loss_rows = (tmp_path / "report/plots/metrics/val/loss.tsv").read_text().splitlines()
    assert loss_rows[0].split("\t") == ["step", "loss"] and len(loss_rows) == 1 + \
        summary["epochs_run"]

    out = train.save_model(m, tmp_path / "model", train.phase_meta(
        data.classes, 75, "src", "head", phase, summary))
    assert sorted(p.name for p in out.parent.iterdir()) == ["meta.json", "model.keras"]
    assert train.read_meta(out.parent)["classes"] == ["cat", "dog"]


def test_check_classes_match(tmp_path):
    train.check_classes_match(["a", "b"], ["a", "b"], tmp_path)
    with pytest.raises(DataError, match=r"predicts classes \['a', 'b'\].*\['a', 'c'\]"):
        train.check_classes_match(["a", "b"], ["a", "c"], tmp_path)
