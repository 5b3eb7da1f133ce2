"""Compute precision and XLA on this machine: phase-two training steps and prediction.

    .venv/bin/python benchmarks/precision.py [--size 160] [--images 64] [--batch 16]
                                             [--repeats 3]
                                             [--policies float32 mixed_bfloat16 mixed_float16]

For each precision policy, with XLA off and on, builds the model (random init, top blocks
unfrozen from mixed9 as in phase two) and warms it up (so XLA compilation is not counted).
Then, in ``--repeats`` rounds, each round timing every setting in turn, trains one epoch on
``--images`` in-memory images; then, in as many rounds, predicts them. Each rate is the
fastest of its rounds: taking turns, a slow spell of the machine (timings here vary by up to
2x) hits every setting, not one. Prints images/s of each and, last, each setting's speed
over float32 without XLA (>1 is faster), plus the largest probability difference of each
setting's predictions from float32's on the same weights (precision cost).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def prepared(policy: str, xla: bool, size: int, images, labels, batch: int, weights):
    """One setting's model (top blocks unfrozen from mixed9 as in phase two), its training
    and prediction compiled by a warm-up epoch and pass."""
    from unfreeze.config.params import FinetuneParams, ModelParams
    from unfreeze.training import model as model_lib

    with model_lib.precision(policy):  # as recipe.phase_one: the policy applies to building
        model = model_lib.build(ModelParams(image_size=size, weights=None), 2)
    model.set_weights(weights)
    model_lib.unfreeze(model, "mixed9")
    model_lib.compile_for(model, FinetuneParams(), jit_compile=xla)
    model.fit(images, labels, batch_size=batch, epochs=1, verbose=0)
    model.predict(images[:batch], batch_size=batch, verbose=0)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of timed epochs and passes (each setting's fastest counts)")
    parser.add_argument("--policies", nargs="+",
                        default=["float32", "mixed_bfloat16", "mixed_float16"])
    args = parser.parse_args()
    import numpy as np
    from common import machine, rounds

    from unfreeze.config.params import ModelParams
    from unfreeze.training import hardware
    from unfreeze.training import model as model_lib

    print(machine(), "| precision auto ->", hardware.precision("auto"), flush=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 3)).astype(np.float32)
    labels = rng.integers(0, 2, args.images)
    weights = model_lib.build(ModelParams(image_size=args.size, weights=None), 2).get_weights()
    models = {}
    for policy in args.policies:
        for xla in (False, True):
            models[f"{policy}, XLA {'on' if xla else 'off'}"] = prepared(
                policy, xla, args.size, images, labels, args.batch, weights)
    train = rounds({name: lambda model=model: model.fit(images, labels, batch_size=args.batch,
                                                         epochs=1, verbose=0)
                    for name, model in models.items()}, args.repeats)
    for model in models.values():  # predict with the same weights in every setting
        model.set_weights(weights)
    predict = rounds({name: lambda model=model: model.predict(images, batch_size=args.batch,
                                                              verbose=0)
                      for name, model in models.items()}, args.repeats)
    results = {}
    for name, model in models.items():
        results[name] = (len(images) / min(train[name]), len(images) / min(predict[name]),
                         model.predict(images, batch_size=args.batch, verbose=0))
        print(f"{name:28s} train {results[name][0]:6.1f} images/s   predict "
              f"{results[name][1]:6.1f} images/s   (rounds: train "
              f"{' '.join(f'{t:.2f}' for t in train[name])} s, predict "
              f"{' '.join(f'{t:.2f}' for t in predict[name])} s)", flush=True)
    base = "float32, XLA off" if "float32, XLA off" in results else next(iter(results))
    base_train, base_predict, base_probs = results[base]
    print(f"at {args.size}x{args.size}, batch {args.batch}, {os.cpu_count()} CPUs, fastest of "
          f"{args.repeats}, ratios over {base}:")
    for name, (train_rate, predict_rate, probs) in results.items():
        print(f"{name:28s} train {train_rate / base_train:5.2f}x  predict "
              f"{predict_rate / base_predict:5.2f}x  max |p - p_base| "
              f"{float(np.abs(probs - base_probs).max()):.2e}")


if __name__ == "__main__":
    main()
