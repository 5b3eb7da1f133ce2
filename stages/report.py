"""DVC stage `report`: reports/index.html, one self-contained page of the whole run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unfreeze.runtime import stage_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", default="reports", help="folder of the stages' reports")
    parser.add_argument("--out", required=True, help="output HTML file")
    args = parser.parse_args(argv)
    return stage_main("report", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from unfreeze.report import build_report, inputs_under

    out = build_report(inputs_under(Path(args.reports)), Path(args.out))
    print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    sys.exit(main())
