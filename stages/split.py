"""DVC stage `split`: stratified (optionally grouped) train / val / test split."""

from __future__ import annotations

import argparse
import sys

from unfreeze.runtime import stage_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--manifest", required=True, help="input Parquet manifest")
    parser.add_argument("--splits", required=True, help="output Parquet splits table")
    parser.add_argument("--report", required=True, help="output JSON split summary")
    args = parser.parse_args(argv)
    return stage_main("split", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from unfreeze import data, splits
    from unfreeze.io import read_parquet, write_json, write_parquet
    from unfreeze.params import load_params

    params = load_params(args.params)
    manifest = read_parquet(args.manifest)
    table = splits.split_table(data.ok_rows(manifest), params.split, params.seed)
    write_parquet(args.splits, table.replace_schema_metadata(manifest.schema.metadata))
    summary = splits.summarize_splits(table)
    write_json(args.report, summary)
    print("split: " + ", ".join(f"{k}={v['n']}" for k, v in summary["splits"].items()))


if __name__ == "__main__":
    sys.exit(main())
