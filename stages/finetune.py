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
    args = parser.parse_args(argv)
    return stage_main("finetune", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from unfreeze import data as data_lib
    from unfreeze import model as model_lib
    from unfreeze import recipe, train
    from unfreeze.params import load_params

    params = load_params(args.params)
    head_dir = Path(args.head_dir)
    head_meta = train.read_meta(head_dir)
    table, root, source = data_lib.load_splits(args.splits)
    data = train.training_rows(table, root)
    train.check_classes_match(head_meta["classes"], data.classes, head_dir)
    model = model_lib.load(head_dir / train.MODEL_FILE)
    model, summary = recipe.phase_two(params, model, data, Path(args.report_dir))
    meta = train.phase_meta(data.classes, head_meta["image_size"], source, "finetune",
                            params.finetune, summary)
    train.save_model(model, Path(args.model_dir), meta)


if __name__ == "__main__":
    sys.exit(main())
