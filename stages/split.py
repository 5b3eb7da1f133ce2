"""DVC stage `split`: stratified (optionally grouped) train / val / test split (multi-label:
iterative stratification; labels too rare for the fractions are warned about in the report)."""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = [("--manifest", "input Parquet manifest"), ("--splits", "output Parquet splits table"),
        ("--report", "output JSON split summary")]


def run(args: Namespace) -> None:
    from unfreeze.dataset.rows import ok_rows
    from unfreeze.dataset.splits import split_table, summarize_splits
    from unfreeze.io import read_parquet, write_json, write_parquet

    params = args.params
    manifest = read_parquet(args.manifest)
    table = split_table(ok_rows(manifest), params.split, params.seed)
    write_parquet(args.splits, table)
    summary = summarize_splits(table, params.split)
    write_json(args.report, summary)
    print("split: " + ", ".join(f"{k}={v['n']}" for k, v in summary["splits"].items()))
    for warning in summary.get("warnings", []):
        print(f"split: warning: {warning}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return stage_cli("split", __doc__, ARGS, run, argv, tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
