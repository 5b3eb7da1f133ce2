"""Soft targets: MixUp/CutMix batch algebra, the loss they give with class weights and label
smoothing, mixed cached views, and the refusal of a combination that cannot mix."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_image_folder

from unfreeze.config.errors import ParamsError
from unfreeze.config.params import AugmentParams, HeadParams, params_from_dict
from unfreeze.training import activations, fit, inputs, mixing
from unfreeze.training import model as model_lib

MIX = AugmentParams(rotation=0, width_shift=0, height_shift=0, shear=0, zoom=0,
                    horizontal_flip=False, mixup=0.4, cutmix=1.0)


def cross_entropy(p: np.ndarray, target: np.ndarray) -> np.ndarray:
    return -(target * np.log(p)).sum(axis=1)


def test_mixed_targets_give_exactly_the_class_weighted_mixed_loss():
    spec = mixing.Targets.of(3, {0: 1.0, 1: 3.0, 2: 0.5}, MIX)
    a, b, lam = np.array([0, 1, 2, 1]), np.array([1, 1, 0, 2]), np.array([0.3, 0.8, 1.0, 0.5])
    y, w = (t.numpy() for t in mixing.targets(spec, a, b, lam))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)  # distributions
    np.testing.assert_allclose(y[0], [0.3 / 2.4, 2.1 / 2.4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(w, [0.3 + 2.1, 3.0, 0.5, 1.5 + 0.25], rtol=1e-6)
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=4)
    onehot = np.eye(3)
    weights = spec.class_weights
    wanted = (lam * weights[a] * cross_entropy(p, onehot[a])
              + (1 - lam) * weights[b] * cross_entropy(p, onehot[b]))
    np.testing.assert_allclose(w * cross_entropy(p, y), wanted, rtol=1e-5)
    # Keras' loss with these sample weights: the mean of exactly that
    loss = keras.losses.CategoricalCrossentropy()(y, p, sample_weight=w)
    assert float(loss) == pytest.approx(wanted.mean(), rel=1e-5)


def test_label_smoothing_in_the_loss():
    p = np.array([[0.7, 0.2, 0.1]], np.float32)
    y, w = mixing.plain_targets(mixing.Targets.of(3, None, None), np.array([0]))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])
    model_lib.compile_for(model, HeadParams(label_smoothing=0.3), jit_compile=False, soft=True)
    smoothed = np.array([0.7 + 0.1, 0.1, 0.1])  # (1 - 0.3) one-hot + 0.3 / 3
    want = -(smoothed * np.log(p[0])).sum()
    assert float(model.compute_loss(x=p, y=y.numpy(), y_pred=p, sample_weight=w)) == (
        pytest.approx(want, rel=1e-5))


def test_mixup_blends_and_cutmix_pastes_a_box_whose_area_sets_the_weight():
    a, b = tf.zeros([2, 10, 10, 3]), tf.ones([2, 10, 10, 3])
    lam = tf.constant([0.3, 0.64])
    images, weight = mixing.mix(a, b, lam, tf.constant([False, True]),
                                tf.constant([[0.5, 0.5], [0.5, 0.5]]))
    np.testing.assert_allclose(images[0].numpy(), 0.7)  # 0.3 a + 0.7 b
    pasted = images[1, ..., 0].numpy()
    assert set(np.unique(pasted)) == {0.0, 1.0}  # pixels of a or of b, never blends
    side = int(np.sqrt(1 - 0.64) * 10)  # a 6 x 6 box of b in the middle
    assert pasted.sum() == side * side and pasted[2:8, 2:8].all()
    np.testing.assert_allclose(weight.numpy(), [0.3, 1 - side * side / 100])
    # a box at the border is clipped and the weight follows the area really pasted
    _, clipped = mixing.mix(a[:1], b[:1], tf.constant([0.64]), tf.constant([True]),
                            tf.constant([[0.0, 0.0]]))
    assert clipped.numpy()[0] == pytest.approx(1 - 9 / 100)


def test_a_fresh_batch_mixes_with_its_mirror_and_is_repeatable():
    images = tf.constant(np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1)
                         * np.ones((1, 8, 8, 3), np.float32))
    spec = mixing.Targets.of(2, None, AugmentParams(mixup=0.4))
    seed = tf.constant([3, 4], tf.int64)
    mixed, y, w = mixing.mix_batch(images, tf.constant([0, 0, 1, 1]), seed, spec)
    again = mixing.mix_batch(images, tf.constant([0, 0, 1, 1]), seed, spec)[0]
    np.testing.assert_array_equal(mixed.numpy(), again.numpy())
    lam = y.numpy()[:, 0]  # image i (class 0 for i < 2) mixed with image 3 - i (class 1)
    np.testing.assert_allclose(mixed.numpy()[:2, 0, 0, 0], lam[:2] * [0, 1]
                               + (1 - lam[:2]) * [3, 2], rtol=1e-5)
    np.testing.assert_allclose(w.numpy(), 1.0)


def test_a_mixed_cached_view_is_the_mix_of_its_two_images_and_keeps_its_targets(tmp_path):
    folder = make_image_folder(tmp_path, {"cat": 3, "dog": 3}, size=20)
    paths = sorted(str(p) for p in folder.glob("*/*.png"))
    labels = np.array([0, 0, 0, 1, 1, 1])
    view = activations.views_of(2, MIX, seed=7)[1]  # mixing alone still makes K views
    assert view.augment is MIX and activations.views_of(1, MIX, 7) == [activations.View()]
    draws = mixing.view_draws(6, view.seed, MIX)
    assert np.array_equal(draws.partner, mixing.view_draws(6, view.seed, MIX).partner)
    got = np.concatenate(list(inputs.make_view_dataset(
        paths, 16, 4, MIX, inputs.view_draws(6, view.seed), None, partners=activations.
        partners_of(paths, None, inputs.view_draws(6, view.seed), draws, slice(0, 6)))))
    plain = inputs.load_images(paths, 16)
    want = mixing.mix(tf.constant(plain), tf.constant(plain[draws.partner]), draws.lam,
                      tf.constant(draws.cut), tf.constant(draws.centre))[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    y, w = mixing.view_targets(mixing.Targets.of(2, None, MIX), labels, draws, 16)
    np.testing.assert_allclose(w, 1.0)  # no class weights: every mixed image weighs 1
    assert y.shape == (6, 2) and np.allclose(y.sum(axis=1), 1)
    same = labels == labels[draws.partner]  # a pair of one class keeps its one-hot target
    np.testing.assert_allclose(y[same], np.eye(2)[labels[same]])
    assert fit.view_targets(None, labels, [view], 16) is None


def test_mixing_with_one_unaugmented_cached_view_is_refused_naming_the_params():
    with pytest.raises(ParamsError, match=r"head.cached_views.*augment.mixup"):
        params_from_dict({"augment": {"mixup": 0.2}})  # head.cached_views defaults to 1
    with pytest.raises(ParamsError, match=r"finetune.cached_views.*augment.cutmix"):
        params_from_dict({"augment": {"cutmix": 1.0}, "head": {"cached_views": 0}})
    ok = params_from_dict({"augment": {"mixup": 0.2}, "head": {"cached_views": 4},
                           "finetune": {"cached_views": 0}})
    assert mixing.soft(ok.head, ok.augment) and mixing.soft(ok.finetune, ok.augment)
    with pytest.raises(ParamsError, match=r"augment.mixup"):
        params_from_dict({"augment": {"mixup": -1}})
    assert not mixing.soft(HeadParams(), AugmentParams())


def test_a_mixed_view_computed_chunk_by_chunk_matches_its_targets(tmp_path, monkeypatch):
    """The view pass works in chunks (here 1 batch of 2 images each): every image is mixed
    with its own partner, and the stored targets weigh each by the area really kept."""
    monkeypatch.setattr(activations, "CHUNK_BATCHES", 1)
    monkeypatch.setattr(activations, "VIEW_BATCH", 2)
    folder = make_image_folder(tmp_path, {"cat": 4, "dog": 4}, size=20)
    paths = sorted(str(p) for p in folder.glob("*/*.png"))
    labels = np.array([0] * 4 + [1] * 4)
    cut_only = AugmentParams(rotation=0, width_shift=0, height_shift=0, shear=0, zoom=0,
                             horizontal_flip=False, cutmix=1.0)
    view = activations.views_of(2, cut_only, seed=3)[0]
    image = keras.Input((16, 16, 3))
    identity = keras.Model(image, keras.layers.Identity()(image))
    got = activations.compute(identity, paths, None, 16, view, None)
    plain = inputs.load_images(paths, 16)
    draws = mixing.view_draws(8, view.seed, cut_only)
    from_partner = np.all(got == plain[draws.partner], axis=-1) & np.any(
        plain != plain[draws.partner], axis=-1)
    y, _ = mixing.view_targets(mixing.Targets.of(2, None, cut_only), labels, draws, 16)
    mixed = labels != labels[draws.partner]
    assert mixed.any()
    kept = 1 - from_partner.mean(axis=(1, 2))
    np.testing.assert_allclose(y[mixed, labels[mixed]], kept[mixed], atol=1e-6)


def test_fresh_training_batches_carry_soft_targets_and_class_weights(tmp_path):
    folder = make_image_folder(tmp_path, {"cat": 3, "dog": 3}, size=20)
    paths = sorted(str(p) for p in folder.glob("*/*.png"))
    labels = np.array([0, 0, 0, 1, 1, 1])
    plain = mixing.Targets.of(2, {0: 1.0, 1: 2.0}, None)  # label smoothing alone: no mixing
    images, y, w = next(iter(inputs.make_dataset(paths, labels, 16, 6, targets=plain)))
    np.testing.assert_allclose(y.numpy(), np.eye(2)[labels])
    np.testing.assert_allclose(w.numpy(), [1, 1, 1, 2, 2, 2])
    mixed = mixing.Targets.of(2, {0: 1.0, 1: 2.0}, AugmentParams(mixup=0.4))
    images, y, w = next(iter(inputs.make_dataset(paths, labels, 16, 6, targets=mixed)))
    assert images.shape == (6, 16, 16, 3)
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1.0, rtol=1e-6)
    lam_cat = y.numpy()[:3, 0] * w.numpy()[:3]  # image i (cat) mixed with 5 - i (dog)
    np.testing.assert_allclose(w.numpy()[:3], lam_cat + 2 * (1 - lam_cat), rtol=1e-5)
