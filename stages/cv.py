"""DVC stage `cv@k`: train the whole recipe on every fold but k, predict fold k."""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = [("--fold", {"type": int, "required": True, "help": "held-out fold id"}),
        ("--folds", "input Parquet table with fold ids"),
        ("--out-dir", "output folder of this fold"), "--backup-dir"]


def run(args: Namespace) -> None:
    from pathlib import Path

    from unfreeze.dataset.folds import inactive_marker
    from unfreeze.io import write_json

    params, out_dir = args.params, Path(args.out_dir)
    if args.fold >= params.cv.folds:  # declared in dvc.yaml, unused at this cv.folds
        write_json(out_dir / "metrics.json", inactive_marker(args.fold, params.cv.folds))
        print(f"cv@{args.fold}: inactive (cv.folds is {params.cv.folds})")
        return
    from unfreeze.evaluation.cv import cross_validate_fold  # imports TensorFlow

    backup_dir = Path(args.backup_dir) if args.backup_dir else None
    result = cross_validate_fold(params, Path(args.folds), args.fold, out_dir, backup_dir)
    print(f"cv@{args.fold}: held-out n={result['n_heldout']} accuracy (arg-max) "
          f"{result['heldout_accuracy_argmax']:.4f}; cv_report applies the operating point")


def main(argv: list[str] | None = None) -> int:
    return stage_cli("cv@{fold}", __doc__, ARGS, run, argv)


if __name__ == "__main__":
    sys.exit(main())
