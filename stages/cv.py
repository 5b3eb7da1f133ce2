"""DVC stage `cv@k`: train the whole recipe on every fold but k, predict fold k."""

from __future__ import annotations

import argparse
import sys

from unfreeze.runtime import stage_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--fold", type=int, required=True, help="held-out fold id")
    parser.add_argument("--folds", required=True, help="input Parquet table with fold ids")
    parser.add_argument("--out-dir", required=True, help="output folder of this fold")
    parser.add_argument("--backup-dir", help="per-epoch backup to resume from if killed "
                        "(outside the DVC outputs, e.g. .unfreeze/backup/STAGE)")
    args = parser.parse_args(argv)
    return stage_main(f"cv@{args.fold}", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from unfreeze import folds
    from unfreeze.io import write_json
    from unfreeze.params import load_params

    params = load_params(args.params)
    out_dir = Path(args.out_dir)
    if args.fold >= params.cv.folds:  # declared in dvc.yaml, unused at this cv.folds
        write_json(out_dir / "metrics.json", folds.inactive_marker(args.fold, params.cv.folds))
        print(f"cv@{args.fold}: inactive (cv.folds is {params.cv.folds})")
        return
    from unfreeze.cv import cross_validate_fold  # imports TensorFlow

    backup_dir = Path(args.backup_dir) if args.backup_dir else None
    result = cross_validate_fold(params, Path(args.folds), args.fold, out_dir, backup_dir)
    m = result["metrics"]
    print(f"cv@{args.fold}: held-out n={m['n_test']} accuracy={m['accuracy']:.4f} "
          f"roc_auc={m['roc_auc']}")


if __name__ == "__main__":
    sys.exit(main())
