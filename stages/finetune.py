"""DVC stage `finetune` (phase two): unfreeze the top blocks and train at a low learning rate."""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = ["--splits", ("--head-dir", "input folder of the phase-one model"),
        ("--model-dir", "output folder: model.keras + meta.json"), "--report-dir",
        "--backup-dir"]


def run(args: Namespace) -> None:
    from pathlib import Path

    from unfreeze.training.recipe import train_finetune

    train_finetune(args.params, Path(args.splits), Path(args.head_dir), Path(args.model_dir),
                   Path(args.report_dir), Path(args.backup_dir) if args.backup_dir else None)


def main(argv: list[str] | None = None) -> int:
    return stage_cli("finetune", __doc__, ARGS, run, argv)


if __name__ == "__main__":
    sys.exit(main())
