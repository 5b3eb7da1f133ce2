"""DVC stage `evaluate`: metrics, predictions and plots of the final model on the test split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unfreeze.runtime import stage_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--splits", required=True, help="input Parquet splits table")
    parser.add_argument("--model-dir", required=True, help="input folder of the model to test")
    parser.add_argument("--out-dir", required=True, help="output folder for the test report")
    args = parser.parse_args(argv)
    return stage_main("evaluate", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from unfreeze.evaluate import evaluate_on_test
    from unfreeze.params import load_params

    params = load_params(args.params)
    metrics = evaluate_on_test(params.evaluate, Path(args.splits), Path(args.model_dir),
                               Path(args.out_dir))
    print(f"evaluate: n_test={metrics['n_test']} accuracy={metrics['accuracy']:.4f} "
          f"balanced_accuracy={metrics['balanced_accuracy']:.4f} roc_auc={metrics['roc_auc']}")


if __name__ == "__main__":
    sys.exit(main())
