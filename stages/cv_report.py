"""DVC stage `cv_report`: aggregate the folds (mean, std, 95% CI) and pooled out-of-fold metrics."""

from __future__ import annotations

import sys
from argparse import Namespace

from unfreeze.runtime import stage_cli

ARGS = [("--fold-dirs", {"nargs": "+", "required": True, "help": "cv@k output folders, k=0…"}),
        ("--out-dir", "output folder of the report")]


def run(args: Namespace) -> None:
    from pathlib import Path

    from unfreeze.evaluation.cv_report import build_report, write_report

    params = args.params
    report, fold_rows, roc, predictions = build_report(
        [Path(d) for d in args.fold_dirs], params.cv, params.evaluate)
    write_report(Path(args.out_dir), report, fold_rows, roc, predictions)
    summary = ", ".join(f"{k}={v['mean']:.4f}±{v['std']:.4f}"
                        for k, v in report["metrics"].items() if v["mean"] is not None)
    print(f"cv_report: {params.cv.folds} folds: {summary}")
    if report["degenerate_folds"]:
        print(f"cv_report: warning: fold(s) {report['degenerate_folds']} name one class for "
              "every held-out image (degenerate)")


def main(argv: list[str] | None = None) -> int:
    return stage_cli("cv_report", __doc__, ARGS, run, argv, tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
