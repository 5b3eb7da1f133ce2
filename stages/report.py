"""DVC stage `report`: reports/index.html, one self-contained page of the whole run."""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = [("--reports", {"default": "reports", "help": "folder of the stages' reports"}),
        ("--out", "output HTML file")]


def run(args: Namespace) -> None:
    from pathlib import Path

    from unfreeze.report import build_report, inputs_under

    out = build_report(inputs_under(Path(args.reports)), Path(args.out))
    print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    return stage_cli("report", __doc__, ARGS, run, argv, params=False, tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
