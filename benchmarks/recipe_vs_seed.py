"""The classic fine-tuning recipe against our stages, same split, size, epochs and weights.

    .venv/bin/python benchmarks/recipe_vs_seed.py                    # CPU-sized (~20 min)
    .venv/bin/python benchmarks/recipe_vs_seed.py --full             # 299 px, 10 + 10 epochs
    .venv/bin/python benchmarks/recipe_vs_seed.py --weights imagenet # or a local .h5 file

The classic recipe, as the well-known InceptionV3 fine-tuning article writes it:
``ImageDataGenerator(rescale=1/255, rotation_range=40, width/height_shift_range=0.2,
shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")`` and
``flow_from_directory``; InceptionV3 without top + GlobalAveragePooling2D + Dense(1024, relu)
+ Dense(softmax); base frozen, Adam 1e-3; then the last 20 layers trainable, Adam 1e-4; both
phases ``fit`` on the generators. Two corrections, so that the comparison is fair and its
metrics mean something: the test prediction uses ``shuffle=False``, and ``steps_per_epoch`` is
the generator's length. The article's ``samples // batch_size`` drops the last partial batch
and, on Keras 3, leaves the next epoch a single batch ("Your input ran out of data"), so every
second epoch would hardly train; ``--article-steps`` restores it (and prints the batches run).

Ours: :func:`recipe.phase_one`, :func:`recipe.phase_two` and the evaluation path with the
shipped defaults (cached phase-one features, decoded cache starting cold), the same layers
unfrozen as the article (``finetune.unfreeze_from: 17`` base layers; ``--unfreeze-from
mixed9`` for our default) and early stopping off as in the classic recipe, once per
``--finetune-views`` value (phase two with fresh augmentation through the whole base, 0, or
on cached activations below the unfrozen block, 1). Each contender runs in its own process,
one after the other. Both start from the same InceptionV3
base weights (with ``--weights null`` one random initialisation, saved and loaded by both)
on the same ELPV split (train / val / test of ``split_table``). Prints per-phase wall times,
each model's test accuracy and ROC-AUC and, last, the ratios and each of our models' test
ROC-AUC minus the classic's with its 95 % interval: the promotion's paired comparison
(:func:`unfreeze.evaluation.compare.paired_comparison`, a paired class-stratified bootstrap,
as many resamples as ``retrain.bootstrap``) over the same test images, the classic's
predictions put back in the test rows' order (``flow_from_directory`` reads them class by
class).

End to end, each side also pays its process start-ups (``benchmarks/startup.py``, measured in
the same run): the classic script one (imports and a model build), our pipeline one per
TensorFlow stage (``head``, ``finetune``, ``evaluate``). The one-pass limit is what no
pipeline of this recipe can beat: one timed forward pass of the frozen base over every image
(decoding included, cache cold), plus our epochs on cached features and activations (the
training seconds of the first cached run), plus those three start-ups.
"""

from __future__ import annotations

import argparse
import json
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
            n_classes: int, article_steps: bool
            ) -> tuple[dict[str, float], object, list[int], list[str]]:
    """Run the article's recipe; return phase times, test probabilities, test labels and the
    test files in that order (relative to ``folders / "test"``)."""
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
    class BatchCounter(keras.callbacks.Callback):
        count = 0

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.count += 1

    batches = BatchCounter()
    fit = {"validation_data": validation_generator, "verbose": 2, "callbacks": [batches]}
    if article_steps:
        fit.update(steps_per_epoch=train_generator.samples // batch,
                   validation_steps=validation_generator.samples // batch)
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
    print(f"classic recipe: {batches.count} training batches run, "
          f"{len(train_generator) * sum(epochs)} in {sum(epochs)} full epochs", flush=True)
    return times, probs, list(test_generator.classes), list(test_generator.filenames)


def ours(params, tdata, test_rows, work: Path) -> tuple[dict[str, float], object, float]:
    """Our phase one, phase two and test prediction; phase times, test probabilities and the
    seconds both phases spent in epochs on cached inputs."""
    from unfreeze.evaluation.inference import predict
    from unfreeze.training import recipe

    times = {}
    started = time.perf_counter()
    model, one = recipe.phase_one(params, tdata, work / "head")
    times["phase one"] = time.perf_counter() - started
    started = time.perf_counter()
    model, two = recipe.phase_two(params, model, tdata, work / "finetune")
    times["phase two"] = time.perf_counter() - started
    epochs = sum(s["seconds"] - s["feature_seconds"] for s in (one, two))
    started = time.perf_counter()
    probs = predict(model, test_rows.paths, params.model.image_size,
                    params.evaluate.batch_size, test_rows.keys)
    times["test evaluation"] = time.perf_counter() - started
    return times, probs, epochs


def one_pass(size: int, weights: Path, paths: list[str], keys: list[str], work: Path) -> float:
    """Seconds of one forward pass of the frozen base over ``paths`` (decoded cold)."""
    from unfreeze.config.params import ModelParams
    from unfreeze.training import features
    from unfreeze.training import model as model_lib

    os.environ["UNFREEZE_CACHE_DIR"] = str(work / "cache_limit")  # starts cold
    extractor = features.split_model(model_lib.build(
        ModelParams(image_size=size, weights=str(weights)), 2))[0]
    started = time.perf_counter()
    features.extract(extractor, paths, size, keys)
    return time.perf_counter() - started


def contender(args: argparse.Namespace) -> None:
    """Run one contender in this process; write its times and test predictions as JSON."""

    from common import demo_split

    from unfreeze.config.params import params_from_dict

    _, tdata, test_rows, _ = demo_split()
    work = args.work
    if args.contender == "limit":
        every = [tdata.train, tdata.val, test_rows]
        seconds = one_pass(args.size, work / "base.weights.h5",
                           [p for rows in every for p in rows.paths],
                           [k for rows in every for k in rows.keys], work)
        (work / "limit.json").write_text(json.dumps({"pass": seconds}))
        return
    if args.contender == "classic":
        times, probs, labels, files = classic(work / "folders", args.size, args.batch,
                                              (args.head_epochs, args.finetune_epochs),
                                              work / "base.weights.h5", len(tdata.classes),
                                              args.article_steps)
        # flow_from_directory reads the test images class by class: put its predictions in
        # test_rows' order (each symlink's target is one row's image)
        row = {str(Path(path).resolve()): i for i, path in enumerate(test_rows.paths)}
        order = [row[str((work / "folders" / "test" / f).resolve())] for f in files]
        if sorted(order) != list(range(len(row))):
            raise RuntimeError("the classic recipe's test files are not the split's test rows")
        back = sorted(range(len(order)), key=order.__getitem__)  # k-th row's prediction
        probs, labels = probs[back], [labels[k] for k in back]
    else:
        views = int(args.contender.split(":")[1])
        os.environ["UNFREEZE_CACHE_DIR"] = str(work / f"cache{views}")  # starts cold
        params = params_from_dict({
            "model": {"image_size": args.size, "weights": str(work / "base.weights.h5")},
            "head": {"epochs": args.head_epochs, "batch_size": args.batch, "patience": 0},
            "finetune": {"epochs": args.finetune_epochs, "batch_size": args.batch,
                         "patience": 0, "cached_views": views,
                         "unfreeze_from": args.unfreeze_from}})
        times, probs, epochs = ours(params, tdata, test_rows, work / f"ours{views}")
        labels = test_rows.labels.tolist()
    (work / f"{args.contender}.json").write_text(json.dumps(
        {"times": times, "probs": probs.tolist(), "labels": [int(y) for y in labels],
         "cached_epochs": epochs if args.contender != "classic" else None}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--weights", default="null", help="null | imagenet | a no-top .h5")
    parser.add_argument("--finetune-views", type=int, nargs="+", default=[0, 1],
                        help="our runs, one per finetune.cached_views value")
    parser.add_argument("--unfreeze-from", default="17",
                        help="ours: finetune.unfreeze_from (17 base layers = the article's "
                             "last 20 model layers; or a block such as mixed9)")
    parser.add_argument("--full", action="store_true", help="299 px, 10 + 10 epochs")
    parser.add_argument("--article-steps", action="store_true",
                        help="steps_per_epoch = samples // batch_size, as the article")
    parser.add_argument("--contender", help=argparse.SUPPRESS)  # internal: one run
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.full:
        args.size, args.head_epochs, args.finetune_epochs = 299, 10, 10
    args.finetune_views = list(dict.fromkeys(args.finetune_views))  # one run per value
    if args.unfreeze_from.isdigit():
        args.unfreeze_from = int(args.unfreeze_from)
    if args.contender:
        return contender(args)

    import subprocess
    import sys

    import keras
    import numpy as np
    from common import demo_split, machine
    from startup import measure, stage_costs

    from unfreeze.config.params import RetrainParams
    from unfreeze.evaluation.compare import paired_comparison
    from unfreeze.evaluation.metrics import compute_metrics, positive_index

    print(machine(), flush=True)
    splits, tdata, test_rows, root = demo_split()
    print(f"ELPV: train {len(tdata.train.paths)} val {len(tdata.val.paths)} test "
          f"{len(test_rows.paths)}; {args.size} px; epochs {args.head_epochs} + "
          f"{args.finetune_epochs}; batch {args.batch}; weights {args.weights}; ours "
          f"unfreeze_from {args.unfreeze_from}; {os.cpu_count()} CPUs; one process each",
          flush=True)
    names = ["classic", *(f"ours:{views}" for views in args.finetune_views)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        keras.utils.set_random_seed(0)  # one initialisation of the base for every contender
        keras.applications.InceptionV3(
            include_top=False, input_shape=(args.size, args.size, 3),
            weights=None if args.weights == "null" else args.weights,
        ).save_weights(work / "base.weights.h5")
        class_folders(work / "folders", splits.to_pylist(), root)
        for name in [*names, "limit"]:
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--contender", name,
                            "--work", str(work)], check=True)
            results[name] = json.loads((work / f"{name}.json").read_text())
    startups = stage_costs(measure(args.size, runs=2))
    print("start-ups (benchmarks/startup.py, median of 2): " + ", ".join(
        f"{stage} {seconds:.1f} s" for stage, seconds in startups.items()), flush=True)
    ours_startup = sum(startups.values())  # head, finetune, evaluate
    classic_startup = startups["head / CV fold"]  # one script: imports and a build
    limit = results.pop("limit")["pass"]

    rows = []
    for name, result in results.items():
        if result["labels"] != test_rows.labels.tolist():  # a paired comparison needs this
            raise RuntimeError(f"{name}: its test predictions are not in the test rows' order")
        probs = np.asarray(result["probs"])
        # the classic recipe's classes are flow_from_directory's sorted folder names, as ours
        m = compute_metrics(test_rows.labels, probs, tdata.classes)
        label = ("classic recipe" if name == "classic"
                 else f"ours, finetune.cached_views {name.split(':')[1]}")
        rows.append((label, result["times"], m, probs))
    (_, classic_times, _, classic_probs), ours_rows = rows[0], rows[1:]
    for (name, times, m, _), startup in zip(rows, [classic_startup] + [ours_startup] * len(
            ours_rows), strict=True):
        print(f"{name:32s} " + "  ".join(f"{k} {v:6.1f} s" for k, v in times.items())
              + f"  total {sum(times.values()):6.1f} s, with start-ups "
              f"{sum(times.values()) + startup:6.1f} s | test accuracy {m['accuracy']:.4f}"
              f" roc_auc {m['roc_auc']:.4f}")
    cached = next((results[f"ours:{v}"]["cached_epochs"] for v in args.finetune_views if v),
                  None)
    if cached is not None:
        limit_total = limit + cached + ours_startup
        print(f"one-pass limit {limit_total:6.1f} s = forward pass over all "
              f"{len(tdata.train.paths) + len(tdata.val.paths) + len(test_rows.paths)} images "
              f"{limit:.1f} s + cached epochs {cached:.1f} s + 3 start-ups {ours_startup:.1f} s")
    classic_total = sum(classic_times.values()) + classic_startup
    y = np.asarray(test_rows.labels)
    positive = positive_index(y, tdata.classes, None) if len(tdata.classes) == 2 else None
    resamples = RetrainParams().bootstrap  # as the promotion decides
    for name, times, _, ours_probs in ours_rows:
        paired = paired_comparison("roc_auc", y, (ours_probs, ours_probs.argmax(axis=1)),
                                   (classic_probs, classic_probs.argmax(axis=1)), positive,
                                   resamples, 0)
        ci = paired["ci95"]  # defined: every resample keeps both classes of the test set
        ratios = ", ".join(f"{phase} {classic_times[phase] / times[phase]:.2f}x"
                           for phase in classic_times)
        total = sum(times.values()) + ours_startup
        versus = f"; {total / limit_total:.2f}x the one-pass limit" if cached is not None else ""
        print(f"{name}: speed-up {ratios}; end to end with start-ups "
              f"{classic_total / total:.2f}x{versus}; test ROC-AUC ours - classic "
              f"{paired['difference']:+.4f} [95% CI {ci['low']:+.4f}, {ci['high']:+.4f}; "
              f"paired bootstrap over the {len(y)} test images, {resamples} resamples]")
    return None


if __name__ == "__main__":
    main()
