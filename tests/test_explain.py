"""Grad-CAM through the nested InceptionV3 base, sample choice, the PNG grid; predict inputs."""

import numpy as np
import pytest

from unfreeze.explain import gradcam, plot_grid, sample_for_gradcam
from unfreeze.predict import PredictError, expand_inputs, readable, write_table


@pytest.fixture(scope="module")
def tiny_model():
    from unfreeze import model as model_lib
    from unfreeze.params import ModelParams

    # 139 px: the last block (mixed10) is 3 × 3 cells, so the map has spatial detail
    return model_lib.build(ModelParams(image_size=139, weights=None, hidden_units=8), 2)


def test_gradcam_follows_the_models_own_layers(tiny_model):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 139, 139, 3)).astype(np.float32)
    heat, probs = gradcam(tiny_model, images)
    # the same probabilities as the model itself: base in inference mode, dropout off
    np.testing.assert_allclose(probs, tiny_model.predict(images, verbose=0), atol=1e-5)
    assert heat.shape == (3, 139, 139) and heat.min() >= 0 and heat.max() <= 1
    assert all(h.max() in (0.0, 1.0) for h in heat)  # normalised per image
    assert any(h.std() > 0.01 for h in heat)  # not one flat value: resized from 3 × 3 cells
    # each class gets its own map: the two classes' gradients differ
    other, _ = gradcam(tiny_model, images, 1 - probs.argmax(axis=1))
    assert not np.allclose(heat, other)


def test_gradcam_refuses_a_model_without_the_unfreeze_layers():
    import keras

    inputs = keras.Input((8,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="built by unfreeze"):
        gradcam(plain, np.zeros((1, 8), np.float32))


def test_sample_takes_correct_and_misclassified_per_class_most_confident_first():
    y_true = np.array([0, 0, 0, 1, 1, 1, 0])
    y_pred = np.array([0, 0, 1, 1, 0, 1, 1])
    confidence = np.array([0.6, 0.9, 0.7, 0.8, 0.95, 0.99, 0.55])
    # class 0 correct: rows 1 (.9), 0 (.6); class 0 wrong: 2 (.7), 6 (.55); class 1 ...
    assert sample_for_gradcam(y_true, y_pred, confidence, 2, 1) == [1, 2, 5, 4]
    assert sample_for_gradcam(y_true, y_pred, confidence, 2, 2) == [1, 0, 2, 6, 5, 3, 4]
    assert sample_for_gradcam(y_true, y_pred, confidence, 2, 0) == []


def test_grid_png_written_even_without_images(tmp_path):
    images = np.zeros((0, 75, 75, 3), np.float32)
    out = plot_grid(tmp_path / "empty.png", images, images[..., 0], [])
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_predict_inputs_files_folders_globs_and_unreadable(tmp_path, image_folder):
    files = expand_inputs([str(image_folder / "cat"), str(image_folder / "dog/dog_00*.png"),
                           str(image_folder / "cat/cat_000.png")])
    assert len(files) == 12 + 10 and len(set(files)) == len(files)  # the repeat counted once
    (tmp_path / "bad.png").write_bytes(b"nope")
    errors = readable([files[0], tmp_path / "bad.png"])
    assert errors[0] == "" and "cannot decode" in errors[1]
    with pytest.raises(PredictError, match="'missing/'"):
        expand_inputs(["missing/"])
    import pyarrow as pa

    with pytest.raises(PredictError, match=r"\.parquet or \.csv"):
        write_table(pa.table({"a": [1]}), tmp_path / "out.txt")
