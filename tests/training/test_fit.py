import numpy as np
import pytest
from conftest import splits_for

from unfreeze.config.errors import DataError
from unfreeze.dataset.rows import training_rows
from unfreeze.training import fit
from unfreeze.training.artifacts import check_classes_match


def test_training_rows_drop_the_test_split(image_folder):
    table = splits_for(image_folder, test_paths=["cat/never_read.png"])
    data = training_rows(table, image_folder)
    assert data.classes == ["cat", "dog"]
    assert len(data.train.paths) == 18 and len(data.val.paths) == 6
    assert not any("never_read" in p for p in data.train.paths + data.val.paths)
    assert sorted(set(data.train.labels.tolist())) == [0, 1]


def test_class_weights_balanced():
    w = fit.class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    assert w == pytest.approx({0: 4 / 6, 1: 2.0})
    assert fit.class_weights(np.array([0, 1]), 2, None) is None


def test_summarize_history_picks_the_lowest_val_loss():
    s = fit.summarize_history({"loss": [1.0, 0.8, 0.7], "val_loss": [0.9, 0.5, 0.6],
                                 "accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.4, 0.8, 0.7]})
    assert s == {"epochs_run": 3, "best_epoch": 2, "best_train_loss": 0.8,
                 "best_val_loss": 0.5, "best_train_accuracy": 0.6, "best_val_accuracy": 0.8}


def test_check_classes_match(tmp_path):
    check_classes_match(["a", "b"], ["a", "b"], tmp_path)
    with pytest.raises(DataError, match=r"predicts classes \['a', 'b'\].*\['a', 'c'\]"):
        check_classes_match(["a", "b"], ["a", "c"], tmp_path)
