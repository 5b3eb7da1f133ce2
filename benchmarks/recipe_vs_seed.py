"""The classic fine-tuning recipe against our stages, same split, size, epochs and weights.

    .venv/bin/python benchmarks/recipe_vs_seed.py                    # CPU-sized (~20 min)
    .venv/bin/python benchmarks/recipe_vs_seed.py --full             # 299 px, 10 + 10 epochs
    .venv/bin/python benchmarks/recipe_vs_seed.py --weights imagenet # or a local .h5 file

The classic recipe, as the well-known InceptionV3 fine-tuning article writes it:
``ImageDataGenerator(rescale=1/255, rotation_range=40, width/height_shift_range=0.2,
shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")`` and
``flow_from_directory``; InceptionV3 without top + GlobalAveragePooling2D + Dense(1024, relu)
+ Dense(softmax); base frozen, Adam 1e-3; then the last 20 layers trainable, Adam 1e-4; both
phases ``fit`` on the generators with ``steps_per_epoch = samples // batch_size``. Only its
test prediction is made correct (``shuffle=False``), so that its metrics mean something.

Ours: :func:`recipe.phase_one`, :func:`recipe.phase_two` and the evaluation path with the
shipped defaults (cached phase-one features, decoded cache starting cold, unfreeze from
mixed9), early stopping off as in the classic recipe. Both start from the same InceptionV3
base weights (with ``--weights null`` one random initialisation, saved and loaded by both)
on the same ELPV split (train / val / test of ``split_table``). Prints per-phase wall times,
both models' test accuracy and ROC-AUC and, last, the ratios.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def class_folders(dest: Path, rows: list[dict], root: Path) -> None:
    """``dest/<split>/<label>/`` of symlinks, for flow_from_directory."""
    for i, row in enumerate(rows):
        folder = dest / row["split"] / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").symlink_to(root / row["path"])


def classic(folders: Path, size: int, batch: int, epochs: tuple[int, int], base_weights: Path,
            n_classes: int) -> tuple[dict[str, float], object, list[int]]:
    """Run the article's recipe; return phase times, test probabilities and test labels."""
    import keras
    from keras.applications import InceptionV3
    from keras.layers import Dense, GlobalAveragePooling2D
    from keras.models import Model
    from keras.optimizers import Adam
    from keras.src.legacy.preprocessing.image import ImageDataGenerator  # Keras 3 ships it

    keras.utils.set_random_seed(42)
    train_datagen = ImageDataGenerator(rescale=1.0 / 255, rotation_range=40,
                                       width_shift_range=0.2, height_shift_range=0.2,
                                       shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
                                       fill_mode="nearest")
    test_datagen = ImageDataGenerator(rescale=1.0 / 255)
    flow = {"target_size": (size, size), "batch_size": batch, "class_mode": "categorical"}
    train_generator = train_datagen.flow_from_directory(folders / "train", **flow)
    validation_generator = test_datagen.flow_from_directory(folders / "val", **flow)

    times = {}
    started = time.perf_counter()
    base_model = InceptionV3(weights=None, include_top=False, input_shape=(size, size, 3))
    base_model.load_weights(str(base_weights))
    x = GlobalAveragePooling2D()(base_model.output)
    x = Dense(1024, activation="relu")(x)
    predictions = Dense(n_classes, activation="softmax")(x)
    model = Model(inputs=base_model.input, outputs=predictions)
    for layer in base_model.layers:
        layer.trainable = False
    model.compile(optimizer=Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    fit = {"validation_data": validation_generator, "verbose": 2,
           "steps_per_epoch": train_generator.samples // batch,
           "validation_steps": validation_generator.samples // batch}
    model.fit(train_generator, epochs=epochs[0], **fit)
    times["phase one"] = time.perf_counter() - started

    started = time.perf_counter()
    for layer in model.layers[:-20]:
        layer.trainable = False
    for layer in model.layers[-20:]:
        layer.trainable = True
    model.compile(optimizer=Adam(1e-4), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_generator, epochs=epochs[1], **fit)
    times["phase two"] = time.perf_counter() - started

    started = time.perf_counter()
    test_generator = test_datagen.flow_from_directory(folders / "test", shuffle=False, **flow)
    probs = model.predict(test_generator, steps=math.ceil(test_generator.samples / batch),
                          verbose=0)
    times["test evaluation"] = time.perf_counter() - started
    return times, probs, list(test_generator.classes)


def ours(params, tdata, test_rows, work: Path) -> tuple[dict[str, float], object]:
    """Our phase one, phase two and test prediction; phase times and test probabilities."""
    from unfreeze import recipe
    from unfreeze.evaluate import predict

    times = {}
    started = time.perf_counter()
    model, _ = recipe.phase_one(params, tdata, work / "head")
    times["phase one"] = time.perf_counter() - started
    started = time.perf_counter()
    model, _ = recipe.phase_two(params, model, tdata, work / "finetune")
    times["phase two"] = time.perf_counter() - started
    started = time.perf_counter()
    probs = predict(model, test_rows.paths, params.model.image_size,
                    params.evaluate.batch_size, test_rows.keys)
    times["test evaluation"] = time.perf_counter() - started
    return times, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--weights", default="null", help="null | imagenet | a no-top .h5")
    parser.add_argument("--full", action="store_true", help="299 px, 10 + 10 epochs")
    args = parser.parse_args()
    if args.full:
        args.size, args.head_epochs, args.finetune_epochs = 299, 10, 10

    import keras
    import numpy as np
    from common import demo_split

    from unfreeze.evaluate import compute_metrics
    from unfreeze.params import params_from_dict

    splits, tdata, test_rows, root = demo_split()
    print(f"ELPV: train {len(tdata.train.paths)} val {len(tdata.val.paths)} test "
          f"{len(test_rows.paths)}; {args.size} px; epochs {args.head_epochs} + "
          f"{args.finetune_epochs}; batch {args.batch}; weights {args.weights}; "
          f"{os.cpu_count()} CPUs", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["UNFREEZE_CACHE_DIR"] = str(work / "cache")  # ours starts cold
        base_file = work / "base.weights.h5"  # one initialisation for both
        keras.utils.set_random_seed(0)
        keras.applications.InceptionV3(
            include_top=False, input_shape=(args.size, args.size, 3),
            weights=None if args.weights == "null" else args.weights).save_weights(base_file)
        class_folders(work / "folders", splits.to_pylist(), root)
        classic_times, classic_probs, classic_labels = classic(
            work / "folders", args.size, args.batch, (args.head_epochs, args.finetune_epochs),
            base_file, len(tdata.classes))
        print(f"classic: {classic_times}", flush=True)
        keras.backend.clear_session()
        params = params_from_dict({
            "model": {"image_size": args.size, "weights": str(base_file)},
            "head": {"epochs": args.head_epochs, "batch_size": args.batch, "patience": 0},
            "finetune": {"epochs": args.finetune_epochs, "batch_size": args.batch,
                         "patience": 0}})
        our_times, our_probs = ours(params, tdata, test_rows, work / "ours")
        print(f"ours: {our_times}", flush=True)

    # flow_from_directory's class indices are the sorted folder names, as our classes
    classic_metrics = compute_metrics(np.asarray(classic_labels), classic_probs, tdata.classes)
    our_metrics = compute_metrics(test_rows.labels, our_probs, tdata.classes)
    for name, times, m in (("classic recipe", classic_times, classic_metrics),
                           ("unfreeze stages", our_times, our_metrics)):
        print(f"{name:16s} " + "  ".join(f"{k} {v:6.1f} s" for k, v in times.items())
              + f"  total {sum(times.values()):6.1f} s | test accuracy {m['accuracy']:.4f}"
              f" roc_auc {m['roc_auc']:.4f}")
    for phase in classic_times:
        print(f"speed-up, {phase}: {classic_times[phase] / our_times[phase]:.2f}x")
    total = sum(classic_times.values()) / sum(our_times.values())
    gap = our_metrics["roc_auc"] - classic_metrics["roc_auc"]
    print(f"speed-up, end to end: {total:.2f}x; test ROC-AUC ours - classic: {gap:+.4f}")


if __name__ == "__main__":
    main()
