"""Phase-one feature caching: the cached head is the model's own head, views cycle by epoch."""

import numpy as np
from test_train import splits_for

from unfreeze import features, recipe, train
from unfreeze import model as model_lib
from unfreeze.inputs import load_images
from unfreeze.params import params_from_dict


def test_views_cycle_by_epoch_and_every_sample_is_seen_once_per_epoch():
    views = np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)  # 3 views of 5 samples
    labels = np.array([0, 1, 0, 1, 1])
    ds = features.CachedViews(views, labels, batch_size=2, class_weight={0: 2.0, 1: 0.5},
                              seed=7)
    assert len(ds) == 3  # 2 + 2 + 1: the last partial batch is kept
    for epoch in range(4):
        batches = [ds[i] for i in range(len(ds))]
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        w = np.concatenate([b[2] for b in batches])
        rows = (x[:, 0] - views[epoch % 3, 0, 0]) / 2  # which sample each row is
        assert sorted(rows.astype(int).tolist()) == [0, 1, 2, 3, 4]
        assert np.array_equal(y, labels[rows.astype(int)])  # labels stay with their rows
        assert np.array_equal(w, np.where(y == 0, 2.0, 0.5))
        ds.on_epoch_end()
    resumed = features.CachedViews(views, labels, 2, None, seed=7, first_epoch=2)
    fresh = features.CachedViews(views, labels, 2, None, seed=7)
    fresh.on_epoch_end()
    fresh.on_epoch_end()
    assert all(np.array_equal(resumed[i][0], fresh[i][0]) for i in range(3))


def test_phase_one_on_cached_views_trains_the_full_models_own_head(image_folder, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = train.training_rows(splits_for(image_folder), image_folder)
    params = params_from_dict({
        "model": {"image_size": 75, "weights": None, "hidden_units": 8},
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
    extractor, head = features.split(model)
    for name in features.HEAD_LAYERS:
        assert head.get_layer(name) is model.get_layer(name)  # shared, not copied
    paths = data.val.paths
    feats = features.extract(extractor, paths, 75, batch_size=4)
    assert feats.shape == (len(paths), 2048)
    direct = model.predict(load_images(paths, 75), verbose=0)
    np.testing.assert_allclose(head.predict(feats, verbose=0), direct, atol=1e-6)
