"""The LR range test: smoothing and stopping, suggestions on a synthetic problem whose good
range was measured, and `unfreeze lr-find` on a tiny project (train rows only, params.yaml
untouched)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import splits_for

from unfreeze import cli
from unfreeze.config.errors import LRFindError
from unfreeze.config.params import HeadParams, params_from_dict
from unfreeze.training import lr_find
from unfreeze.training import model as model_lib
from unfreeze.training.artifacts import phase_meta, save_model

# Measured on 3 Gaussian blobs (2-D, centres 3 sigma from the origin, 2048 points, batches of
# 128) and the MLP below, Adam: 100 steps at a constant rate reach a full-data loss of 0.02
# to 0.07 for every rate from 3e-3 to 0.3 (0.45 at 1e-3, 1.0 to 1.6 at 3); 4 seeds of data
# and initialisation gave steepest 2.5e-2 to 3.3e-2 and minimum/10 5e-2 to 1.6e-1.
GOOD = (3e-3, 0.3)


def blobs(seed: int, n: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    centres = 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = rng.integers(0, 3, n)
    return (centres[y] + rng.normal(0, 1, (n, 2))).astype("float32"), y.astype("int32")


def mlp(seed: int, lr: float = 1e-3) -> keras.Model:
    """2 → 16 ReLU → 3 softmax; the output starts at zero (the loss starts at ln 3)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax",
                                                 kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    return model


def batches(x: np.ndarray, y: np.ndarray, seed: int):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=seed).batch(128)


def loss_after(lr: float, x: np.ndarray, y: np.ndarray, steps: int = 100) -> float:
    """Full-data loss after ``steps`` batches at a constant rate ``lr``."""
    model = mlp(0, lr)
    model.fit(batches(x, y, 0).repeat(), steps_per_epoch=steps, epochs=1, shuffle=False,
              verbose=0)
    return float(model.evaluate(x, y, batch_size=len(y), verbose=0))


def test_the_range_test_suggests_rates_inside_the_measured_good_range():
    x, y = blobs(0)
    model = mlp(0)
    before = model.get_weights()
    result = lr_find.lr_range_test(model, batches(x, y, 0), 1e-5, 100.0, 100)

    assert result.stopped == "diverged" and 60 < len(result.lrs) < 95
    assert result.planned == 100 and result.lrs[0] == pytest.approx(1e-5)
    np.testing.assert_allclose(np.diff(np.log(result.lrs)), np.log(1e7) / 99)  # exponential
    assert result.smoothed[0] == pytest.approx(result.losses[0])  # debiased
    assert result.smoothed[0] == pytest.approx(np.log(3), rel=1e-3)
    assert result.smoothed[-1] > 4 * min(result.smoothed[:-1])  # why it stopped, and only then
    assert all(s <= 4 * min(result.smoothed[:i + 1]) for i, s in enumerate(result.smoothed[:-1]))
    for a, b in zip(before, model.get_weights(), strict=True):  # put back afterwards
        np.testing.assert_array_equal(a, b)

    picks = lr_find.suggest(result)
    assert set(picks) == set(lr_find.RULES) == {"steepest", "minimum_div_10"}
    for lr in picks.values():
        assert GOOD[0] <= lr <= GOOD[1], picks
    # the suggestion trains well; where the sweep stopped, training does not
    assert loss_after(picks["steepest"], x, y) < 0.1 < 0.5 < loss_after(result.lrs[-1], x, y)


def test_each_step_records_its_own_batch_loss_cycling_through_the_input():
    import tensorflow as tf

    from unfreeze.training.features import CachedViews

    x, y = blobs(1, n=512)
    model = mlp(1)
    model.layers[-1].kernel.assign(np.random.default_rng(1).normal(size=(16, 3)))
    expected = [model.evaluate(x[i:i + 128], y[i:i + 128], verbose=0) for i in range(0, 512, 128)]
    # rates too small to move the weights: each batch's loss is what it was before
    result = lr_find.lr_range_test(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(128),
                                   1e-12, 1e-11, 10)
    assert result.stopped == "end" and len(result.losses) == 10
    np.testing.assert_allclose(result.losses, (expected * 3)[:10], rtol=1e-4)  # not a mean
    # cached views feed fit a dataset without end: the sweep still runs its steps, in order
    endless = CachedViews([x], y, 128, None, seed=0, shuffle=False).dataset()
    result = lr_find.lr_range_test(model, endless, 1e-12, 1e-11, 10)
    assert result.stopped == "end" and len(result.losses) == 10
    np.testing.assert_allclose(result.losses, (expected * 3)[:10], rtol=1e-4)


class FakeOptimizer:
    learning_rate = 0.0


class FakeModel:
    """What the callback touches: metrics reset, the optimizer's rate, stop_training."""

    def __init__(self) -> None:
        self.optimizer, self.stop_training, self.resets, self.rates = FakeOptimizer(), False, 0, []

    def reset_metrics(self) -> None:
        self.resets += 1


def feed(losses: list[float], beta: float = 0.9) -> tuple[lr_find.RangeTest, FakeModel]:
    sweep, model = lr_find.RangeTest(lr_find.sweep_rates(1e-4, 1.0, 10), beta, 4.0), FakeModel()
    sweep.set_model(model)
    for i, loss in enumerate(losses):
        sweep.on_train_batch_begin(i)
        model.rates.append(model.optimizer.learning_rate)
        sweep.on_train_batch_end(i, {"loss": loss})
        if model.stop_training:
            break
    return sweep, model


def test_smoothing_is_fastais_debiased_average_and_divergence_stops_the_sweep():
    losses = [2.0, 1.0, 0.5, 0.5, 0.5, 9.0, 20.0, 40.0, 1.0]
    sweep, model = feed(losses)
    avg, expected = 0.0, []
    for n, loss in enumerate(losses, start=1):
        avg = 0.9 * avg + 0.1 * loss
        expected.append(avg / (1 - 0.9 ** n))
    stop = next(i for i, s in enumerate(expected) if s > 4 * min(expected[:i + 1]))
    assert sweep.smoothed == pytest.approx(expected[:stop + 1])
    assert model.stop_training and sweep.result().stopped == "diverged"
    assert model.rates == pytest.approx(list(lr_find.sweep_rates(1e-4, 1.0, 10)[:stop + 1]))
    assert model.resets == stop + 1  # each step's logged loss is that batch's own

    sweep, model = feed([1.0, float("nan"), 1.0])
    assert sweep.result().stopped == "not finite" and len(sweep.losses) == 2
    sweep, model = feed([1.0] * 12)  # runs the planned steps, no more
    assert sweep.result().stopped == "end" and len(sweep.losses) == 10


def test_suggest_follows_fastais_steep_and_minimum_rules():
    lrs = lr_find.sweep_rates(1e-6, 1.0, 61)
    t = np.log10(lrs)
    smoothed = 2 - np.tanh(2 * (t + 3)) + np.where(t > -1, 40 * (t + 1) ** 2, 0)  # fall at 1e-3
    result = lr_find.LRFindResult(list(lrs), list(smoothed), list(smoothed), 61, "end")
    picks = lr_find.suggest(result)
    assert picks["steepest"] == pytest.approx(1e-3, rel=0.25)
    assert picks["minimum_div_10"] == pytest.approx(lrs[np.argmin(smoothed)] / 10)
    # the window skips the first planned // 10 steps and the last 5, as fastai's lr_find
    early = lr_find.LRFindResult(list(lrs), list(smoothed), [0.0, *smoothed[1:]], 61, "end")
    assert lr_find.suggest(early)["minimum_div_10"] == picks["minimum_div_10"]
    # past the minimum, a steeper dip (the smoothed loss recovering from a spike) is ignored
    rebound = smoothed.copy()
    rebound[50:] = 5.0 - 3.0 * (t[50:] > -0.6)
    bumpy = lr_find.LRFindResult(list(lrs), list(rebound), list(rebound), 61, "end")
    assert lr_find.suggest(bumpy)["steepest"] == picks["steepest"]
    short = lr_find.LRFindResult([1e-6], [1.0], [1.0], 100, "not finite")
    rising = lr_find.LRFindResult(list(lrs), list(t), list(t), 61, "end")
    for result in (short, rising):
        with pytest.raises(LRFindError, match="--start"):
            lr_find.suggest(result)


def test_constant_rate_switches_off_a_schedule_and_its_warm_up():
    fields = {f.name for f in dataclasses.fields(HeadParams)}
    phase = HeadParams(learning_rate=0.01)
    if "schedule" in fields:
        phase = HeadParams(learning_rate=0.01, schedule="cosine", warmup_epochs=1.0)
    fixed = lr_find.constant_rate(phase)
    assert fixed.learning_rate == 0.01
    assert getattr(fixed, "schedule", "constant") == "constant"
    assert getattr(fixed, "warmup_epochs", 0.0) == 0.0


TINY = {"model": {"image_size": 75, "weights": None, "hidden_units": 8},
        "head": {"batch_size": 8}, "finetune": {"batch_size": 8},
        "train": {"xla": False}}


def tiny_project(root: Path, image_folder: Path) -> Path:
    """params.yaml and data/splits.parquet whose val and test rows name files that do not
    exist: the range test must read the train rows only."""
    (root / "data").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    rows = splits_for(image_folder, test_paths=["cat/never_there.png"]).to_pylist()
    for i, row in enumerate(rows):
        if row["split"] == "val":
            row["path"] = f"{row['label']}/missing_val_{i}.png"
    table = pa.Table.from_pylist(rows).replace_schema_metadata({"source": str(image_folder)})
    pq.write_table(table, root / "data/splits.parquet")
    return root


def test_lr_find_cli_on_a_tiny_project_writes_csv_png_and_the_dvc_line(
        image_folder, tmp_path, monkeypatch, capsys):
    project = tiny_project(tmp_path / "project", image_folder)
    monkeypatch.chdir(project)
    params_before = (project / "params.yaml").read_bytes()

    assert cli.main(["lr-find", "--phase", "head", "--steps", "30", "--start", "1e-4"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader((project / "reports/lr_find/head.csv").open()))
    assert list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"] and 2 <= len(rows) <= 30
    assert float(rows[0]["lr"]) == pytest.approx(1e-4)
    png = (project / "reports/lr_find/head.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "suggested head.learning_rate: " in out and "(steepest descent" in out
    assert "minimum/10: " in out
    line = next(s for s in out.splitlines() if s.startswith("to use it: "))
    value = line.rsplit("=", 1)[1]
    assert line.startswith("to use it: dvc exp run -S head.learning_rate=")
    assert float(value) > 0 and "e" not in value  # a plain decimal YAML reads as a number
    assert (project / "params.yaml").read_bytes() == params_before
    assert sorted(p.name for p in (project / "reports/lr_find").iterdir()) == [
        "head.csv", "head.png"]  # no temporary file left behind


def test_finetune_range_test_starts_from_the_phase_one_model(image_folder, tmp_path,
                                                             monkeypatch, eager):
    project = tiny_project(tmp_path / "project", image_folder)
    monkeypatch.chdir(project)
    params = params_from_dict(TINY)
    (project / "params.yaml").write_text(yaml.safe_dump(
        {**TINY, "finetune": {"batch_size": 8, "unfreeze_from": "mixed10"}}))  # fewer steps
    head = model_lib.build(params.model, 2)
    save_model(head, project / "models/head", phase_meta(["cat", "dog"], 75, str(image_folder),
                                                         "head", params.head, {}))
    lines = lr_find.run(Path("params.yaml"), Path("data/splits.parquet"), "finetune",
                        Path("models/head"), Path("reports/lr_find"), 1e-4, 1.0, 6)
    assert lines[-1].startswith("to use it: dvc exp run -S finetune.learning_rate=")
    rows = list(csv.DictReader((project / "reports/lr_find/finetune.csv").open()))
    assert 2 <= len(rows) <= 6


def test_missing_inputs_name_the_file_and_the_command(image_folder, tmp_path, monkeypatch,
                                                      capsys):
    project = tiny_project(tmp_path / "project", image_folder)
    monkeypatch.chdir(project)
    assert cli.main(["lr-find", "--phase", "finetune"]) == 2
    err = capsys.readouterr().err
    assert "models/head/model.keras" in err and "`dvc repro head`" in err
    assert cli.main(["lr-find", "--phase", "head", "--splits", "data/nothing.parquet"]) == 2
    err = capsys.readouterr().err
    assert "data/nothing.parquet" in err and "`dvc repro split`" in err
    assert cli.main(["lr-find", "--phase", "head", "--start", "1", "--end", "0.1"]) == 2
    assert "--start" in capsys.readouterr().err
    assert not (project / "reports").exists()
