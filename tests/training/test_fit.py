"""The fit loop's pure parts: class weights and the best epoch of a history."""

import numpy as np
import pytest

from unfreeze.training import fit


def test_class_weights_balanced():
    w = fit.class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    assert w == pytest.approx({0: 4 / 6, 1: 2.0})
    assert fit.class_weights(np.array([0, 1]), 2, None) is None


def test_summarize_history_picks_the_lowest_val_loss():
    s = fit.summarize_history({"loss": [1.0, 0.8, 0.7], "val_loss": [0.9, 0.5, 0.6],
                                 "accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.4, 0.8, 0.7]})
    assert s == {"epochs_run": 3, "best_epoch": 2, "best_train_loss": 0.8,
                 "best_val_loss": 0.5, "best_train_accuracy": 0.6, "best_val_accuracy": 0.8}
