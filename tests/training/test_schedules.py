"""Learning-rate schedules: values at chosen steps against hand-computed ones; early
stopping ends the planned curve; the steps of a global batch under a strategy."""

import itertools
import json
import math

import keras
import numpy as np
import pytest
from conftest import splits_for

from unfreeze.config.errors import ParamsError
from unfreeze.config.params import AugmentParams, HeadParams, params_from_dict
from unfreeze.dataset.rows import training_rows
from unfreeze.training import fit, schedules
from unfreeze.training import model as model_lib


def values(phase: HeadParams, steps_per_epoch: int) -> list[float]:
    lr = schedules.for_phase(phase, steps_per_epoch)
    return [float(lr(s)) for s in range(phase.epochs * steps_per_epoch)]


def test_constant_is_the_classic_float():
    assert schedules.for_phase(HeadParams(learning_rate=1e-3), 10) == 1e-3
    optimizer = model_lib.make_optimizer(HeadParams(learning_rate=1e-3))
    assert isinstance(optimizer.learning_rate, keras.Variable)  # settable, as before


def test_cosine_warms_up_linearly_then_decays_to_zero():
    # 5 epochs of 2 steps, warm-up 1 epoch: steps 0, 1 rise to the peak, 2 … 9 decay
    got = values(HeadParams(learning_rate=0.1, epochs=5, schedule="cosine",
                            warmup_epochs=1), 2)
    assert got[0] == pytest.approx(0.05) and got[1] == pytest.approx(0.1)
    assert got[2] == pytest.approx(0.1)  # decay position 0
    assert got[6] == pytest.approx(0.05)  # (6 - 2) / 8 = halfway: half the peak
    assert got[9] == pytest.approx(0.05 * (1 - math.cos(math.pi / 8)), rel=1e-5)
    assert all(a >= b for a, b in itertools.pairwise(got[1:]))


def test_one_cycle_is_fastais_curve():
    # 8 steps, pct_start 0.25: steps 0, 1 warm up from peak/25, step 2 is the peak
    got = values(HeadParams(learning_rate=0.5, epochs=2, schedule="one_cycle",
                            pct_start=0.25), 4)
    assert got[0] == pytest.approx(0.02)
    assert got[1] == pytest.approx(0.26)  # halfway up: (0.02 + 0.5) / 2
    assert got[2] == pytest.approx(0.5)
    assert got[5] == pytest.approx((0.5 + 0.5e-5) / 2, rel=1e-5)  # halfway down
    assert got[7] < got[6] < got[5]


def test_schedule_params_are_checked():
    with pytest.raises(ParamsError, match=r"head.warmup_epochs.*schedule: one_cycle"):
        params_from_dict({"head": {"schedule": "one_cycle", "warmup_epochs": 1}})
    with pytest.raises(ParamsError, match=r"finetune.warmup_epochs"):
        params_from_dict({"finetune": {"schedule": "cosine", "epochs": 2, "warmup_epochs": 2}})
    with pytest.raises(ParamsError, match=r"head.pct_start"):
        params_from_dict({"head": {"schedule": "one_cycle", "pct_start": 1.0}})
    with pytest.raises(ParamsError, match=r"head.schedule"):
        params_from_dict({"head": {"schedule": "linear"}})


def test_steps_per_epoch_count_global_batches_without_dropping_images():
    assert fit.steps_per_epoch(18, 8, 1) == 3  # 8 + 8 + 2: the last batch is kept
    assert fit.steps_per_epoch(18, 16, 2) == 2  # 2 replicas × 8: global batches of 16
    assert fit.steps_per_epoch(17, 16, 2) == 2  # last batch 1 < 2 replicas: 15 + 2


def test_the_optimizer_step_counter_drives_the_schedule_through_a_weights_file(tmp_path):
    """The backup saves weights with the optimizer's state; the schedule continues from it."""
    phase = HeadParams(learning_rate=0.1, epochs=4, schedule="cosine", warmup_epochs=1)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model_lib.compile_for(model, phase, jit_compile=False, steps_per_epoch=5)
    x, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 5 steps
    model.save_weights(tmp_path / "w.weights.h5")
    again = keras.Model(inputs, model.layers[-1](inputs))
    model_lib.compile_for(again, phase, jit_compile=False, steps_per_epoch=5)
    again.optimizer.build(again.trainable_variables)
    again.load_weights(tmp_path / "w.weights.h5")
    assert int(again.optimizer.iterations) == 5
    assert float(again.optimizer.learning_rate) == pytest.approx(values(phase, 5)[5])
    np.testing.assert_allclose(schedules.rates(again.optimizer, 5), values(phase, 5)[:5],
                               rtol=1e-6)


def test_early_stopping_ends_the_planned_curve_and_every_step_is_logged(
        image_folder, tmp_path, monkeypatch, eager):
    monkeypatch.chdir(tmp_path)
    data = training_rows(splits_for(image_folder), image_folder)
    # a learning rate that makes val_loss worse at once: patience 1 stops after epoch 2
    phase = HeadParams(epochs=8, batch_size=8, patience=1, learning_rate=0.9,
                       cached_views=1, schedule="cosine", warmup_epochs=1, optimizer="sgd")
    keras.utils.set_random_seed(0)
    model = model_lib.build(params_from_dict({"model": {"image_size": 75, "weights": None,
                                                        "hidden_units": 8}}).model, 2)
    summary = fit.fit_phase(model, data, phase, AugmentParams(), 75, 0, tmp_path / "r")
    points = json.loads((tmp_path / "r/plots/custom/lr.json").read_text())
    steps = summary["epochs_run"] * 3  # 18 train images, batches of 8
    assert summary["epochs_run"] < 8 and len(points) == steps
    np.testing.assert_allclose([p["lr"] for p in points], values(phase, 3)[:steps], rtol=1e-6)
