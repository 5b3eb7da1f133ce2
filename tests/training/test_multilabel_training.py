"""Multi-label training: one sigmoid per label, binary cross-entropy with per-label positive
weights, through both phases, cached views, fresh batches and mixing."""

import json

import keras
import numpy as np
import pyarrow as pa
import pytest
from conftest import make_multilabel_images

from unfreeze.config.params import params_from_dict
from unfreeze.dataset.rows import training_rows
from unfreeze.training import losses, recipe
from unfreeze.training import model as model_lib
from unfreeze.training.artifacts import load_model, phase_meta, save_model
from unfreeze.training.inputs import load_images

TINY = {"task": "multilabel", "data": {"source": "labels.csv"},
        "model": {"image_size": 75, "weights": None, "hidden_units": 16},
        "head": {"epochs": 1, "batch_size": 8}, "finetune": {"epochs": 1, "batch_size": 8},
        "train": {"xla": False}}


def test_weighted_bce_is_the_hand_computed_mean_over_labels():
    y = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    p = np.array([[0.8, 0.3], [0.4, 0.9]], np.float32)
    loss = losses.WeightedBinaryCrossentropy([3.0, 1.0])
    # image 1: (3·-log .8 + -log .7) / 2; image 2: (-log .6 + -log .9) / 2
    want = np.mean([(3 * -np.log(.8) - np.log(.7)) / 2, (-np.log(.6) - np.log(.9)) / 2])
    assert float(loss(y, p)) == pytest.approx(want, rel=1e-5)
    plain = keras.losses.BinaryCrossentropy()
    assert float(losses.WeightedBinaryCrossentropy([1, 1])(y, p)) == pytest.approx(
        float(plain(y, p)), rel=1e-5)
    smoothed = losses.WeightedBinaryCrossentropy([1, 1], label_smoothing=0.2)
    assert float(smoothed(y, p)) == pytest.approx(
        float(keras.losses.BinaryCrossentropy(label_smoothing=0.2)(y, p)), rel=1e-5)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert again.pos_weight == [3.0, 1.0]


def test_balanced_positive_weights_are_negatives_over_positives():
    labels = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], np.float32)
    assert losses.balanced_pos_weights(labels) == pytest.approx([1 / 3, 3.0])
    assert losses.balanced_pos_weights(np.ones((3, 1), np.float32)) == [1.0]


def data_for(tmp_path, n=48):
    rows = make_multilabel_images(tmp_path, n=n)
    classes = ["blue", "red"]
    table = pa.table({
        "path": [r["path"] for r in rows], "label": [r["label"] for r in rows],
        "labels": pa.array([sorted(r["label"].split(";")) if r["label"] else [] for r in rows],
                           pa.list_(pa.string())),
        "split": ["val" if i % 4 == 0 else "train" for i in range(n)]})
    table = table.replace_schema_metadata({b"task": b"multilabel",
                                           b"classes": json.dumps(classes).encode()})
    return training_rows(table, tmp_path)


def test_both_phases_train_sigmoid_outputs_on_multi_hot_targets(tmp_path, eager):
    data = data_for(tmp_path)
    assert data.classes == ["blue", "red"] and data.train.labels.shape == (36, 2)
    params = params_from_dict({**TINY, "head": {"epochs": 2, "batch_size": 8,
                                                "class_weight": "balanced"}})
    model, s1 = recipe.phase_one(params, data, tmp_path / "reports/head")
    assert model_lib.is_multilabel(model) and model.output_shape == (None, 2)
    # compiled with each label's positives weighted by its negatives / positives in train
    weights = losses.balanced_pos_weights(data.train.labels)
    assert model.loss.pos_weight == pytest.approx(weights) and weights != [1.0, 1.0]
    images = load_images(data.train.paths, 75)
    probs = model.predict(images, verbose=0)
    assert not np.allclose(probs.sum(axis=1), 1.0)  # independent labels, not a softmax
    p = np.clip(probs, 1e-7, 1 - 1e-7)  # the loss Keras computes is the weighted BCE by hand
    y = data.train.labels
    hand = np.mean(-(np.array(weights) * y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert model.evaluate(images, y, verbose=0)[0] == pytest.approx(hand, rel=1e-4)
    save_model(model, tmp_path / "head", phase_meta(data.classes, 75, "labels.csv", "head",
                                                    params.head, s1))
    again = load_model(tmp_path / "head" / "model.keras")
    assert model_lib.is_multilabel(again)
    np.testing.assert_allclose(again.predict(images, verbose=0), probs, atol=1e-5)
    _, s2 = recipe.phase_two(params, again, data, tmp_path / "reports/finetune")
    assert s2["unfrozen_layers_with_weights"] > 0 and s2["epochs_run"] == 1


@pytest.mark.parametrize("phase", [{"cached_views": 0, "label_smoothing": 0.1},
                                   {"cached_views": 2}])
def test_mixing_and_fresh_batches_carry_multi_hot_targets(tmp_path, eager, phase):
    data = data_for(tmp_path, n=24)
    params = params_from_dict({**TINY, "augment": {"mixup": 0.4, "cutmix": 1.0},
                               "head": {"epochs": 2, "batch_size": 8, **phase},
                               "finetune": {"cached_views": 0}})
    model, summary = recipe.phase_one(params, data, tmp_path / "reports/head",
                                      then_finetune=False)
    assert summary["epochs_run"] == 2 and model_lib.is_multilabel(model)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)


def test_mixed_multi_hot_targets_blend_the_two_label_rows():
    import tensorflow as tf

    from unfreeze.training import mixing

    spec = mixing.Targets.of(2, None, None)
    a = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    b = tf.constant([[0.0, 1.0], [0.0, 0.0]])
    y, w = mixing.targets(spec, a, b, tf.constant([0.25, 0.5]))
    np.testing.assert_allclose(y.numpy(), [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(w.numpy(), [1.0, 1.0])  # weights live in the loss
    plain, _ = mixing.plain_targets(spec, a)
    np.testing.assert_allclose(plain.numpy(), a.numpy())


def test_an_interrupted_multilabel_phase_resumes_from_its_backup(tmp_path, eager, monkeypatch):
    from unfreeze.config.params import AugmentParams, HeadParams, ModelParams, Params
    from unfreeze.training import backup as backup_lib
    from unfreeze.training import fit
    from unfreeze.training.backup import Backup

    monkeypatch.chdir(tmp_path)
    data = data_for(tmp_path, n=24)
    phase = HeadParams(epochs=3, batch_size=8, patience=3, cached_views=1,
                       class_weight="balanced")
    backup = Backup.for_phase(tmp_path / "backup", Params(head=phase), ("seed", "head"))
    seen: list[int] = []
    save = backup_lib.BackupCallback.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        save(self, epoch, logs)
        seen.append(epoch)
        if epoch == 0 and len(seen) == 1:
            raise KeyboardInterrupt  # stands in for a kill right after the backup

    monkeypatch.setattr(backup_lib.BackupCallback, "on_epoch_end", on_epoch_end)

    def tiny() -> keras.Model:
        keras.utils.set_random_seed(0)
        m = model_lib.build(ModelParams(image_size=75, weights=None, hidden_units=8), 2,
                            multilabel=True)
        fit.compile_phase(m, m, phase, None, data.train.labels, "full")
        return m

    with pytest.raises(KeyboardInterrupt):
        fit.fit_phase(tiny(), data, phase, AugmentParams(), 75, 0, tmp_path / "r", backup)
    summary = fit.fit_phase(tiny(), data, phase, AugmentParams(), 75, 0, tmp_path / "r",
                            backup)
    assert seen == [0, 1, 2] and summary["resumed_after_epoch"] == 1
    assert summary["epochs_run"] == 3
