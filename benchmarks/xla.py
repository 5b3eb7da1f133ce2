"""XLA per use on this machine: which of training, feature passes and prediction it speeds up.

    .venv/bin/python benchmarks/xla.py [--size 96] [--images 256] [--epochs 3] [--batch 32]

Each use runs as the pipeline runs it, with XLA off and then on, on the same weights and the
same random images (raw 0-255 pixels), in this one process:

- ``feature pass``: the frozen base's pooled output over the images (phase one's features);
- ``view pass``: the lower base up to ``finetune.unfreeze_from``'s cut (the activation store);
- ``head epochs``: the head trained on cached pooled features;
- ``phase two, cached``: the unfrozen blocks and the head on cached activations (default);
- ``phase two, images``: the whole model on images (``finetune.cached_views: 0``);
- ``prediction``: the full model over the images (evaluation, `unfreeze predict`).

For each it prints the whole use's seconds, compilation included (the first call compiles:
that is what a stage pays), and a steady epoch or pass after it (the fastest of
``--repeats``: this machine's timings are noisy); then the ratios off / on (> 1: XLA
faster). `train.xla: auto` follows these figures (docs/benchmarks.md, "XLA per use").
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def uses(size: int, n: int, epochs: int, batch: int, unfreeze_from: str, repeats: int):
    """``{use: run(xla) -> (whole seconds, steady seconds)}`` on one set of weights."""
    import keras
    import numpy as np
    from common import steady, timed

    from unfreeze.config.params import FinetuneParams, HeadParams, ModelParams
    from unfreeze.training import features
    from unfreeze.training import model as model_lib

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    keras.utils.set_random_seed(0)
    weights = model_lib.build(ModelParams(image_size=size, weights=None), 2).get_weights()

    def fresh(unfrozen: bool) -> keras.Model:
        keras.backend.clear_session()
        model = model_lib.build(ModelParams(image_size=size, weights=None), 2)
        model.set_weights(weights)
        if unfrozen:
            model_lib.unfreeze(model, unfreeze_from)
        return model

    def passes(part: str):
        def run(xla: bool) -> tuple[float, float]:
            model = fresh(False)
            if part == "features":
                extractor = features.split_model(model)[0]
            else:
                extractor = features.split_at(model, unfreeze_from)[0]
            extractor.jit_compile = xla
            whole = timed(lambda: extractor.predict(images, batch_size=batch, verbose=0))
            return whole, steady(lambda: extractor.predict(images, batch_size=batch, verbose=0),
                                 repeats)
        return run

    def train(kind: str):
        def run(xla: bool) -> tuple[float, float]:
            model = fresh(kind != "head")
            if kind == "images":
                trainable, inputs = model, images
                model_lib.compile_for(trainable, FinetuneParams(), xla)
            else:
                extractor, trainable = features.split_model(
                    model, None if kind == "head" else unfreeze_from)
                inputs = extractor.predict(images, batch_size=batch, verbose=0)
                model_lib.compile_for(trainable, HeadParams() if kind == "head"
                                      else FinetuneParams(), xla)
            whole = timed(lambda: trainable.fit(inputs, labels, batch_size=batch,
                                                epochs=epochs, verbose=0))
            return whole, steady(lambda: trainable.fit(inputs, labels, batch_size=batch,
                                                       epochs=1, verbose=0), repeats)
        return run

    def predict(xla: bool) -> tuple[float, float]:
        model = fresh(False)
        model.jit_compile = xla
        whole = timed(lambda: model.predict(images, batch_size=batch, verbose=0))
        return whole, steady(lambda: model.predict(images, batch_size=batch, verbose=0), repeats)

    return {"feature pass": passes("features"), "view pass": passes("views"),
            "head epochs": train("head"), "phase two, cached": train("cached"),
            "phase two, images": train("images"), "prediction": predict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each training use")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--unfreeze-from", default="mixed9")
    parser.add_argument("--repeats", type=int, default=3, help="steady runs (the fastest)")
    parser.add_argument("--only", nargs="+", help="these uses only")
    args = parser.parse_args()
    from common import machine

    print(machine(), flush=True)
    print(f"{args.images} images at {args.size} px, batch {args.batch}, {args.epochs} epochs "
          f"per training use, unfreeze_from {args.unfreeze_from}, steady: fastest of "
          f"{args.repeats}", flush=True)
    results = {}
    for name, run in uses(args.size, args.images, args.epochs, args.batch,
                          args.unfreeze_from, args.repeats).items():
        if args.only and name not in args.only:
            continue
        off, on = run(False), run(True)
        results[name] = off, on
        print(f"{name:18s} XLA off: whole {off[0]:6.1f} s, steady {off[1]:6.2f} s | "
              f"XLA on: whole {on[0]:6.1f} s, steady {on[1]:6.2f} s", flush=True)
    print("ratios off / on (> 1: XLA faster):")
    for name, (off, on) in results.items():
        print(f"{name:18s} whole (compilation counted) {off[0] / on[0]:5.2f}x, "
              f"steady {off[1] / on[1]:5.2f}x")


if __name__ == "__main__":
    main()
