"""DVC stage `evaluate`: metrics, predictions and plots of the final model on the test split."""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = ["--splits", ("--model-dir", "input folder of the model to test"),
        ("--out-dir", "output folder for the test report")]


def run(args: Namespace) -> None:
    from pathlib import Path

    from unfreeze.evaluation.evaluate import evaluate_on_test

    metrics = evaluate_on_test(args.params.evaluate, Path(args.splits), Path(args.model_dir),
                               Path(args.out_dir))
    print(f"evaluate: n_test={metrics['n_test']} accuracy={metrics['accuracy']:.4f} "
          f"balanced_accuracy={metrics['balanced_accuracy']:.4f} roc_auc={metrics['roc_auc']}")


def main(argv: list[str] | None = None) -> int:
    return stage_cli("evaluate", __doc__, ARGS, run, argv)


if __name__ == "__main__":
    sys.exit(main())
