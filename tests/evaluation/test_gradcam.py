"""Grad-CAM through the nested InceptionV3 base, sample choice, the PNG grid."""

import numpy as np
import pytest
from PIL import Image

from unfreeze.evaluation.gradcam import gradcam, plot_grid, sample_for_gradcam


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    from unfreeze.config.params import ModelParams
    from unfreeze.training import model as model_lib

    keras.utils.set_random_seed(0)  # random weights: a seed makes the maps the same each run
    # 139 px: the last block (mixed10) is 3 × 3 cells, so the map has spatial detail
    return model_lib.build(ModelParams(image_size=139, weights=None, hidden_units=8), 2)


def test_gradcam_follows_the_models_own_layers(tiny_model, eager):
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


def test_grid_png_is_an_image_of_one_tile_per_image(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (5, 75, 75, 3)).astype(np.float32)
    out = plot_grid(tmp_path / "grid.png", images, images[..., 0] / 255, ["t"] * 5, columns=4)
    with Image.open(out) as png:  # 2 rows of 4 tiles of 2.6 × 2.8 inches at 110 dpi
        assert png.format == "PNG" and png.width > png.height > 400
    empty = np.zeros((0, 75, 75, 3), np.float32)
    with Image.open(plot_grid(tmp_path / "empty.png", empty, empty[..., 0], [])) as png:
        assert png.format == "PNG" and png.width > 100  # "no images" is written, not a crash
