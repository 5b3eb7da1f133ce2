"""The shared pass: phase one leaves phase two's activations on disk, exact, content-keyed."""

import hashlib
import itertools
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from conftest import splits_for

from unfreeze.config.params import AugmentParams, params_from_dict
from unfreeze.dataset.rows import training_rows
from unfreeze.training import activations, features, hardware, inputs, recipe
from unfreeze.training import model as model_lib
from unfreeze.training.activations import ActivationStore, View
from unfreeze.training.cache import DecodedCache

TINY = {"model": {"image_size": 75, "weights": None, "hidden_units": 8},
        "train": {"xla": False},
        "head": {"epochs": 1, "batch_size": 8, "cached_views": 1},
        "finetune": {"epochs": 1, "batch_size": 8, "patience": 0, "cached_views": 2,
                     "unfreeze_from": "mixed9"}}


def with_keys(table: pa.Table, root: Path) -> pa.Table:
    """The splits table with the content hash of every image, as prepare writes it."""
    keys = [hashlib.sha256((root / p).read_bytes()).hexdigest()
            for p in table["path"].to_pylist()]
    return table.append_column("sha256", pa.array(keys))


def augmented(paths: list[str], view: View, size: int) -> np.ndarray:
    """A view's images made directly: decode, then warp image i by draw i of the view."""
    images = inputs.load_images(paths, size)
    u = inputs.view_draws(len(paths), view.seed)
    return inputs.warp(tf.constant(images), inputs.transforms_from_uniform(
        tf.constant(u), size, size, view.augment), view.augment.fill_mode).numpy()


def count_computes(monkeypatch) -> list[View]:
    computed: list[View] = []
    real = activations.compute

    def counting(lower, paths, keys, size, view, file):
        computed.append(view)
        return real(lower, paths, keys, size, view, file)

    monkeypatch.setattr(activations, "compute", counting)
    return computed


def test_phase_one_leaves_phase_twos_exact_views_and_phase_two_computes_none(
        image_folder, tmp_path, monkeypatch, eager):
    monkeypatch.chdir(tmp_path)
    data = training_rows(with_keys(splits_for(image_folder), image_folder), image_folder)
    params = params_from_dict(TINY)
    model, _ = recipe.phase_one(params, data, tmp_path / "head")
    stored = sorted((tmp_path / ".unfreeze/cache/activations").rglob("*.npy"))
    assert len(stored) == 4  # train: the head's plain view + phase two's 2 views; val: plain

    computed = count_computes(monkeypatch)
    model, summary = recipe.phase_two(params, model, data, tmp_path / "finetune")
    assert computed == [] and summary["cached_views"] == 2  # one pass served both phases

    extractor, _ = features.split_at(model, "mixed9")  # the lower base never trains
    store, lower_id = ActivationStore(), activations.identity(extractor, 75)
    views = activations.views_of(2, params.augment, params.seed)
    assert len(set(views)) == 2 and all(v.augment for v in views)
    for view in views:
        kept = np.load(store.file(store.key(lower_id, 75, data.train.keys, view)))
        direct = extractor.predict(augmented(data.train.paths, view, 75), verbose=0)
        assert kept.shape == direct.shape == (len(data.train.paths), 1, 1, 1280)
        np.testing.assert_allclose(kept, direct, atol=1e-5)
    val = np.load(store.file(store.key(lower_id, 75, data.val.keys, View())))
    np.testing.assert_allclose(val, extractor.predict(inputs.load_images(data.val.paths, 75),
                                                      verbose=0), atol=1e-5)


def test_a_view_does_not_depend_on_batch_size_or_the_global_seed(image_folder):
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))[:5]
    view = View(AugmentParams(rotation=30, zoom=0.2, horizontal_flip=True), seed=11)
    draws = inputs.view_draws(len(paths), view.seed)

    def images(batch: int, global_seed: int) -> np.ndarray:
        keras.utils.set_random_seed(global_seed)
        ds = inputs.make_view_dataset(paths, 40, batch, view.augment, draws)
        return np.concatenate(list(ds.as_numpy_iterator()))

    first = images(2, 0)
    np.testing.assert_array_equal(first, images(5, 123))
    np.testing.assert_allclose(first, augmented(paths, view, 40), atol=1e-4)
    assert not np.allclose(first, inputs.load_images(paths, 40))  # it is augmented
    np.testing.assert_array_equal(draws[:3], inputs.view_draws(3, view.seed))  # row i: image i


def test_every_listed_change_gives_another_key_and_a_saved_model_the_same(tmp_path, eager):
    model = model_lib.build(params_from_dict(TINY).model, 2)
    store = ActivationStore(DecodedCache(tmp_path / "cache"))
    lower9 = features.split_at(model, "mixed9")[0]
    lower_id = activations.identity(lower9, 75)
    keys, view = ["a", "b"], View(AugmentParams(), seed=3)
    base = store.key(lower_id, 75, keys, view)
    assert store.key(lower_id, 75, list(keys), View(AugmentParams(), seed=3)) == base
    changed = {
        "unfreeze_from": store.key(activations.identity(features.split_at(model, "mixed8")[0], 75),
                                   75, keys, view),
        "image size": store.key(lower_id, 99, keys, view),
        "augmentation": store.key(lower_id, 75, keys, View(
            replace(AugmentParams(), rotation=10.0), seed=3)),
        "view seed": store.key(lower_id, 75, keys, View(AugmentParams(), seed=4)),
        "no augmentation": store.key(lower_id, 75, keys, View()),
        "data": store.key(lower_id, 75, ["a", "c"], view),
        "order": store.key(lower_id, 75, ["b", "a"], view),
    }
    assert len(set(changed.values()) | {base}) == len(changed) + 1, changed

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # phase two loads phase one's saved model
    assert activations.identity(features.split_at(loaded, "mixed9")[0], 75) == lower_id
    conv = next(layer for layer in model_lib.base_of(model).layers if layer.weights)
    kernel = conv.get_weights()
    conv.set_weights([kernel[0] + 1e-3, *kernel[1:]])  # other weights (imagenet / a file)
    assert activations.identity(lower9, 75) != lower_id
    conv.set_weights(kernel)
    assert activations.identity(lower9, 75) == lower_id
    hardware.configure(True)  # train.xla: true compiles the pass: other kernels, other bits
    try:
        assert activations.identity(lower9, 75) != lower_id
    finally:
        hardware.configure("auto")


def test_a_killed_pass_leaves_complete_views_only_and_the_rerun_computes_the_rest(
        image_folder, tmp_path, monkeypatch, eager):
    model = model_lib.build(params_from_dict(TINY).model, 2)
    lower = features.split_at(model, "mixed9")[0]
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))[:6]
    keys = [f"{i:02x}" for i in range(6)]
    store = ActivationStore(DecodedCache(tmp_path / "cache"))
    views = activations.views_of(2, AugmentParams(), seed=0)
    real = activations.compute

    def killed_at_second(lower, paths, keys, size, view, file):
        if view == views[1]:
            raise KeyboardInterrupt  # the stage is stopped while the second view is written
        return real(lower, paths, keys, size, view, file)

    monkeypatch.setattr(activations, "compute", killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        store.views(lower, paths, keys, 75, views)
    files = list((tmp_path / "cache/activations").rglob("*"))
    assert [f.name for f in files if f.is_file()] == [
        f"{store.key(activations.identity(lower, 75), 75, keys, views[0])}.npy"]

    monkeypatch.setattr(activations, "compute", real)
    computed = count_computes(monkeypatch)
    first, second = store.views(lower, paths, keys, 75, views)
    assert computed == [views[1]]  # the complete view is reused
    assert isinstance(first, np.memmap) and isinstance(second, np.memmap)  # read from disk
    assert not np.allclose(first, second)  # two different augmented views
    Path(first.filename).write_bytes(b"damaged")  # a damaged file is computed again
    computed.clear()
    again = store.views(lower, paths, keys, 75, views)
    assert computed == [views[0]] and np.array_equal(again[1], second)


def test_views_stream_from_disk_a_training_epoch_holds_no_copy_of_them(tmp_path):
    """CachedViews over memory-mapped views reads the rows of each batch only: the process's
    anonymous memory grows by far less than the 160 MB of views it trains on."""
    script = textwrap.dedent(f"""
        import numpy as np
        from unfreeze.training.features import CachedViews

        def anon_mb():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024

        n, views = 5000, []
        for v in range(2):
            path = "{tmp_path}/view%d.npy" % v
            array = np.lib.format.open_memmap(path, "w+", np.float32, (n, 2, 2, 1000))
            array[:] = v
            array.flush()
            del array
            views.append(np.load(path, mmap_mode="r"))
        ds = CachedViews(views, np.arange(n) % 2, 32, None, seed=0)
        batches = ds.dataset(epochs=2).as_numpy_iterator()  # what fit reads
        start, peak, rows = anon_mb(), 0.0, 0
        for epoch in range(2):
            for i in range(len(ds)):
                x, y, w = next(batches)
                assert (x == epoch % 2).all()
                rows += len(x)
                peak = max(peak, anon_mb())
        print(rows, peak - start)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[0]) == 2 * 5000
    assert float(out[1]) < 20, f"anonymous memory grew by {out[1]} MB over 160 MB of views"


@pytest.mark.parametrize(("n", "replicas"), [(0, 1), (1, 1), (500, 1), (513, 1), (1027, 2),
                                             (1025, 4), (65, 2)])
def test_view_passes_go_in_chunks_of_whole_batches_none_smaller_than_the_replicas(
        n, replicas):
    from unfreeze.training.distribute import batch_sizes

    batch = activations.VIEW_BATCH * replicas
    chunks = activations.row_chunks(n, batch, replicas)
    assert sum(c.stop - c.start for c in chunks) == n
    assert all(a.stop == b.start for a, b in itertools.pairwise(chunks))  # in order, no gap
    bounds = set(np.cumsum([0, *batch_sizes(n, batch, replicas)]).tolist())
    for chunk in chunks:
        assert chunk.start in bounds and chunk.stop in bounds  # at the pass's batch bounds
        assert chunk.stop - chunk.start >= min(replicas, n)
        assert chunk.stop - chunk.start <= activations.CHUNK_BATCHES * batch + replicas * 2


def test_without_a_store_phase_one_computes_nothing_for_phase_two(
        image_folder, tmp_path, monkeypatch, eager):
    """No cache (UNFREEZE_CACHE_DIR=""), no content keys, a multi-worker cluster, or no
    phase two (cv.phases [head]): phase one computes its own view in memory, and only it."""
    monkeypatch.chdir(tmp_path)
    data = training_rows(with_keys(splits_for(image_folder), image_folder), image_folder)
    params = params_from_dict(TINY)
    computed = count_computes(monkeypatch)
    recipe.phase_one(params, data, tmp_path / "head", then_finetune=False)
    assert computed == [View(), View()]  # train and val, plain: the head's only
    assert not (tmp_path / ".unfreeze/cache/activations").exists()
    monkeypatch.setenv("UNFREEZE_CACHE_DIR", "")
    assert not ActivationStore().enabled(data.train.keys)
    monkeypatch.delenv("UNFREEZE_CACHE_DIR")
    assert ActivationStore().enabled(data.train.keys) and not ActivationStore().enabled(None)
    monkeypatch.setattr(activations, "is_multi_worker", lambda: True)
    assert not ActivationStore().enabled(data.train.keys)


def test_the_views_version_and_the_device_are_part_of_the_key(tmp_path, monkeypatch):
    store = ActivationStore(DecodedCache(tmp_path / "cache"))
    key = store.key("lower", 75, ["a"], View())
    monkeypatch.setattr(activations, "VIEWS_VERSION", activations.VIEWS_VERSION + 1)
    assert store.key("lower", 75, ["a"], View()) != key
    monkeypatch.undo()
    monkeypatch.setattr(activations, "devices", lambda: ["another CPU"])
    assert store.key("lower", 75, ["a"], View()) != key
