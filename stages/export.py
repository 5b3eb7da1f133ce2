"""DVC stage `export`: SavedModel and TFLite copies of the final model, parity-checked."""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = ["--splits", ("--model-dir", "input folder of the model"),
        ("--operating-point", "input JSON written by evaluate (threshold, temperature)"),
        ("--out-dir", "output folder: the model bundle"),
        ("--report-dir", "output folder: parity metrics"),
        ("--reports", "input folder of the run's reports (for the model card)"),
        ("--source", "input JSON: the data fingerprint (for the model card)")]


def run(args: Namespace) -> None:
    from pathlib import Path

    from unfreeze.deploy.card import gather
    from unfreeze.deploy.export import export_model

    card = gather(Path(args.reports), Path(args.source), args.params)
    metrics = export_model(args.params.export, Path(args.model_dir),
                           Path(args.operating_point), Path(args.splits), Path(args.out_dir),
                           Path(args.report_dir), args.params.evaluate.batch_size, card)
    print("export: " + " ".join(f"{k}={v:.3g}" for k, v in sorted(metrics.items())
                                if isinstance(v, float)))


def main(argv: list[str] | None = None) -> int:
    return stage_cli("export", __doc__, ARGS, run, argv)


if __name__ == "__main__":
    sys.exit(main())
