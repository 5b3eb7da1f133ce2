"""`unfreeze lr-find` and `sweep`: the learning-rate range test of a phase, and searches over
params, each trial a DVC experiment."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from unfreeze.config.errors import UnfreezeError


def add_commands(sub) -> dict[str, Callable]:
    """`lr-find` and `sweep`; their handlers by name."""
    _add_lr_find_command(sub)
    _add_sweep_command(sub)
    return {"lr-find": _lr_find, "sweep": _sweep}


def _add_lr_find_command(sub) -> None:
    """`lr-find`: the learning-rate range test of one phase."""
    lr_find = sub.add_parser("lr-find", help="LR range test of a phase on the train rows: "
                             "suggests <phase>.learning_rate (params.yaml is not changed)")
    lr_find.add_argument("--phase", required=True, choices=("head", "finetune"))
    lr_find.add_argument("--params", default="params.yaml")
    lr_find.add_argument("--splits", default="data/splits.parquet")
    lr_find.add_argument("--head-dir", default="models/head",
                         help="the phase-one model (--phase finetune starts from it)")
    lr_find.add_argument("--out-dir", default="reports/lr_find")
    lr_find.add_argument("--start", type=float, default=1e-7, help="first rate (1e-7)")
    lr_find.add_argument("--end", type=float, default=10.0, help="last rate (10)")
    lr_find.add_argument("--steps", type=int, default=100,
                         help="batches, one per rate (100); stops early when the loss diverges")


def _add_sweep_command(sub) -> None:
    """`sweep`: a search over params, each trial a DVC experiment (unfreeze.ops.sweep)."""
    sweep = sub.add_parser("sweep", help="search params, each trial a DVC experiment, ranked "
                           "by a CV (or validation) metric, never by a test metric")
    sweep.add_argument("-S", "--set-param", dest="set_params", action="append", default=[],
                       metavar="PATH=VALUES", help="values to try: PATH=V1,V2,... or a range "
                       "PATH=LOW..HIGH[:log] (repeatable; wins over --space for its path)")
    sweep.add_argument("--space", metavar="FILE", help="YAML of param paths to lists of "
                       "values or to ranges {low:, high:, log: true, int: true}")
    sweep.add_argument("--method", choices=("grid", "random", "tpe"), default="grid",
                       help="grid (every combination, default), random or tpe (Optuna)")
    sweep.add_argument("--trials", type=int, default=None,
                       help="random/tpe: trials in all, earlier runs included (default 10)")
    sweep.add_argument("--seed", type=int, default=0, help="random/tpe sampler seed")
    sweep.add_argument("--metric", default=None, help="cv:NAME (default cv:<retrain.metric>, "
                       "the mean over the CV folds) or val:loss / val:accuracy; a test metric "
                       "is refused")
    sweep.add_argument("--budget", default=None, help="wall clock of this invocation (a "
                       "resumed sweep gets it again), e.g. 3600, 90m, 2h: no trial starts once "
                       "spent, or once less than the median trial time is left")
    sweep.add_argument("--name", default=None, help="the sweep's name (default: sweep-<hash "
                       "of method, metric, space, seed>); trials are NAME-1, NAME-2, …")
    sweep.add_argument("--retry-failed", action="store_true",
                       help="run the trials that failed in an earlier run again")
    sweep.add_argument("--project", default=".", help="project root (with dvc.yaml)")


def _lr_find(args: argparse.Namespace) -> int:
    """`lr-find`: run the range test, write its CSV and PNG, print the suggestion."""
    if not 0 < args.start < args.end or args.steps < 6:
        raise UnfreezeError(f"lr-find: need 0 < --start < --end and --steps >= 6; got "
                            f"--start {args.start:g} --end {args.end:g} --steps {args.steps}")
    from unfreeze.training import lr_find

    for line in lr_find.run(Path(args.params), Path(args.splits), args.phase,
                            Path(args.head_dir), Path(args.out_dir), args.start, args.end,
                            args.steps):
        print(line)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """`sweep`: check everything given, then run (or resume) the sweep and print its ranking."""
    import functools

    from unfreeze.config.params import load_params
    from unfreeze.ops.sweep import run_sweep
    from unfreeze.ops.sweep_space import SweepSpec, load_space, parse_budget, parse_metric

    project = Path(args.project)
    metric = parse_metric(args.metric, load_params(project / "params.yaml").retrain.metric)
    spec = SweepSpec(load_space(args.space, args.set_params), metric, args.method, args.trials,
                     args.seed, parse_budget(args.budget), args.name, args.retry_failed)
    run_sweep(project, spec, say=functools.partial(print, flush=True))
    return 0
