"""Train a tiny model with both phases of the recipe under a ``train.strategy``; print JSON.

    python tests/training/train_tiny.py IMAGES STRATEGY BATCH_SIZE OUT_DIR [multilabel]

Run as its own process by tests/training/test_distribute.py: the strategy (and the CPU split from
``UNFREEZE_LOGICAL_CPUS``) must be set up before TensorFlow initialises. IMAGES holds
``cat/`` and ``dog/``: 8 + 8 train (even global batches), the rest val (9 with 12 + 13
images: uneven last batches in feature extraction, validation and prediction). No dropout,
no augmentation (one cached view in both phases), so runs that see the same global batches
must agree (with per-step schedules and phase two's layer-wise learning rates on).
With ``multilabel``, three sigmoid labels (``cat``, ``dog``, ``even``: every other image of
a class) and balanced per-label positive weights.
The last line of stdout is JSON: the replicas used, the strategy's summary, whether this
process is the chief, and the trained model's probabilities on the val images.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(images: str, strategy: str, batch_size: int, out_dir: str,
         task: str = "multiclass") -> None:
    from unfreeze.config.params import params_from_dict
    from unfreeze.dataset.rows import Rows, TrainingData
    from unfreeze.evaluation.inference import predict
    from unfreeze.training import distribute, recipe

    raw = {
        "model": {"image_size": 75, "weights": None, "hidden_units": 8, "dropout": 0.0},
        "head": {"epochs": 2, "batch_size": batch_size, "cached_views": 1, "patience": 0,
                 "learning_rate": 0.05, "schedule": "one_cycle"},
        # a per-step schedule over global batches and layer-wise rates, under each strategy
        "finetune": {"epochs": 1, "batch_size": batch_size, "cached_views": 1, "patience": 0,
                     "unfreeze_from": "mixed9", "schedule": "cosine", "layer_lr_decay": 0.5,
                     "head_lr_mult": 2.0},
        "train": {"strategy": strategy, "xla": False},
    }
    if task == "multilabel":  # per-label positive weights in the loss, under each strategy
        raw |= {"task": "multilabel", "data": {"source": "labels.csv"}}
        raw["head"]["class_weight"] = "balanced"
    params = params_from_dict(raw)
    paths = {label: sorted(str(p) for p in (Path(images) / label).glob("*.png"))
             for label in ("cat", "dog")}

    def rows(part: slice) -> Rows:
        chosen = [(p, i, j) for i, label in enumerate(("cat", "dog"))
                  for j, p in enumerate(paths[label][part])]
        if task == "multilabel":
            return Rows([p for p, _, _ in chosen], np.array(
                [[i == 0, i == 1, j % 2 == 0] for _, i, j in chosen], np.float32))
        return Rows([p for p, _, _ in chosen], np.array([i for _, i, _ in chosen], np.int32))

    classes = ["cat", "dog", "even"] if task == "multilabel" else ["cat", "dog"]
    data = TrainingData(train=rows(slice(0, 8)), val=rows(slice(8, None)), classes=classes)
    out = Path(out_dir)
    model, head = recipe.phase_one(params, data, out / "head")
    model, finetune = recipe.phase_two(params, model, data, out / "finetune")
    probs = predict(model, data.val.paths, 75, 4)
    print(json.dumps({"chief": distribute.is_chief(),
                      "head": {k: head[k] for k in ("strategy", "replicas", "global_batch_size")},
                      "finetune_replicas": finetune["replicas"],
                      "probabilities": np.asarray(probs).tolist()}))


if __name__ == "__main__":
    main(*sys.argv[1:3], int(sys.argv[3]), *sys.argv[4:])
