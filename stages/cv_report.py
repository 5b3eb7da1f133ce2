"""DVC stage `cv_report`: aggregate the folds (mean, std, 95% CI) and pooled out-of-fold metrics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unfreeze.runtime import stage_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--fold-dirs", nargs="+", required=True, help="cv@k output folders, k=0…")
    parser.add_argument("--out-dir", required=True, help="output folder of the report")
    args = parser.parse_args(argv)
    return stage_main("cv_report", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    from unfreeze import cv_report
    from unfreeze.params import load_params

    params = load_params(args.params)
    fold_dirs = [Path(d) for d in args.fold_dirs]
    report, fold_rows, roc = cv_report.build_report(fold_dirs, params.cv,
                                                    params.evaluate.positive_class)
    cv_report.write_report(Path(args.out_dir), report, fold_rows, roc)
    summary = ", ".join(f"{k}={v['mean']:.4f}±{v['std']:.4f}"
                        for k, v in report["metrics"].items() if v["mean"] is not None)
    print(f"cv_report: {params.cv.folds} folds: {summary}")


if __name__ == "__main__":
    sys.exit(main())
