"""DVC stage `folds`: assign cross-validation folds to the non-test pool (train + val)."""

from __future__ import annotations

import argparse
import sys

from unfreeze.runtime import stage_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--splits", required=True, help="input Parquet splits table")
    parser.add_argument("--folds", required=True, help="output Parquet table with a fold column")
    args = parser.parse_args(argv)
    return stage_main("folds", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from collections import Counter

    from unfreeze import folds
    from unfreeze.io import read_parquet, write_parquet
    from unfreeze.params import load_params

    params = load_params(args.params)
    table = folds.folds_table(read_parquet(args.splits), params.cv.folds, params.seed,
                           grouped=params.split.group_by is not None)
    write_parquet(args.folds, table)
    sizes = sorted(Counter(table["fold"].to_pylist()).items())
    print(f"folds: {params.cv.folds} folds over {table.num_rows} train+val images: {sizes}")


if __name__ == "__main__":
    sys.exit(main())
