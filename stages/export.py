"""DVC stage `export`: SavedModel and TFLite copies of the final model, parity-checked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unfreeze.runtime import stage_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--splits", required=True, help="input Parquet splits table")
    parser.add_argument("--model-dir", required=True, help="input folder of the model")
    parser.add_argument("--operating-point", required=True,
                        help="input JSON written by evaluate (threshold, temperature)")
    parser.add_argument("--out-dir", required=True, help="output folder: the model bundle")
    parser.add_argument("--report-dir", required=True, help="output folder: parity metrics")
    args = parser.parse_args(argv)
    return stage_main("export", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from unfreeze.export import export_model
    from unfreeze.params import load_params

    params = load_params(args.params)
    metrics = export_model(params.export, Path(args.model_dir), Path(args.operating_point),
                           Path(args.splits), Path(args.out_dir), Path(args.report_dir),
                           params.evaluate.batch_size)
    print("export: " + " ".join(f"{k}={v:.3g}" for k, v in sorted(metrics.items())
                                if isinstance(v, float)))


if __name__ == "__main__":
    sys.exit(main())
