"""DVC stage `folds`: assign cross-validation folds to the non-test pool (train + val)."""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = ["--splits", ("--folds", "output Parquet table with a fold column")]


def run(args: Namespace) -> None:
    from collections import Counter

    from unfreeze.dataset.folds import folds_table
    from unfreeze.io import read_parquet, write_parquet

    params = args.params
    table = folds_table(read_parquet(args.splits), params.cv.folds, params.seed,
                        grouped=params.split.group_by is not None)
    write_parquet(args.folds, table)
    sizes = sorted(Counter(table["fold"].to_pylist()).items())
    print(f"folds: {params.cv.folds} folds over {table.num_rows} train+val images: {sizes}")


def main(argv: list[str] | None = None) -> int:
    return stage_cli("folds", __doc__, ARGS, run, argv, tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
