"""Predictions in row order, with TTA views; the shipped default image size end to end."""

import numpy as np
import pytest

from unfreeze.config.params import ModelParams, Params
from unfreeze.evaluation.inference import TTA_VIEWS, predict, predict_image_views, predict_views
from unfreeze.training import model as model_lib
from unfreeze.training.inputs import decode_files


def test_decoded_images_and_paths_give_the_same_views(image_folder, eager):
    """`unfreeze predict` (files decoded once into arrays) and evaluation (tf.data from
    paths) predict the same numbers, view for view."""
    model = model_lib.build(ModelParams(image_size=75, weights=None, hidden_units=8), 2)
    paths = sorted(str(p) for p in (image_folder / "dog").glob("*.png"))[:3]
    from_paths = predict_views(model, paths, 75, batch_size=2, tta="hflip")
    rows, images = decode_files(paths, 75)
    from_images = predict_image_views(model, images, batch_size=3, tta="hflip")
    assert rows == list(range(3)) and len(from_paths) == len(TTA_VIEWS["hflip"]) == 2
    for a, b in zip(from_paths, from_images, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # a mirror is another view (an untrained model's outputs all lie near 1/2 and differ by
    # ~1e-6 between views: exact inequality, not allclose, which was flaky here)
    assert not np.array_equal(from_paths[0], from_paths[1])
    np.testing.assert_allclose(predict(model, paths, 75, 4, tta="hflip"),
                               np.mean(from_paths, axis=0), atol=1e-6)


@pytest.mark.slow
def test_the_shipped_image_size_on_real_demo_images():
    """A forward pass at the default 299 px (ELPV cells are 300 × 300 gray): decode and
    resize, predict, Grad-CAM on the 8 × 8 grid of mixed10, phase two's cut below mixed9."""
    from unfreeze.dataset.sources import elpv_candidates, resolve_root
    from unfreeze.evaluation.gradcam import gradcam
    from unfreeze.training.features import split_model

    size = Params().model.image_size
    assert size == 299
    root = resolve_root("elpv")
    paths = [str(root / c.path) for c in elpv_candidates(root, "binary")[:2]]
    model = model_lib.build(ModelParams(image_size=size, weights=None), 2)
    probs = predict(model, paths, size, batch_size=2)
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    _, images = decode_files(paths, size)
    assert images.shape == (2, 299, 299, 3)
    assert (images[..., 0] == images[..., 2]).all()  # gray cells, three equal channels
    heat, cam_probs = gradcam(model, images.astype(np.float32))
    np.testing.assert_allclose(cam_probs, probs, atol=1e-5)
    assert heat.shape == (2, 299, 299) and len(np.unique(heat[0].round(3))) > 8
    extractor, _ = split_model(model, Params().finetune.unfreeze_from)
    assert extractor.output.shape[1:] == (8, 8, 1280)  # the input of mixed9 at 299 px


def test_predicting_decoded_images_and_pooling_cached_activations_apply_the_autotuning_rule(
        tuned_datasets):
    """The two datasets built outside ``inputs`` (``unfreeze predict``'s decoded arrays, the
    pooled features of stored activations) go through ``inputs.tuned`` too."""
    import keras

    from unfreeze.evaluation import inference
    from unfreeze.training import activations

    made = tuned_datasets
    images = keras.Input((4, 4, 3))
    model = keras.Model(images, keras.layers.Dense(2, activation="softmax")(
        keras.layers.Flatten()(images)))
    probs = inference.predict_image_views(model, np.zeros((3, 4, 4, 3), np.uint8), 2)
    assert len(made) == 1 and probs[0].shape == (3, 2)
    pooled = activations.pooled_rows(model, np.zeros((5, 4, 4, 3), np.float32), 4)
    assert len(made) == 2 and pooled.shape == (5, 2)
