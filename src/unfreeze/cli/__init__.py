"""The ``unfreeze`` console script: ``main`` parses the command line and runs one command;
each module adds its commands and their handlers (``flows``: check, retrain, serve and the
scale-out commands; ``models``: predict, explain, report, cache, release; ``api``: the HTTP
API; ``tuning``: lr-find and sweep; ``__main__``: ``python -m unfreeze.cli``). A user error
prints one line and exits 2.

- ``unfreeze check``: validate params.yaml (and the data source folder), without TensorFlow.
- ``unfreeze retrain``: run the Prefect retrain flow once in this working copy, print a summary.
- ``unfreeze serve --cron "0 3 * * *"``: serve the retrain flow on a schedule against the
  Prefect server at ``PREFECT_API_URL``, one run at a time per working copy.
- ``unfreeze predict --model M INPUTS… --out F``: class probabilities of new images.
- ``unfreeze explain --model M IMAGE… --out grid.png``: Grad-CAM heatmaps of given images.
- ``unfreeze report``: write reports/index.html from whatever reports exist.
- ``unfreeze lr-find --phase head|finetune``: the LR range test on the train rows; writes
  reports/lr_find/<phase>.csv and .png, prints the suggested learning rate and the
  ``dvc exp run -S`` line to use it (params.yaml is never written).
- ``unfreeze cache [--prune] [--clear]``: the decoded-image cache's size; prune it to its limit.
- ``unfreeze release list`` / ``use NAME`` / ``unpin``: the promoted releases and their
  history; point ``production/current`` back (or forward) at one and pin it; unpin.
- ``unfreeze deploy-folds --pool POOL``: deploy the per-fold flow to a Prefect work pool.
- ``unfreeze worker --pool POOL``: a Prefect worker for fold runs, in this clone.
- ``unfreeze remote-cv --deployment unfreeze-fold/NAME``: cross-validate with the folds run
  by those workers, artifacts through the DVC remote (docs/scaling.md).
- ``unfreeze sweep -S PATH=V1,V2 [--space FILE] [--method grid|random|tpe]``: a search over
  params, each trial a DVC experiment, ranked by a CV (or validation) metric, never by test;
  resumable, within ``--budget`` (reports/sweep/NAME/ranking.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from unfreeze import __version__
from unfreeze.cli import api, flows, models, tuning
from unfreeze.config.errors import UnfreezeError
from unfreeze.runtime import EXIT_USER_ERROR, filter_native_stderr, quiet_environment


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; a user error prints one line, exit 2."""
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if args.command != "check":  # check never imports TensorFlow or Prefect
        quiet_environment()
    if args.command in ("predict", "explain", "lr-find", "api"):  # commands importing TensorFlow
        filter_native_stderr()
    try:
        return handlers[args.command](args)
    except UnfreezeError as exc:
        print(f"unfreeze: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    """The ``unfreeze`` argument parser with every sub-command, and each one's handler."""
    parser = argparse.ArgumentParser(prog="unfreeze",
                                     description="The ``unfreeze`` console script.")
    parser.add_argument("--version", action="version", version=f"unfreeze {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable] = {}
    for add in (flows.add_commands, models.add_commands, api.add_commands,
                flows.add_scaleout_commands, tuning.add_commands):  # the order --help shows
        handlers.update(add(sub))
    return parser, handlers
