"""tf.data autotuning on this machine: our input pipeline with it on (TensorFlow's default,
and ours with a GPU) and off (ours on a CPU alone: ``hardware.data_autotune``), side by side.

    .venv/bin/python benchmarks/data_autotune.py [--size 96] [--images 512] [--batch 32]
                                                 [--repeats 5] [--cached-epochs 3]

One model (random init) and the same ``--images`` ELPV images through the pipeline's own
datasets (``inputs.make_dataset``), each built with ``UNFREEZE_DATA_AUTOTUNE=1`` and ``0``
(tf.data's autotuning on and off, as the shipped rule sets it):

- ``evaluation, decoded cache``: the test-time dataset read from the decoded cache, then
  ``model.predict`` (the ``evaluate`` stage, ``unfreeze predict``);
- ``evaluation, decoding files``: the same, decoding the image files;
- ``training epoch``: one epoch of phase two through the whole base (``mixed9`` unfrozen) on
  the shuffled, augmented dataset (``finetune.cached_views: 0``);
- ``cached epochs``: ``--cached-epochs`` epochs of phase two on cached activations (the
  default ``finetune.cached_views: 1``: the part from ``mixed9`` up, compiled as the
  pipeline compiles it, fed by ``features.CachedViews.dataset``).

Every use runs once with each setting first (warm-up: compiled, cache filled), then in
``--repeats`` rounds, each round timing every use and setting in turn, so a slow spell of the
machine hits all of them. Prints each round's seconds, then per use the fastest and the
median of each setting and the speed off / on (on's seconds over off's; > 1: off is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cached-epochs", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    from common import demo_rows, machine, rounds

    from unfreeze.config.params import AugmentParams, FinetuneParams, ModelParams
    from unfreeze.training import fit, inputs
    from unfreeze.training import model as model_lib
    from unfreeze.training.cache import CACHE_ENV
    from unfreeze.training.features import CachedViews
    from unfreeze.training.hardware import AUTOTUNE_ENV

    print(machine(), flush=True)
    rows, root = demo_rows(args.images)
    paths, keys = [str(root / r["path"]) for r in rows], [r["sha256"] for r in rows]
    labels = np.random.default_rng(0).integers(0, 2, len(paths))
    model = model_lib.build(ModelParams(image_size=args.size, weights=None), 2)
    model_lib.unfreeze(model, "mixed9")
    model_lib.compile_for(model, FinetuneParams(), jit_compile=False)

    def evaluation(with_keys: bool, enabled: bool):
        os.environ[AUTOTUNE_ENV] = "1" if enabled else "0"  # read as the dataset is built
        ds = inputs.make_dataset(paths, None, args.size, args.batch,
                                 keys=keys if with_keys else None)
        return lambda: model.predict(ds, verbose=0)

    def epoch(enabled: bool):
        os.environ[AUTOTUNE_ENV] = "1" if enabled else "0"
        ds = inputs.make_dataset(paths, labels, args.size, args.batch, shuffle=True, seed=0,
                                 augment=AugmentParams(), keys=keys)
        return lambda: model.fit(ds, epochs=1, verbose=0)

    plan = fit.plan_phase(model, FinetuneParams(cached_views=1, unfreeze_from="mixed9"),
                          labels)
    acts = plan.extractor.predict(inputs.make_dataset(paths, None, args.size, args.batch),
                                  verbose=0)

    def cached(enabled: bool):
        os.environ[AUTOTUNE_ENV] = "1" if enabled else "0"
        views = CachedViews([acts], labels, args.batch, None, seed=0)
        ds = views.dataset()
        return lambda: plan.trainable.fit(ds, epochs=args.cached_epochs,
                                          steps_per_epoch=len(views), verbose=0)

    uses = {"evaluation, decoded cache": lambda on: evaluation(True, on),
            "evaluation, decoding files": lambda on: evaluation(False, on),
            "training epoch": epoch,
            f"{args.cached_epochs} cached epochs": cached}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CACHE_ENV] = tmp
        runs = {(use, on): make(on) for use, make in uses.items() for on in (True, False)}
        for run in runs.values():  # warm-up: traces, fills the decoded cache
            run()
        times = rounds(runs, args.repeats)
    for (use, on), seconds in times.items():
        print(f"{use:27s} autotune {'on ' if on else 'off'}  rounds "
              f"{' '.join(f'{s:.2f}' for s in seconds)} s", flush=True)
    print(f"at {args.size}x{args.size}, {len(paths)} images, batch {args.batch}, "
          f"{os.cpu_count()} CPUs, {args.repeats} rounds, off / on (> 1: off faster):")
    for use in uses:
        on, off = times[(use, True)], times[(use, False)]
        print(f"{use:27s} fastest {min(on):5.2f} s on, {min(off):5.2f} s off: "
              f"{min(on) / min(off):4.2f}x | median {statistics.median(on):5.2f} s on, "
              f"{statistics.median(off):5.2f} s off: "
              f"{statistics.median(on) / statistics.median(off):4.2f}x")


if __name__ == "__main__":
    main()
