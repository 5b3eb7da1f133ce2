"""DVC stage `head` (phase one): frozen InceptionV3 base, train a new classification head."""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = ["--splits", ("--model-dir", "output folder: model.keras + meta.json"), "--report-dir",
        "--backup-dir"]


def run(args: Namespace) -> None:
    from pathlib import Path

    from unfreeze.training.recipe import train_head

    train_head(args.params, Path(args.splits), Path(args.model_dir), Path(args.report_dir),
               Path(args.backup_dir) if args.backup_dir else None)


def main(argv: list[str] | None = None) -> int:
    return stage_cli("head", __doc__, ARGS, run, argv)


if __name__ == "__main__":
    sys.exit(main())
