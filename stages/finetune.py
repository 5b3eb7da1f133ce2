"""DVC stage `finetune` (phase two): unfreeze the top blocks and train at a low learning rate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unfreeze.runtime import stage_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--splits", required=True, help="input Parquet splits table")
    parser.add_argument("--head-dir", required=True, help="input folder of the phase-one model")
    parser.add_argument("--model-dir", required=True, help="output folder: model.keras + meta")
    parser.add_argument("--report-dir", required=True, help="output folder: dvclive metrics")
    parser.add_argument("--backup-dir", help="per-epoch backup to resume from if killed "
                        "(outside the DVC outputs, e.g. .unfreeze/backup/STAGE)")
    args = parser.parse_args(argv)
    return stage_main("finetune", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from unfreeze import data as data_lib
    from unfreeze import recipe, train
    from unfreeze.checkpoint import Backup
    from unfreeze.params import load_params

    params = load_params(args.params)
    head_dir = Path(args.head_dir)
    head_meta = train.read_meta(head_dir)
    table, root, source = data_lib.load_splits(args.splits)
    data = train.training_rows(table, root)
    train.check_classes_match(head_meta["classes"], data.classes, head_dir)
    model = recipe.load_for_training(params, head_dir / train.MODEL_FILE)
    backup = (Backup.for_phase(args.backup_dir, params, recipe.FINETUNE_SECTIONS,
                               (args.splits, head_dir / train.MODEL_FILE))
              if args.backup_dir else None)
    model, summary = recipe.phase_two(params, model, data, Path(args.report_dir), backup)
    meta = train.phase_meta(data.classes, head_meta["image_size"], source, "finetune",
                            params.finetune, summary)
    train.save_model(model, Path(args.model_dir), meta)
    if backup:
        backup.clear()  # only once the model is safely saved


if __name__ == "__main__":
    sys.exit(main())
