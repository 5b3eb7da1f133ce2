"""Feature caching: the cached parts are the model's own layers, views cycle by epoch."""

import numpy as np
from conftest import splits_for

from unfreeze.config.params import params_from_dict
from unfreeze.dataset.rows import training_rows
from unfreeze.training import features, recipe
from unfreeze.training import model as model_lib
from unfreeze.training.inputs import load_images


def test_views_cycle_by_epoch_and_every_sample_is_seen_once_per_epoch():
    views = np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)  # 3 views of 5 samples
    labels = np.array([0, 1, 0, 1, 1])
    ds = features.CachedViews(views, labels, batch_size=2, class_weight={0: 2.0, 1: 0.5},
                              seed=7)
    assert len(ds) == 3  # 2 + 2 + 1: the last partial batch is kept
    orders = []
    for epoch in range(4):
        batches = [ds.batch(epoch, i) for i in range(len(ds))]
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        w = np.concatenate([b[2] for b in batches])
        rows = (x[:, 0] - views[epoch % 3, 0, 0]) / 2  # which sample each row is
        assert sorted(rows.astype(int).tolist()) == [0, 1, 2, 3, 4]
        assert np.array_equal(y, labels[rows.astype(int)])  # labels stay with their rows
        assert np.array_equal(w, np.where(y == 0, 2.0, 0.5))
        orders.append(rows.tolist())
    assert len({tuple(o) for o in orders}) > 1  # reshuffled between epochs


def as_numpy(batches) -> list[tuple[np.ndarray, ...]]:
    return [tuple(np.asarray(a) for a in b) for b in batches]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True))


def test_the_dataset_of_cached_views_holds_each_epochs_batches_in_turn_from_first_epoch():
    """What ``fit`` reads: epoch after epoch, each batch fixed by its epoch and index, so a
    resumed phase (``first_epoch``) and an uninterrupted one train on the same batches."""
    views = np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)
    labels = np.array([0, 1, 0, 1, 1])
    fresh = features.CachedViews(views, labels, 2, None, seed=7)
    expected = [fresh.batch(e, i) for e in range(4) for i in range(3)]
    four = fresh.dataset(epochs=4)
    assert four.cardinality() == 12
    assert same_batches(as_numpy(four.as_numpy_iterator()), expected)
    assert same_batches(as_numpy(four.as_numpy_iterator()), expected)  # again, the same
    endless = fresh.dataset()
    assert endless.cardinality() == -1  # tf.data.INFINITE_CARDINALITY
    assert same_batches(as_numpy(endless.take(12).as_numpy_iterator()), expected)
    resumed = features.CachedViews(views, labels, 2, None, seed=7, first_epoch=2)
    assert same_batches(as_numpy(resumed.dataset().take(6).as_numpy_iterator()), expected[6:])


def test_fit_on_cached_views_trains_on_each_epochs_batches_in_order(eager):
    """Through Keras' ``fit`` (steps_per_epoch, validation after each epoch): the model sees
    exactly the batches of epochs 0, 1, 2 in order; resumed at epoch 2, those of epoch 2."""
    import keras

    seen: list[np.ndarray] = []

    class Spy(keras.layers.Layer):
        def call(self, x, training=None):
            if training:
                seen.append(np.asarray(x))
            return x

    views = np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3)
    labels = np.array([0, 1, 0, 1, 1, 0, 1])
    model = keras.Sequential([keras.Input((3,)), Spy(), keras.layers.Dense(1, "sigmoid")])
    model.compile("sgd", "binary_crossentropy")
    for first in (0, 2):
        seen.clear()
        train = features.CachedViews(views, labels, 3, None, seed=1, first_epoch=first)
        val = features.CachedViews([views[0]], labels, 3, None, seed=1, shuffle=False)
        model.fit(train.dataset(), validation_data=val.dataset(epochs=1), epochs=3,
                  initial_epoch=first, steps_per_epoch=len(train), shuffle=False, verbose=0)
        expected = [train.batch(e, i)[0] for e in range(first, 3) for i in range(len(train))]
        assert len(seen) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(seen, expected, strict=True))


def test_phase_one_on_cached_views_trains_the_full_models_own_head(image_folder, tmp_path,
                                                                   monkeypatch, eager):
    monkeypatch.chdir(tmp_path)
    data = training_rows(splits_for(image_folder), image_folder)
    params = params_from_dict({
        "model": {"image_size": 75, "weights": None, "hidden_units": 8},
        "train": {"xla": False},  # XLA compiles ~23 s a phase; e2e kill tests train with it
        "head": {"epochs": 3, "batch_size": 8, "patience": 0, "cached_views": 2,
                 "learning_rate": 0.01}})
    recipe.seed_everything(params.seed, False)  # the initial head phase_one will build
    untrained = model_lib.build(params.model, 2).get_layer("predictions").get_weights()[0]
    model, summary = recipe.phase_one(params, data, tmp_path / "report")
    assert summary["cached_views"] == 2 and summary["epochs_run"] == 3
    assert summary["n_train"] == 18 and summary["feature_seconds"] > 0
    kernel = model.get_layer("predictions").get_weights()[0]
    assert not np.array_equal(kernel, untrained)  # the full model's head was trained
    assert not model_lib.base_of(model).trainable

    # the head trained on cached features is the full model's head, layer for layer
    extractor, head = features.split_model(model)
    for name in model_lib.HEAD_LAYERS[1:]:
        assert head.get_layer(name) is model.get_layer(name)  # shared, not copied
    paths = data.val.paths
    feats = features.extract(extractor, paths, 75)
    assert feats.shape == (len(paths), 2048)
    direct = model.predict(load_images(paths, 75), verbose=0)
    np.testing.assert_allclose(head.predict(feats, verbose=0), direct, atol=1e-6)


def test_phase_two_on_cached_activations_trains_the_full_models_unfrozen_blocks(
        image_folder, tmp_path, monkeypatch, eager):
    monkeypatch.chdir(tmp_path)
    data = training_rows(splits_for(image_folder), image_folder)
    params = params_from_dict({
        "model": {"image_size": 75, "weights": None, "hidden_units": 8},
        "train": {"xla": False},  # XLA compiles ~23 s a phase; e2e kill tests train with it
        "head": {"epochs": 1, "batch_size": 8},
        "finetune": {"epochs": 1, "batch_size": 8, "patience": 0, "cached_views": 1,
                     "learning_rate": 0.01, "unfreeze_from": "mixed9"}})
    model, _ = recipe.phase_one(params, data, tmp_path / "head")
    base = model_lib.base_of(model)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in base.layers
              if layer.weights}
    model, summary = recipe.phase_two(params, model, data, tmp_path / "finetune")
    assert summary["cached_views"] == 1 and summary["epochs_run"] == 1

    start = model_lib.unfreeze_start(base, "mixed9")
    for i, layer in enumerate(base.layers):
        if not layer.weights:
            continue
        same = all(np.array_equal(a, b) for a, b in zip(before[layer.name],
                                                        layer.get_weights(), strict=True))
        frozen = i < start or layer.name.startswith("batch_normalization")
        assert same == frozen, layer.name  # unfrozen convolutions moved, the rest did not

    # the part trained on cached activations is the full model's own layers
    extractor, top = features.split_model(model, "mixed9")
    upper = top.get_layer("upper_base")
    assert all(any(layer is other for other in base.layers) for layer in upper.layers[1:])
    assert top.get_layer("predictions") is model.get_layer("predictions")
    feats = features.extract(extractor, data.val.paths, 75)
    assert feats.shape[1:] == tuple(base.get_layer("mixed8").output.shape[1:])
    direct = model.predict(load_images(data.val.paths, 75), verbose=0)
    np.testing.assert_allclose(top.predict(feats, verbose=0), direct, atol=1e-6)


def test_a_layer_count_inside_a_block_cuts_at_that_blocks_start(eager):
    model = model_lib.build(params_from_dict({"model": {"image_size": 75, "weights": None,
                                                        "hidden_units": 8}}).model, 2)
    base = model_lib.base_of(model)
    model_lib.unfreeze(model, 17)  # the classic recipe's last 20 model layers
    start = model_lib.unfreeze_start(base, 17)
    assert base.layers[features.cut_index(base, start)].name == "mixed9"
    assert features.cut_index(base, model_lib.unfreeze_start(base, "mixed9")) == [
        layer.name for layer in base.layers].index("mixed8")
    extractor, top = features.split_model(model, 17)
    images = np.random.default_rng(0).random((3, 75, 75, 3)).astype(np.float32) * 255
    np.testing.assert_allclose(top.predict(extractor.predict(images, verbose=0), verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)
    upper = top.get_layer("upper_base")  # mixed10's first layers are in it, still frozen
    assert sum(1 for layer in upper.layers if layer.trainable and layer.weights) == sum(
        1 for layer in base.layers[start:] if layer.trainable and layer.weights) > 0
