"""Per-phase backups: resume after an interruption, discard a backup of other inputs."""

import json

import keras
import numpy as np
import pytest
from conftest import one_cycle, splits_for

from unfreeze.config.params import AugmentParams, HeadParams, ModelParams, Params
from unfreeze.dataset.rows import training_rows
from unfreeze.training import artifacts, fit
from unfreeze.training import backup as backup_lib
from unfreeze.training import model as model_lib
from unfreeze.training.backup import Backup


class Interrupted(Exception):
    """Stands in for the process being killed right after an epoch's backup was written."""


def tiny_model(phase: HeadParams) -> keras.Model:
    keras.utils.set_random_seed(0)
    m = model_lib.build(ModelParams(image_size=75, weights=None, hidden_units=8), 2)
    model_lib.compile_for(m, phase, jit_compile=False, steps_per_epoch=3)  # XLA: ~23 s
    return m


def head_weights(model: keras.Model) -> list[np.ndarray]:
    """The weights of the layers phase one trains, in the trainable part's order."""
    return [w for name in model_lib.HEAD_LAYERS[1:] for w in model.get_layer(name).get_weights()]


def weights_equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_fit_phase_trains_resumes_after_an_interruption_keeps_its_best_epoch_and_saves(
        image_folder, tmp_path, monkeypatch, eager):
    """One story (each model build costs seconds): train, get interrupted, resume, save."""
    monkeypatch.chdir(tmp_path)  # dvclive looks for a DVC repo from the working directory
    # test rows point at files that do not exist: training must never try to read them
    data = training_rows(splits_for(image_folder, ["cat/missing.png"]), image_folder)
    # the head trains on cached features (the full model, uncached, is killed and resumed
    # end to end in tests/e2e/test_pipeline.py)
    # a one-cycle schedule: each step's learning rate depends on the optimizer's step count,
    # which the backup must bring back
    phase = HeadParams(epochs=5, batch_size=8, patience=5, learning_rate=1e-2, cached_views=1,
                       schedule="one_cycle")
    backup = Backup.for_phase(tmp_path / "backup", Params(head=phase), ("seed", "head"))
    seen: list[int] = []  # epochs trained, in order, over all runs
    weights_after: dict[int, list[np.ndarray]] = {}
    stop_after: list[int] = [1]  # 0-based epoch after whose backup the "kill" happens
    save = backup_lib.BackupCallback.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        save(self, epoch, logs)
        seen.append(epoch)
        weights_after[epoch] = self.model.get_weights()
        if stop_after and epoch == stop_after[0]:
            raise Interrupted

    monkeypatch.setattr(backup_lib.BackupCallback, "on_epoch_end", on_epoch_end)
    first = tiny_model(phase)
    before = np.array(first.get_layer("predictions").kernel)
    with pytest.raises(Interrupted):
        fit.fit_phase(first, data, phase, AugmentParams(), 75, 0, tmp_path / "report", backup)
    assert not np.array_equal(before, np.array(first.get_layer("predictions").kernel))
    state = json.loads((tmp_path / "backup/state.json").read_text())
    assert state["epochs_done"] == 2 and len(state["history"]["val_loss"]) == 2
    first_losses = state["history"]["val_loss"]
    assert len(lr_points(tmp_path / "report")) == 0  # killed before the end: not yet logged

    stop_after.clear()
    resumed_model = tiny_model(phase)
    summary = fit.fit_phase(resumed_model, data, phase, AugmentParams(), 75, 0,
                            tmp_path / "report", backup)
    assert seen == [0, 1, 2, 3, 4]  # the second run trained epochs 3, 4 and 5 only
    assert summary["resumed_after_epoch"] == 2 and summary["epochs_run"] == 5
    assert summary["n_train"] == 18 and summary["n_val"] == 6
    history = json.loads((tmp_path / "backup/state.json").read_text())["history"]
    assert history["val_loss"][:2] == first_losses
    best = int(np.argmin(history["val_loss"]))
    assert summary["best_epoch"] == best + 1 == summary["weights_from_epoch"]
    # early stopping kept its best epoch across the interruption, and restored its weights
    assert weights_equal(head_weights(resumed_model), weights_after[best])
    rows = (tmp_path / "report/plots/metrics/val/loss.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "loss"]
    assert len(rows) == 1 + 5  # dvclive shows all five epochs, replayed ones included
    report = json.loads((tmp_path / "report/metrics.json").read_text())
    assert report["best_epoch"] == summary["best_epoch"] and report["resumed_after_epoch"] == 2
    # 18 images in batches of 8: 3 steps per epoch, 15 in all, on the uninterrupted curve
    expected = [one_cycle(s, 15, 1e-2) for s in range(15)]
    np.testing.assert_allclose(lr_points(tmp_path / "report"), expected, rtol=1e-5)

    # killed after training, while saving: the rerun trains nothing and gives the same model
    again = tiny_model(phase)
    summary_again = fit.fit_phase(again, data, phase, AugmentParams(), 75, 0,
                                  tmp_path / "report", backup)
    assert seen == [0, 1, 2, 3, 4] and summary_again["epochs_run"] == 5
    assert weights_equal(head_weights(again), head_weights(resumed_model))

    out = artifacts.save_model(again, tmp_path / "model", artifacts.phase_meta(
        data.classes, 75, "src", "head", phase, summary_again))
    backup.clear()
    assert sorted(p.name for p in out.parent.iterdir()) == ["meta.json", "model.keras"]
    assert artifacts.read_meta(out.parent)["classes"] == ["cat", "dog"]
    assert not backup.folder.exists()


def lr_points(report) -> list[float]:
    """The learning rates the dvclive plot ``lr`` holds, by step (none when missing)."""
    file = report / "plots/custom/lr.json"
    if not file.exists():
        return []
    points = json.loads(file.read_text())
    assert [p["step"] for p in points] == list(range(1, len(points) + 1))
    return [p["lr"] for p in points]


def dense_model() -> keras.Model:
    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    m.compile(optimizer="adam", loss="mse")
    return m


def write_state(folder, inputs, weights="epoch-1.weights.h5"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").write_text(json.dumps({
        "inputs": inputs, "epochs_done": 1, "stopped": False, "history": {"val_loss": [1.0]},
        "weights": weights, "best": "", "early_stopping": {}}))


def test_a_backup_of_other_params_or_data_is_discarded_with_the_reason(tmp_path):
    splits = tmp_path / "splits.parquet"
    splits.write_bytes(b"version 1")
    old = Backup.for_phase(tmp_path / "b", Params(), ("seed", "head"), (splits,))
    write_state(old.folder, old.inputs)
    splits.write_bytes(b"version 2")
    new = Backup.for_phase(tmp_path / "b", Params(head=HeadParams(epochs=3)), ("seed", "head"),
                           (splits,))
    logged: list[str] = []
    assert backup_lib.restore(new, dense_model(), logged.append) is None
    assert f"changed: file {splits.as_posix()}, params.head" in logged[0]
    assert "training this phase from epoch 1" in logged[0]
    assert not old.folder.exists()


def test_an_unreadable_backup_is_discarded_never_trusted(tmp_path):
    backup = Backup.for_phase(tmp_path / "b", Params(), ("seed",))
    write_state(backup.folder, backup.inputs, weights="epoch-1.weights.h5")  # file missing
    logged: list[str] = []
    assert backup_lib.restore(backup, dense_model(), logged.append) is None
    assert "cannot be used" in logged[0] and not backup.folder.exists()

    backup.folder.mkdir()
    (backup.folder / "state.json").write_text('{"inputs": {"params.seed": 4')  # truncated
    assert backup_lib.restore(backup, dense_model(), logged.append) is None
    assert "JSONDecodeError" in logged[1] and not backup.folder.exists()

    backup.folder.mkdir()
    (backup.folder / "epoch-1.weights.h5").write_bytes(b"\x89HDF\r\n half a file")  # cut
    write_state(backup.folder, backup.inputs)
    assert backup_lib.restore(backup, dense_model(), logged.append) is None
    assert "cannot be used (" in logged[2] and not backup.folder.exists()


def test_a_bug_while_restoring_is_raised_and_the_backup_kept(tmp_path, monkeypatch):
    """Only what a damaged file raises means "discard": a bug must not delete a good backup."""
    backup = Backup.for_phase(tmp_path / "b", Params(), ("seed",))
    write_state(backup.folder, backup.inputs)
    model = dense_model()

    def bug(*args, **kwargs):
        raise AttributeError("a bug in the restore code")

    monkeypatch.setattr(model, "load_weights", bug)
    with pytest.raises(AttributeError, match="a bug"):
        backup_lib.restore(backup, model, lambda _: None)
    assert (backup.folder / "state.json").is_file()


def test_a_matching_backup_restores_weights_and_optimizer_state(tmp_path):
    trained = dense_model()
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    trained.fit(x, y, epochs=2, verbose=0)
    backup = Backup.for_phase(tmp_path / "b", Params(), ("seed",))
    backup.folder.mkdir()
    trained.save_weights(backup.folder / "epoch-2.weights.h5")
    write_state(backup.folder, backup.inputs, weights="epoch-2.weights.h5")
    fresh = dense_model()
    resumed = backup_lib.restore(backup, fresh, lambda _: None)
    assert resumed is not None and resumed.epochs_done == 1
    assert weights_equal(fresh.get_weights(), trained.get_weights())
    assert int(fresh.optimizer.iterations) == int(trained.optimizer.iterations) == 2
