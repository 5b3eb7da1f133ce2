"""GPU check: 299 px throughput of each phase with `precision: auto` and `xla: auto`.

    .venv/bin/python benchmarks/gpu_check.py [--images 512] [--batch 32] [--size 299]
    (or benchmarks/gpu_check.sh, which also prints nvidia-smi)

On the device at hand (meant for a GPU machine; on a CPU it runs, slowly), with random
initial weights and synthetic images held in memory (so the input pipeline is not measured):

- phase one's feature pass: the frozen base's ``predict`` (images/s);
- phase one's training on cached features: head steps (images/s);
- phase two, cached: the blocks from ``mixed9`` up and the head on stored activations;
- phase two, classic: training steps through the whole model, top blocks unfrozen;
- inference: ``predict`` of the full model, ms per batch of 32, next to the published
  reference (Keras applications table: InceptionV3 ≈ 6.9 ms per batch of 32 on an A100,
  TensorFlow, XLA);
- with two or more GPUs visible: phase two's classic step under MirroredStrategy.

Each figure follows a warm-up (compilation is not counted). Prints the machine (CPU model
and flags, GPU names), the precision and XLA setting `auto` chose, and one line per figure.
"""

from __future__ import annotations

import argparse
import os
import time

from common import machine

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REFERENCE_MS = 6.9  # Keras applications table: InceptionV3, batch 32, A100


def rate(step, n: int, repeats: int = 2) -> float:
    """Images/s of ``step()`` (which handles ``n`` images), best of ``repeats`` after a
    warm-up call."""
    step()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=299)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from unfreeze.config.params import FinetuneParams, HeadParams, ModelParams
    from unfreeze.training import fit, hardware
    from unfreeze.training import model as model_lib

    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
             for g in gpus]
    print(machine(), "| GPUs:", ", ".join(names) or "none")
    policy = hardware.precision("auto")
    decisions = ", ".join(f"{use} {hardware.xla(use, image_size=args.size)}"
                          for use in hardware.USES)
    print(f"precision auto -> {policy}; xla auto per use -> {decisions} ('auto': Keras decides)")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (args.images, args.size, args.size, 3)).astype(np.float32)
    labels = rng.integers(0, 2, args.images)
    n, batch = args.images, args.batch

    def build():
        keras.backend.clear_session()
        with model_lib.precision(policy):
            return model_lib.build(ModelParams(image_size=args.size, weights=None), 2)

    model = build()
    plan = fit.plan_phase(model, HeadParams(), labels)  # split and compiled as the pipeline
    extractor, head = plan.extractor, plan.trainable
    hardware.for_use(extractor, "features", args.size)
    pooled = extractor.predict(images, batch_size=batch, verbose=0)
    figures = {
        "phase one, feature pass (frozen base predict)":
            rate(lambda: extractor.predict(images, batch_size=batch, verbose=0), n),
        "phase one, head on cached features (train)":
            rate(lambda: head.fit(pooled, labels, batch_size=batch, epochs=1, verbose=0), n),
    }
    model_lib.unfreeze(model, "mixed9")
    plan = fit.plan_phase(model, FinetuneParams(unfreeze_from="mixed9"), labels)
    lower, top = plan.extractor, plan.trainable
    hardware.for_use(lower, "features", args.size)
    acts = lower.predict(images, batch_size=batch, verbose=0)
    figures["phase two, cached activations (train)"] = rate(
        lambda: top.fit(acts, labels, batch_size=batch, epochs=1, verbose=0), n)
    fit.compile_phase(model, model, FinetuneParams(), None, labels, "full")
    figures["phase two, classic: whole model (train)"] = rate(
        lambda: model.fit(images, labels, batch_size=batch, epochs=1, verbose=0), n)
    hardware.for_use(model, "predict", args.size)
    predict = rate(lambda: model.predict(images, batch_size=batch, verbose=0), n)
    figures["inference (predict)"] = predict
    if len(gpus) >= 2:
        with tf.distribute.MirroredStrategy().scope():
            mirrored = build()
            model_lib.unfreeze(mirrored, "mixed9")
            fit.compile_phase(mirrored, mirrored, FinetuneParams(), None, labels, "full")
        figures[f"phase two, classic, mirrored over {len(gpus)} GPUs (train)"] = rate(
            lambda: mirrored.fit(images, labels, batch_size=batch * len(gpus), epochs=1,
                                 verbose=0), n)
    for name, images_per_s in figures.items():
        print(f"{name:60s} {images_per_s:9.1f} images/s")
    ms = 1000 * 32 / predict
    print(f"inference: {ms:.1f} ms per batch of 32 at {args.size} px "
          f"(reference: {REFERENCE_MS} ms on an A100; ratio {ms / REFERENCE_MS:.2f})")


if __name__ == "__main__":
    main()
