from dataclasses import replace

import numpy as np
import tensorflow as tf
from PIL import Image

from unfreeze.config.params import AugmentParams
from unfreeze.training import inputs

NO_AUGMENT = AugmentParams(rotation=0, width_shift=0, height_shift=0, shear=0, zoom=0,
                           horizontal_flip=False, vertical_flip=False)


def test_grayscale_palette_and_alpha_decode_to_consistent_rgb(tmp_path):
    Image.new("L", (10, 10), 77).save(tmp_path / "g.png")
    Image.new("RGBA", (10, 10), (10, 20, 30, 0)).save(tmp_path / "a.png")
    pal = Image.new("P", (10, 10))
    pal.putpalette([5, 6, 7] * 256)
    pal.save(tmp_path / "p.png")
    Image.new("RGB", (10, 10), (1, 2, 3)).save(tmp_path / "j.bmp")
    frames = [Image.new("RGB", (10, 10), c) for c in ((200, 0, 0), (0, 0, 200))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    names = ("g.png", "a.png", "p.png", "j.bmp", "anim.gif")
    images = inputs.load_images([str(tmp_path / n) for n in names], image_size=16)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[0], 77, atol=0.5)
    np.testing.assert_allclose(images[1], np.broadcast_to([10, 20, 30], (16, 16, 3)), atol=0.5)
    np.testing.assert_allclose(images[2], np.broadcast_to([5, 6, 7], (16, 16, 3)), atol=0.5)
    np.testing.assert_allclose(images[3], np.broadcast_to([1, 2, 3], (16, 16, 3)), atol=0.5)
    assert images[4][..., 0].mean() > 150 and images[4][..., 2].mean() < 50  # first frame


def test_eval_dataset_keeps_every_sample_in_order(tmp_path):
    paths = []
    for i in range(7):
        Image.new("L", (8, 8), i * 30).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    ds = inputs.make_dataset(paths, np.arange(7), image_size=8, batch_size=3)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [3, 3, 1]  # last partial batch kept
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert labels.tolist() == list(range(7))
    np.testing.assert_allclose(images[:, 0, 0, 0], np.arange(7) * 30, atol=0.5)  # aligned


def test_shuffled_training_batches_keep_labels_attached_to_their_images(tmp_path):
    paths = []
    for i in range(10):
        Image.new("L", (8, 8), i * 20).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    ds = inputs.make_dataset(paths, np.arange(10), image_size=8, batch_size=4, shuffle=True,
                             seed=1, augment=NO_AUGMENT)
    epoch1 = [(round(float(img[0, 0, 0]) / 20), int(lab)) for imgs, labs in ds
              for img, lab in zip(imgs, labs, strict=True)]
    epoch2 = [int(lab) for _, labs in ds for lab in labs]
    assert all(value == label for value, label in epoch1)
    assert sorted(lab for _, lab in epoch1) == list(range(10))
    assert [lab for _, lab in epoch1] != list(range(10)) or epoch2 != list(range(10))


def test_augmentation_changes_training_images_but_keeps_shape_and_range(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    path = [str(tmp_path / "x.png")] * 4
    plain = next(iter(inputs.make_dataset(path, None, 32, 4))).numpy()
    augmented = next(iter(inputs.make_dataset(path, None, 32, 4, augment=AugmentParams(),
                                              seed=3))).numpy()
    assert augmented.shape == plain.shape
    assert augmented.min() >= 0 and augmented.max() <= 255.0 + 1e-3
    assert not np.allclose(augmented, plain)
    untouched = next(iter(inputs.make_dataset(path, None, 32, 4, augment=NO_AUGMENT))).numpy()
    np.testing.assert_array_equal(untouched, plain)


def test_one_composed_warp_matches_imagedatagenerator_affine_transform():
    from keras.src.legacy.preprocessing.image import apply_affine_transform
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(np.random.default_rng(0).random((40, 40, 3)) * 255, (2, 2, 0))
    draws = [(-20.5, 3.0, -6.0, 0.15, 0.85, 1.1, False), (33.0, -7.5, 2.0, -0.2, 1.2, 0.9, True)]
    for theta, tx, ty, shear, zx, zy, flip in draws:
        expected = apply_affine_transform(image, theta=theta, tx=tx, ty=ty, shear=shear, zx=zx,
                                          zy=zy, row_axis=0, col_axis=1, channel_axis=2,
                                          fill_mode="nearest", order=1)
        expected = expected[:, ::-1] if flip else expected  # ImageDataGenerator flips last

        def one(value):
            return tf.constant([value], tf.float32)

        transforms = inputs.affine_transforms(
            one(np.radians(theta)), one(tx), one(ty), one(np.radians(shear)), one(zx), one(zy),
            one(-1.0 if flip else 1.0), one(1.0), 40, 40)
        ours = inputs.warp(tf.constant(image[None], tf.float32), transforms, "nearest")[0]
        np.testing.assert_allclose(ours.numpy(), expected, atol=1e-3)


def test_flips_mirror_some_images_of_a_batch_and_leave_the_others():
    images = np.random.default_rng(1).random((16, 6, 7, 3)).astype(np.float32)
    for params, mirror in ((replace(NO_AUGMENT, horizontal_flip=True), lambda x: x[:, ::-1]),
                           (replace(NO_AUGMENT, vertical_flip=True), lambda x: x[::-1])):
        out = inputs.augment_batch(tf.constant(images), tf.constant([5, 6], tf.int64),
                                   params).numpy()
        kinds = ["same" if np.array_equal(o, i) else "mirror" if np.array_equal(o, mirror(i))
                 else "other" for o, i in zip(out, images, strict=True)]
        assert "other" not in kinds and {"same", "mirror"} == set(kinds)


def test_augmentation_draws_differ_per_image_and_per_epoch_but_repeat_per_seed(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    paths = [str(tmp_path / "x.png")] * 3

    def epochs(seed):
        ds = inputs.make_dataset(paths, None, 24, 3, augment=AugmentParams(), seed=seed)
        return [next(iter(ds)).numpy() for _ in range(2)]

    first, second = epochs(7)
    assert not np.array_equal(first[0], first[1])  # same image, own transform
    assert not np.array_equal(first, second)  # new draws every epoch
    again = epochs(7)
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)


def test_sixteen_bit_png_and_cmyk_jpeg_decode_to_8_bit_rgb(tmp_path):
    deep = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # mode I;16
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    images = inputs.load_images([str(tmp_path / "deep.png"), str(tmp_path / "cmyk.jpg")], 10)
    expected_gray = deep.astype(np.float32) / 257.0  # 16 → 8 bits by scaling, not clipping
    for c in range(3):
        np.testing.assert_allclose(images[0][..., c], expected_gray, atol=1.0)
    red = np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB"), dtype=np.float32)
    np.testing.assert_allclose(images[1], red, atol=8.0)  # CMYK red comes out red
    assert images[1][..., 0].mean() > 200 and images[1][..., 1:].mean() < 60


def test_datasets_autotune_as_the_machine_rule_says_and_give_the_same_batches(tmp_path,
                                                                                monkeypatch):
    """tf.data autotuning (hardware.data_autotune) changes speed only: the training batches
    (shuffled, augmented) and the evaluation batches are identical with it on and off."""
    from unfreeze.training import hardware

    rng = np.random.default_rng(0)
    paths = []
    for i in range(9):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))

    def batches(setting):
        monkeypatch.setenv(hardware.AUTOTUNE_ENV, setting)
        train = inputs.make_dataset(paths, np.arange(9), 12, 4, shuffle=True, seed=3,
                                    augment=AugmentParams())
        evaluation = inputs.make_dataset(paths, None, 12, 4)
        view = inputs.make_view_dataset(paths, 12, 4, AugmentParams(),
                                        inputs.view_draws(9, 5))
        for ds in (train, evaluation, view):
            assert ds.options().autotune.enabled is (setting == "1")
        epochs = [list(train.as_numpy_iterator()) for _ in range(2)]
        return [part for epoch in epochs for batch in epoch for part in batch] + [
            *evaluation.as_numpy_iterator(), *view.as_numpy_iterator()]

    on, off = batches("1"), batches("0")
    assert len(on) == len(off) == 2 * 2 * 3 + 3 + 3  # 2 epochs x 3 batches x (images, labels)
    for a, b in zip(on, off, strict=True):
        np.testing.assert_array_equal(a, b)


def test_every_dataset_the_pipeline_hands_on_ends_in_tuned(tmp_path, tuned_datasets):
    """Options flow downstream, so a dataset's options cannot show that its own last step
    applied the rule: a spy checks that each exit returns (or iterates) what ``tuned`` made."""
    from unfreeze.training import mixing
    from unfreeze.training.features import CachedViews

    made = tuned_datasets
    paths = []
    for i in range(5):
        Image.new("L", (10, 10), i * 40).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    mixed = AugmentParams(mixup=0.4)
    partners = inputs.ViewPartners(paths[::-1], None, inputs.view_draws(5, 2),
                                   mixing.view_draws(5, 3, mixed))
    exits = {
        "training": lambda: inputs.make_dataset(paths, np.arange(5), 8, 2, shuffle=True,
                                                augment=AugmentParams()),
        "evaluation": lambda: inputs.make_dataset(paths, None, 8, 2),
        "warped view": lambda: inputs.make_view_dataset(paths, 8, 2, AugmentParams(),
                                                        inputs.view_draws(5, 1)),
        "mixed view": lambda: inputs.make_view_dataset(paths, 8, 2, mixed,
                                                       inputs.view_draws(5, 1),
                                                       partners=partners),
        "cached views": lambda: CachedViews(np.zeros((1, 5, 3)), np.arange(5) % 2, 2, None,
                                            seed=0).dataset(),
    }
    for name, make in exits.items():
        assert make() is made[-1], name
    for name, decode in {"decode_all": lambda: list(inputs.decode_all(paths, 8)),
                         "decode_files": lambda: inputs.decode_files(paths, 8)}.items():
        before = len(made)
        decode()
        assert len(made) == before + 1, name
