"""The fixed cost of each TensorFlow stage, part by part, in fresh processes.

    .venv/bin/python benchmarks/startup.py [--size 96] [--runs 3]

Each run is a new Python process (as DVC starts each stage) that times, one after the other:
the interpreter's start, ``import tensorflow``, the rest of what the training and evaluation
stages import (Keras, dvclive, our modules), the strategy set-up (``train.strategy: auto``),
the InceptionV3 build with its head (``model.weights: null``), loading base weights from a
file (``model.weights: <file>``, the ImageNet path), and loading a saved ``model.keras`` (what
``finetune``, ``evaluate`` and ``export`` start with). Prints the median of each part and
what each stage pays before its first step:

- ``head`` and a CV fold: start, imports, strategy, build (+ weights load with a weights file);
- ``finetune``: start, imports, strategy, model load;
- ``evaluate``: start, imports, model load.

``benchmarks/recipe_vs_seed.py`` adds these to its one-pass limit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTS = ("interpreter", "import tensorflow", "other imports", "strategy set-up",
         "model build", "weights file load", "model.keras load")
STAGES = {
    "head / CV fold": ("interpreter", "import tensorflow", "other imports", "strategy set-up",
                       "model build"),
    "finetune": ("interpreter", "import tensorflow", "other imports", "strategy set-up",
                 "model.keras load"),
    "evaluate": ("interpreter", "import tensorflow", "other imports", "model.keras load"),
}
# The child: prints {part: seconds} as JSON; argv: size, weights file, model file,
# the parent's clock at the spawn.
CHILD = r"""
import json, os, sys, time
t = [time.time()]
spawned = float(sys.argv[4])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow
t.append(time.time())
import keras, dvclive
from unfreeze.training import recipe, fit, distribute, model as model_lib
from unfreeze.training.artifacts import load_model
from unfreeze.evaluation import evaluate
from unfreeze.config.params import ModelParams
t.append(time.time())
distribute.strategy("auto")
t.append(time.time())
size = int(sys.argv[1])
model_lib.build(ModelParams(image_size=size, weights=None), 2)
t.append(time.time())
model_lib.build(ModelParams(image_size=size, weights=sys.argv[2]), 2)
t.append(time.time())
load_model(sys.argv[3])
t.append(time.time())
build = t[4] - t[3]
parts = {"interpreter": t[0] - spawned, "import tensorflow": t[1] - t[0],
         "other imports": t[2] - t[1], "strategy set-up": t[3] - t[2], "model build": build,
         "weights file load": max(0.0, t[5] - t[4] - build), "model.keras load": t[6] - t[5]}
print(json.dumps(parts))
"""


def measure(size: int, runs: int) -> dict[str, float]:
    """Median seconds of each part of :data:`PARTS` over ``runs`` fresh processes."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a usual install keeps its bytecode
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / "base.weights.h5", Path(tmp) / "model.keras"]
        subprocess.run([sys.executable, "-c", (
            "import sys, keras\n"
            "from unfreeze.config.params import ModelParams\n"
            "from unfreeze.training import model as model_lib\n"
            "size = int(sys.argv[1])\n"
            "keras.applications.InceptionV3(include_top=False, weights=None,\n"
            "    input_shape=(size, size, 3)).save_weights(sys.argv[2])\n"
            "model_lib.build(ModelParams(image_size=size, weights=None), 2).save(sys.argv[3])\n"),
            str(size), *map(str, files)], env=env, check=True, capture_output=True)
        results: dict[str, list[float]] = {part: [] for part in PARTS}
        for _ in range(runs + 1):  # the first run warms the page cache and the bytecode
            proc = subprocess.run([sys.executable, "-c", CHILD, str(size), *map(str, files),
                                   repr(time.time())], env=env, check=True,
                                  capture_output=True, text=True)
            parts = json.loads(proc.stdout.strip().splitlines()[-1])
            if _:
                for part in PARTS:
                    results[part].append(parts[part])
    return {part: statistics.median(values) for part, values in results.items()}


def stage_costs(parts: dict[str, float]) -> dict[str, float]:
    """Seconds each TF stage pays before its first step (see the module docstring)."""
    return {stage: sum(parts[p] for p in needs) for stage, needs in STAGES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from common import machine

    print(machine(), flush=True)
    parts = measure(args.size, args.runs)
    print(f"median of {args.runs} fresh processes, {args.size} px:")
    for part, seconds in parts.items():
        print(f"  {part:20s} {seconds:6.2f} s")
    for stage, seconds in stage_costs(parts).items():
        print(f"{stage:16s} fixed cost {seconds:6.2f} s")


if __name__ == "__main__":
    main()
