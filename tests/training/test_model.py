import keras
import numpy as np
import pytest

from unfreeze.config.errors import ParamsError, WeightsError
from unfreeze.config.params import ModelParams, PhaseParams
from unfreeze.training import model as model_lib
from unfreeze.training.artifacts import load_model

SIZE = 75


@pytest.fixture(scope="module")
def built():
    return model_lib.build(ModelParams(image_size=SIZE, weights=None, hidden_units=8), 3)


def test_model_takes_raw_pixels_and_preprocesses_like_inception(built, eager):
    raw = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    inner = built.get_layer("preprocess")(raw)
    expected = keras.applications.inception_v3.preprocess_input(raw.copy())
    np.testing.assert_allclose(np.asarray(inner), expected, atol=1e-6)
    assert float(np.min(inner)) >= -1.0 and float(np.max(inner)) <= 1.0
    probs = built.predict(raw, verbose=0)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_head_layout_and_frozen_base(built):
    names = [layer.name for layer in built.layers]
    assert names == ["image", "preprocess", "inception_v3", "pool", "dropout", "hidden",
                     "predictions"]
    assert not model_lib.base_of(built).trainable
    trainable = {w.path.split("/")[0] for w in built.trainable_weights}
    assert trainable == {"hidden", "predictions"}


def fresh():
    return model_lib.build(ModelParams(image_size=SIZE, weights=None, hidden_units=8), 2)


def test_unfreeze_from_block_matches_the_keras_recipe_and_keeps_batchnorm_frozen():
    m = fresh()
    model_lib.unfreeze(m, "mixed9")
    base = model_lib.base_of(m)
    flags = [layer.trainable for layer in base.layers]
    first = flags.index(True)
    assert first == 249  # "freeze the first 249 layers" of the Keras fine-tuning example
    assert base.layers[first - 1].name == "mixed8"
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
        elif base.layers.index(layer) >= first:
            assert layer.trainable
    names = [layer.name for layer in base.layers]
    stem_pools = [i for i, layer in enumerate(base.layers[: names.index("mixed0")])
                  if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(stem_pools) == 2 and model_lib.block_start(base, "mixed0") == stem_pools[1] + 1


def test_unfreeze_top_n_layers():
    m = fresh()
    model_lib.unfreeze(m, 20)
    base = model_lib.base_of(m)
    flags = [layer.trainable for layer in base.layers]
    n = len(flags)
    assert not any(flags[: n - 20])
    non_bn = [not isinstance(layer, keras.layers.BatchNormalization)
              for layer in base.layers[n - 20:]]
    assert flags[n - 20:] == non_bn
    with pytest.raises(ParamsError, match="5000 layers requested"):
        model_lib.unfreeze(fresh(), 5000)


def test_phase_two_step_leaves_batchnorm_statistics_untouched(eager):
    m = fresh()
    model_lib.unfreeze(m, "mixed9")
    model_lib.compile_for(m, PhaseParams(learning_rate=1e-2), jit_compile=False)
    bn = [layer for layer in model_lib.base_of(m).layers
          if isinstance(layer, keras.layers.BatchNormalization)][-1]
    before = [np.array(w) for w in bn.weights]
    conv = [layer for layer in model_lib.base_of(m).layers
            if isinstance(layer, keras.layers.Conv2D)][-1]
    kernel_before = np.array(conv.kernel)
    x = np.random.default_rng(1).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    m.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    for a, b in zip(before, bn.weights, strict=True):
        np.testing.assert_array_equal(a, np.array(b))  # moving stats and gamma/beta unchanged
    assert not np.array_equal(kernel_before, np.array(conv.kernel))  # unfrozen conv learned


def test_missing_or_wrong_weights_file_fails_with_the_three_options(tmp_path):
    with pytest.raises(WeightsError) as info:
        model_lib.build_base(SIZE, str(tmp_path / "nope.h5"))
    for option in ("`imagenet`", "local", "`null`", "nope.h5"):
        assert option in str(info.value)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    wrong = tmp_path / "dense.weights.h5"
    other.save_weights(wrong)
    with pytest.raises(WeightsError, match="is not an InceptionV3 no-top weights file"):
        model_lib.build_base(SIZE, str(wrong))


def test_local_weights_file_is_loaded(tmp_path):
    source = model_lib.build_base(SIZE, None)
    path = tmp_path / "inception.weights.h5"
    source.save_weights(path)
    loaded = model_lib.build_base(SIZE, str(path))
    np.testing.assert_array_equal(np.array(source.weights[0]), np.array(loaded.weights[0]))


def test_unreachable_imagenet_download_fails_fast_with_the_options(tmp_path, monkeypatch):
    # A real Keras download through a proxy that refuses connections (port 9 on loopback).
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(WeightsError) as info:
        model_lib.build_base(SIZE, "imagenet")
    assert "could not download" in str(info.value) and "`null`" in str(info.value)


def test_saved_model_round_trips_in_safe_mode(built, tmp_path, eager):
    path = tmp_path / "m.keras"
    built.save(path)
    loaded = load_model(path)
    x = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(built.predict(x, verbose=0), loaded.predict(x, verbose=0),
                               atol=1e-6)
    with pytest.raises(ValueError, match=r"only `\.keras`"):
        load_model(tmp_path / "m.pkl")


def test_legacy_h5_loads_only_behind_the_explicit_flag_with_a_warning(tmp_path):
    small = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "old.h5"
    small.save(path)
    with pytest.raises(ValueError, match=r"legacy HDF5.*re-save it as \.keras"):
        load_model(path)
    with pytest.warns(UserWarning, match="only do this for a file you trust"):
        loaded = load_model(path, legacy_h5=True)
    np.testing.assert_array_equal(loaded.get_weights()[0], small.get_weights()[0])


def test_a_keras_file_with_code_inside_is_refused(tmp_path):
    rigged = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2)])
    rigged.save(tmp_path / "rigged.keras")
    with pytest.raises(ValueError, match=r"(?i)lambda"):
        load_model(tmp_path / "rigged.keras")
