"""Evaluation throughput: our test-set prediction against raw ``model.predict`` in memory.

    .venv/bin/python benchmarks/inference.py [--size 299] [--images 192] [--batch 64]

One model (random init) predicts the same ``--images`` ELPV images three ways, each timed
twice, alternating, best run kept: raw ``model.predict`` on a float32 array already in
memory (the ceiling), our evaluation path (``metrics.predict``: tf.data from the decoded
cache, unshuffled, last partial batch kept) and the same path decoding the image files.
Prints images/s of each and, last, ours over the in-memory ceiling.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def best_rates(runs: dict, n_images: int, repeats: int = 2) -> dict[str, float]:
    """Highest images/s of each run over ``repeats`` rounds that alternate the runs."""
    from common import rounds

    return {name: n_images / min(values) for name, values in rounds(runs, repeats).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    import numpy as np
    from common import demo_rows, machine

    from unfreeze.config.params import ModelParams
    from unfreeze.evaluation.inference import predict
    from unfreeze.training import inputs
    from unfreeze.training import model as model_lib
    from unfreeze.training.cache import CACHE_ENV, default_cache

    rows, root = demo_rows(args.images)
    paths, keys = [str(root / r["path"]) for r in rows], [r["sha256"] for r in rows]
    model = model_lib.build(ModelParams(image_size=args.size, weights=None), 2)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CACHE_ENV] = tmp
        default_cache().fill(paths, keys, args.size, inputs.decode_all)
        in_memory = inputs.load_images(paths, args.size)
        model.predict(in_memory[: args.batch], batch_size=args.batch, verbose=0)  # warm-up
        runs = {
            "raw model.predict, in memory": lambda: model.predict(
                in_memory, batch_size=args.batch, verbose=0),
            "metrics.predict, decoded cache": lambda: predict(model, paths, args.size,
                                                               args.batch, keys),
            "metrics.predict, decoding files": lambda: predict(model, paths, args.size,
                                                                args.batch),
        }
        outputs = {name: run() for name, run in runs.items()}  # warm-up, and check agreement
        rates = best_rates(runs, len(paths))
    for name, rate in rates.items():
        diff = float(np.abs(outputs[name] - outputs["raw model.predict, in memory"]).max())
        print(f"{name:34s} {rate:7.1f} images/s   max |p - p_raw| {diff:.1e}")
    ceiling, cached, decoding = rates.values()
    print(machine())
    print(f"evaluation at {args.size}x{args.size}, batch {args.batch}: "
          f"decoded cache / raw in-memory = {cached / ceiling:.2f}x, "
          f"decoding / raw in-memory = {decoding / ceiling:.2f}x")


if __name__ == "__main__":
    main()
