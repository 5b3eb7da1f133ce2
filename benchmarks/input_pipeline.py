"""Input pipeline throughput: ours (tf.data) against ImageDataGenerator.flow_from_directory.

    .venv/bin/python benchmarks/input_pipeline.py [--size 299] [--images 640] [--batch 32]

Both produce augmented training batches of the ELPV demo images with the classic recipe's
augmentations (rotation 40°, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip, nearest fill)
at ``--size``; nothing is trained, so this measures the input pipeline alone. The same
``--images`` images are read by both (class folders of symlinks for flow_from_directory).
Ours runs twice: decoding every image each epoch, and reading the decoded cache (filled
once beforehand, its time printed separately), which is what the stages do from the second
pass over an image on. Prints images/s of each and, last, our throughputs over
ImageDataGenerator's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def time_batches(batches, n_batches: int) -> tuple[float, int]:
    """Seconds and images for ``n_batches`` batches, after one warm-up batch."""
    it = iter(batches)
    next(it)
    started, images = time.perf_counter(), 0
    for _ in range(n_batches):
        x = next(it)[0]
        images += len(x)
    return time.perf_counter() - started, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    from common import demo_rows, machine

    # Keras 3.15 no longer exports ImageDataGenerator; its code still ships as legacy
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    from unfreeze.config.params import AugmentParams
    from unfreeze.training import inputs
    from unfreeze.training.cache import DecodedCache

    rows, root = demo_rows(args.images)
    n_batches = len(rows) // args.batch - 1  # whole batches after the warm-up one
    with tempfile.TemporaryDirectory() as tmp:
        for i, r in enumerate(rows):  # class folders for flow_from_directory
            folder = Path(tmp) / r["label"]
            folder.mkdir(exist_ok=True)
            (folder / f"{i:05d}.png").symlink_to(root / r["path"])
        classic = ImageDataGenerator(
            rescale=1.0 / 255, rotation_range=40, width_shift_range=0.2,
            height_shift_range=0.2, shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
            fill_mode="nearest").flow_from_directory(
            tmp, target_size=(args.size, args.size), batch_size=args.batch,
            class_mode="categorical", shuffle=True, seed=0)
        classes = sorted({r["label"] for r in rows})
        paths = [str(root / r["path"]) for r in rows]
        labels = [classes.index(r["label"]) for r in rows]
        cache = DecodedCache(Path(tmp) / "cache")
        started = time.perf_counter()
        cache.fill(paths, [r["sha256"] for r in rows], args.size, inputs.decode_all)
        print(f"filling the decoded cache: {time.perf_counter() - started:.1f} s")
        ours = {cached: inputs.make_dataset(
            paths, labels, args.size, args.batch, shuffle=True, seed=0,
            augment=AugmentParams(), keys=[r["sha256"] for r in rows] if cached else None,
            cache=cache) for cached in (False, True)}
        results = {}
        for name, batches in (("ImageDataGenerator.flow_from_directory", classic),
                              ("unfreeze tf.data, decoding", ours[False]),
                              ("unfreeze tf.data, decoded cache", ours[True])):
            seconds, images = time_batches(batches, n_batches)
            results[name] = images / seconds
            print(f"{name:40s} {images} images in {seconds:6.1f} s: "
                  f"{images / seconds:7.1f} images/s")
    base, decoding, cached = results.values()
    print(machine())
    print(f"input pipeline at {args.size}x{args.size}, batch {args.batch}:")
    print(f"tf.data decoding / ImageDataGenerator = {decoding / base:.2f}x")
    print(f"tf.data decoded cache / ImageDataGenerator = {cached / base:.2f}x")


if __name__ == "__main__":
    main()
