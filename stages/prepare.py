"""DVC stage `prepare`: scan ``data.source`` into the manifest and the data report."""

from __future__ import annotations

import argparse
import sys

from unfreeze.runtime import stage_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--manifest", required=True, help="output Parquet manifest")
    parser.add_argument("--report", required=True, help="output JSON data report")
    args = parser.parse_args(argv)
    return stage_main("prepare", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from unfreeze import scan
    from unfreeze.io import write_json, write_parquet
    from unfreeze.params import load_params

    params = load_params(args.params)
    table, report = scan.scan(params.data)
    write_parquet(args.manifest, table)
    write_json(args.report, report)
    print(f"prepare: {report['n_ok']} usable images in {len(report['classes'])} classes "
          f"{report['classes']}; {report['n_rejected']} rejected, {report['n_ignored']} ignored")


if __name__ == "__main__":
    sys.exit(main())
