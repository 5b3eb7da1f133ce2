"""DVC stage `prepare`: scan ``data.source`` into the manifest and the data report."""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = [("--manifest", "output Parquet manifest"), ("--report", "output JSON data report")]


def run(args: Namespace) -> None:
    from unfreeze.dataset.scan import scan
    from unfreeze.io import write_json, write_parquet

    table, report = scan(args.params.data, task=args.params.task)
    write_parquet(args.manifest, table)
    write_json(args.report, report)
    kind = "labels" if args.params.task == "multilabel" else "classes"
    print(f"prepare: {report['n_ok']} usable images, {len(report['classes'])} {kind} "
          f"{report['classes']}; {report['n_rejected']} rejected, {report['n_ignored']} ignored")


def main(argv: list[str] | None = None) -> int:
    return stage_cli("prepare", __doc__, ARGS, run, argv, tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
