"""Phase one with and without feature caching, side by side on the ELPV demo split.

    .venv/bin/python benchmarks/head_views.py [--size 96] [--epochs 5] [--views 0 1 3]
                                              [--weights null|imagenet|PATH]

Runs phase one (frozen base, new head) once per ``head.cached_views`` value on the same split
and the same initial weights, then predicts the test split with each model. Prints, per
setting: wall time of the phase (feature extraction included), test accuracy and ROC-AUC,
and in its last lines the speed ratio of each cached setting over ``cached_views: 0``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--views", type=int, nargs="+", default=[0, 1, 3])
    parser.add_argument("--weights", default="null")
    args = parser.parse_args()

    from common import demo_split, machine

    from unfreeze.config.params import params_from_dict
    from unfreeze.evaluation.inference import predict
    from unfreeze.evaluation.metrics import compute_metrics
    from unfreeze.training import recipe

    weights = None if args.weights == "null" else args.weights
    _, tdata, test_rows, _ = demo_split()
    print(machine())
    print(f"ELPV: train {len(tdata.train.paths)} val {len(tdata.val.paths)} "
          f"test {len(test_rows.paths)}; size {args.size}; head epochs {args.epochs} "
          f"(no early stopping); weights {args.weights}")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for views in args.views:
            params = params_from_dict({
                "model": {"image_size": args.size, "weights": weights},
                "head": {"epochs": args.epochs, "patience": 0, "cached_views": views,
                         "class_weight": "balanced"}})
            started = time.perf_counter()
            model, summary = recipe.phase_one(params, tdata, Path(tmp) / f"v{views}")
            seconds = time.perf_counter() - started
            probs = predict(model, test_rows.paths, args.size, 64, test_rows.keys)
            m = compute_metrics(test_rows.labels, probs, tdata.classes, None)
            results[views] = seconds
            print(f"cached_views={views}: phase one {seconds:7.1f} s (features "
                  f"{summary['feature_seconds']:.1f} s) | test accuracy {m['accuracy']:.4f} "
                  f"balanced {m['balanced_accuracy']:.4f} roc_auc {m['roc_auc']:.4f}")
    if 0 in results:
        for views, seconds in results.items():
            if views:
                print(f"speed-up of cached_views={views} over 0: {results[0] / seconds:.2f}x")


if __name__ == "__main__":
    main()
