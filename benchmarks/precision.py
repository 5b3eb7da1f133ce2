"""Compute precision and XLA on this machine: phase-two training steps and prediction.

    .venv/bin/python benchmarks/precision.py [--size 160] [--images 64] [--batch 16]
                                             [--policies float32 mixed_bfloat16 mixed_float16]

For each precision policy, with XLA off and on, builds the model (random init, top blocks
unfrozen from mixed9 as in phase two), trains one epoch on ``--images`` in-memory images
after a warm-up epoch (so XLA compilation is not counted) and predicts them. Prints images/s
of each and, last, each setting's speed over float32 without XLA (>1 is faster), plus the
largest probability difference of each setting's predictions from float32's on the same
weights (precision cost).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def measure(policy: str, xla: bool, size: int, images, labels, batch: int, weights):
    """(train images/s, predict images/s, probabilities) of one setting."""
    import keras

    from unfreeze.config.params import FinetuneParams, ModelParams
    from unfreeze.training import model as model_lib

    keras.backend.clear_session()
    with model_lib.precision(policy):  # as recipe.phase_one: the policy applies to building
        model = model_lib.build(ModelParams(image_size=size, weights=None), 2)
    model.set_weights(weights)
    model_lib.unfreeze(model, "mixed9")
    model_lib.compile_for(model, FinetuneParams(), jit_compile=xla)
    model.fit(images, labels, batch_size=batch, epochs=1, verbose=0)  # warm-up, compile
    started = time.perf_counter()
    model.fit(images, labels, batch_size=batch, epochs=1, verbose=0)
    train_rate = len(images) / (time.perf_counter() - started)
    model.set_weights(weights)  # predict with the same weights in every setting
    model.predict(images[:batch], batch_size=batch, verbose=0)
    started = time.perf_counter()
    probs = model.predict(images, batch_size=batch, verbose=0)
    predict_rate = len(images) / (time.perf_counter() - started)
    return train_rate, predict_rate, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--policies", nargs="+",
                        default=["float32", "mixed_bfloat16", "mixed_float16"])
    args = parser.parse_args()
    import numpy as np
    from common import machine

    from unfreeze.config.params import ModelParams
    from unfreeze.training import hardware
    from unfreeze.training import model as model_lib

    print(machine(), "| precision auto ->", hardware.precision("auto"), flush=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 3)).astype(np.float32)
    labels = rng.integers(0, 2, args.images)
    weights = model_lib.build(ModelParams(image_size=args.size, weights=None), 2).get_weights()
    results = {}
    for policy in args.policies:
        for xla in (False, True):
            name = f"{policy}, XLA {'on' if xla else 'off'}"
            train_rate, predict_rate, probs = measure(policy, xla, args.size, images, labels,
                                                      args.batch, weights)
            results[name] = (train_rate, predict_rate, probs)
            print(f"{name:28s} train {train_rate:6.1f} images/s   predict {predict_rate:6.1f}"
                  " images/s", flush=True)
    base_train, base_predict, base_probs = next(iter(results.values()))
    print(f"at {args.size}x{args.size}, batch {args.batch}, {os.cpu_count()} CPUs, "
          "ratios over float32 without XLA:")
    for name, (train_rate, predict_rate, probs) in results.items():
        print(f"{name:28s} train {train_rate / base_train:5.2f}x  predict "
              f"{predict_rate / base_predict:5.2f}x  max |p - p_float32| "
              f"{float(np.abs(probs - base_probs).max()):.2e}")


if __name__ == "__main__":
    main()
