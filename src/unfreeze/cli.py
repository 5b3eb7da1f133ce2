"""The ``unfreeze`` console script.

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
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from unfreeze import __version__
from unfreeze.config.errors import UnfreezeError
from unfreeze.runtime import EXIT_USER_ERROR, filter_native_stderr, quiet_environment


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; a user error prints one line, exit 2."""
    args = build_parser().parse_args(argv)
    if args.command != "check":  # check never imports TensorFlow or Prefect
        quiet_environment()
    if args.command in ("predict", "explain", "lr-find", "api"):  # commands importing TensorFlow
        filter_native_stderr()
    handler = {"check": _check, "retrain": _retrain, "serve": _serve, "report": _report,
               "cache": _cache, "release": _release,
               "predict": _predict, "explain": _explain, "deploy-folds": _scaleout,
               "worker": _scaleout, "remote-cv": _scaleout, "lr-find": _lr_find,
               "sweep": _sweep, "api": _api}[args.command]
    try:
        return handler(args)
    except UnfreezeError as exc:
        return _fail(str(exc))


def _fail(message: str) -> int:
    """Print a user error as one line; the exit code for it."""
    print(f"unfreeze: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def build_parser() -> argparse.ArgumentParser:
    """The ``unfreeze`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="unfreeze", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"unfreeze {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml and print the resolved values")
    check.add_argument("--params", default="params.yaml")
    retrain = sub.add_parser("retrain", help="run the retrain flow once in this working copy")
    retrain.add_argument("--project", default=".", help="project root (with dvc.yaml)")
    serve = sub.add_parser("serve", help="serve the retrain flow on a cron schedule")
    serve.add_argument("--project", default=".", help="project root (with dvc.yaml)")
    serve.add_argument("--cron", required=True, help='cron schedule, e.g. "0 3 * * *"')
    serve.add_argument("--name", default=None, help="deployment name (default: from the path)")
    _add_model_commands(sub)
    _add_api_command(sub)
    _add_scaleout_commands(sub)
    _add_lr_find_command(sub)
    _add_sweep_command(sub)
    return parser


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


def _add_model_commands(sub) -> None:
    """Sub-commands that use a saved model, and `report`."""
    predict = sub.add_parser("predict", help="predict images with a saved model")
    predict.add_argument("--model", required=True, help="model.keras (meta.json beside it) "
                         "or its folder, e.g. models/export")
    predict.add_argument("inputs", nargs="*", help="image files, folders or globs")
    predict.add_argument("--inputs-from", metavar="FILE",
                         help="a text file of inputs, one per line (as well as or instead of "
                              "INPUTS)")
    predict.add_argument("--out", required=True, help="output table: .parquet or .csv")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--tta", choices=("none", "hflip", "flips"), default=None,
                         help="test-time augmentation (default: as stored with the model)")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    explain = sub.add_parser("explain", help="Grad-CAM heatmaps of images as a PNG grid")
    explain.add_argument("--model", required=True, help="model.keras or its folder")
    explain.add_argument("images", nargs="+", help="image files, folders or globs")
    explain.add_argument("--out", required=True, help="output PNG")
    explain.add_argument("--tta", choices=("none", "hflip", "flips"), default=None,
                         help="test-time augmentation (default: as stored with the model)")
    explain.add_argument("--label", default=None, help="multi-label models: the label to "
                         "explain (default: each image's most probable label)")
    report = sub.add_parser("report", help="write the HTML report of this working copy")
    report.add_argument("--reports", default="reports", help="folder of the stage reports")
    report.add_argument("--out", default="reports/index.html")
    cache = sub.add_parser("cache", help="size of the decoded-image cache; prune or clear it "
                           "($UNFREEZE_CACHE_DIR, limit $UNFREEZE_CACHE_MAX)")
    cache.add_argument("--prune", action="store_true", help="remove idle entries of other "
                       "decoders, then least recently used ones until under the limit; "
                       "entries used in the last 24 h stay (a running stage may read them)")
    cache.add_argument("--max", default=None, help="limit for this prune, e.g. 1G (default: "
                       "$UNFREEZE_CACHE_MAX, else 4G)")
    cache.add_argument("--force", action="store_true", help="with --prune: recent entries "
                       "too (only when no stage is running)")
    cache.add_argument("--clear", action="store_true", help="remove every entry (no stage "
                       "may be running)")
    release = sub.add_parser("release", help="list the promoted releases, or switch to one")
    release.add_argument("action", choices=("list", "use", "unpin"))
    release.add_argument("name", nargs="?", help="with `use`: the release to switch to")
    release.add_argument("--project", default=".", help="project root (with params.yaml)")


def _add_api_command(sub) -> None:
    """`unfreeze api`: the HTTP API and web page of a saved model."""
    api = sub.add_parser("api", help="serve a model over HTTP: predict, explain, web page; "
                         "reloads when the model path changes (UNFREEZE_API_TOKEN: bearer "
                         "token for /v1/*)")
    api.add_argument("--model", default="production/current", help="model folder "
                     "(model.keras + meta.json): production/current (default) or "
                     "models/export; never taken from a request")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    for flag, kind, default, what in API_LIMITS:
        api.add_argument(flag, type=kind, default=default, help=what)
    api.add_argument("--log-level", default="info",
                     choices=("critical", "error", "warning", "info", "debug"))


# `unfreeze api`'s limits: flag, type, default, help (each an ApiSettings field)
API_LIMITS = (
    ("--max-batch", int, 32, "images per forward pass"),
    ("--max-wait-ms", float, 5.0, "wait after a first image for others to batch"),
    ("--max-queue", int, 256, "images waiting at most; more: 503 + Retry-After"),
    ("--max-connections", int, 64, "concurrent connections at most; more: 503 "
     "(with --max-body-mb, bounds the memory uploads take)"),
    ("--max-images", int, 32, "images per request at most (413)"),
    ("--max-body-mb", float, 20.0, "request body at most (413)"),
    ("--max-pixels", int, None, "pixels per image at most, from the header "
     "(default: data.max_pixels' default)"),
    ("--timeout-s", float, 30.0, "answer within this, else 504"),
    ("--reload-interval-s", float, 2.0, "how often the model path is checked"))


def _api(args: argparse.Namespace) -> int:
    """`api`: check the options and the model folder, then serve until interrupted."""
    from unfreeze.deploy.api import TOKEN_ENV, ApiSettings, run_server

    model = Path(args.model)
    names = [flag[2:].replace("-", "_") for flag, *_ in API_LIMITS]
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    settings = ApiSettings(model.parent if model.suffix == ".keras" else model,
                           token=os.environ.get(TOKEN_ENV) or None, **options)
    print(f"serving {settings.model} on http://{args.host}:{args.port} (page: /, API: /v1/, "
          f"docs: /docs){'; bearer token required' if settings.token else ''}",
          file=sys.stderr)
    run_server(settings, args.host, args.port, args.log_level)
    return 0


def _add_scaleout_commands(sub) -> None:
    """Sub-commands that spread cross-validation folds over Prefect workers."""
    deploy = sub.add_parser("deploy-folds", help="deploy the per-fold flow to a work pool "
                            "(created as a process pool if missing)")
    deploy.add_argument("--pool", required=True, help="Prefect work pool name")
    deploy.add_argument("--name", default="folds", help="deployment name (default: folds)")
    worker = sub.add_parser("worker", help="start a Prefect worker for fold runs in a clone")
    worker.add_argument("--pool", required=True, help="Prefect work pool name")
    worker.add_argument("--project", default=".", help="this worker's clone of the project")
    worker.add_argument("--limit", type=int, default=1, help="fold runs at once (default 1)")
    remote = sub.add_parser("remote-cv", help="cross-validate with folds run by the workers")
    remote.add_argument("--deployment", required=True, help="e.g. unfreeze-fold/folds")
    remote.add_argument("--project", default=".", help="project root (with dvc.yaml)")
    remote.add_argument("--timeout", type=float, default=24 * 3600,
                        help="seconds to wait for the fold runs (default 24 h)")


def _scaleout(args: argparse.Namespace) -> int:
    url = os.environ.get("PREFECT_API_URL")
    problem = check_server(url) if url else (
        "the workers, the deployment and the coordinator must share one Prefect server: "
        "start one (`prefect server start --host 0.0.0.0`) and set PREFECT_API_URL, e.g. "
        "http://SERVER:4200/api, on every machine")
    if problem:
        return _fail(problem)
    from unfreeze.ops import scaleout

    if args.command == "worker":
        clone = Path(args.project).resolve()
        os.environ[scaleout.WORKDIR_ENV] = str(clone)
        scaleout.worker_clone()  # fails fast outside a clone
        prefect = str(Path(sys.executable).parent / "prefect")
        os.execv(prefect, [prefect, "worker", "start", "--pool", args.pool, "--type",
                           "process", "--limit", str(args.limit)])
    if args.command == "deploy-folds":
        print(scaleout.deploy_folds(args.pool, args.name))
        return 0
    state = scaleout.remote_cv_flow(project=str(Path(args.project)),
                                    deployment=args.deployment, timeout=args.timeout,
                                    return_state=True)
    if not state.is_completed():
        print(f"unfreeze: remote-cv failed: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    for fold in result["folds"]:
        print(f"  cv@{fold['fold']}: {fold['worker']} "
              f"({'ran' if fold['ran'] else 'up to date'}, {fold['seconds']:.1f} s)")
    print(f"ran here: {', '.join(result['stages_here']) or 'nothing'}")
    return 0


def _output(out: str, suffixes: tuple[str, ...]) -> Path:
    """``--out`` checked before any work: its suffix must be one of ``suffixes``."""
    from unfreeze.config.errors import PredictError

    if Path(out).suffix.lower() not in suffixes:
        raise PredictError(f"--out {out}: the file name must end in " + " or ".join(suffixes))
    return Path(out)


def _predict(args: argparse.Namespace) -> int:
    """`predict`: a table with one row per input file."""
    from unfreeze.config.errors import PredictError
    from unfreeze.deploy import predict as pred

    out = _output(args.out, pred.TABLE_SUFFIXES)

    inputs = list(args.inputs)
    if args.inputs_from:
        listed = Path(args.inputs_from)
        if not listed.is_file():
            raise PredictError(f"--inputs-from {listed}: no such file")
        inputs += [line for line in listed.read_text(encoding="utf-8").splitlines() if line]
    if not inputs:
        raise PredictError("predict: give image files, folders or globs, or --inputs-from")
    files = pred.expand_inputs(inputs)
    saved = pred.load_saved(args.model)
    _note_no_operating_point(saved, args.model)
    table = pred.predict_files(saved, files, args.batch_size, args.tta,
                               progress=not args.no_progress)
    pred.write_table(table, out)
    failed = sum(e is not None for e in table["error"].to_pylist())
    print(f"{out}: {table.num_rows} rows, {failed} unreadable")
    return 0


def _note_no_operating_point(saved, model: str) -> None:
    """Say so when a model decides by arg-max because it has no stored operating point."""
    if saved.point is None:
        print(f"note: {model} has no operating point stored with it (threshold, "
              "temperature): deciding the arg-max class; the exported model "
              "(models/export) has one", file=sys.stderr)


def _explain(args: argparse.Namespace) -> int:
    """`explain`: a Grad-CAM grid of the readable images; the others are named and skipped."""
    out = _output(args.out, (".png",))
    from unfreeze.deploy import predict as pred

    files = pred.expand_inputs(args.images)
    saved = pred.load_saved(args.model)
    _note_no_operating_point(saved, args.model)
    written, errors, named = pred.explain_files(saved, files, out, args.tta, args.label)
    for file, error, name in zip(files, errors, named, strict=True):
        if error:
            print(f"skipped {file}: {error}", file=sys.stderr)
        else:
            print(f"{file}: {name}")
    print(written)
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    """`lr-find`: run the range test, write its CSV and PNG, print the suggestion."""
    if not 0 < args.start < args.end or args.steps < 6:
        return _fail(f"lr-find: need 0 < --start < --end and --steps >= 6; got --start "
                     f"{args.start:g} --end {args.end:g} --steps {args.steps}")
    from unfreeze.training import lr_find

    for line in lr_find.run(Path(args.params), Path(args.splits), args.phase,
                            Path(args.head_dir), Path(args.out_dir), args.start, args.end,
                            args.steps):
        print(line)
    return 0


def _cache(args: argparse.Namespace) -> int:
    """`cache`: what the decoded-image cache holds, by decoder version and image size."""
    from unfreeze.training.cache import ACTIVATIONS, RECENT, default_cache, parse_size

    cache = default_cache()
    if cache is None:
        print("decoded-image cache is off (UNFREEZE_CACHE_DIR is empty)")
        return 0
    if args.max:
        cache.max_bytes = parse_size(args.max, "--max")
    if args.clear:
        print(f"cleared {cache.clear()} files")
    elif args.prune:
        removed, freed = cache.prune(drop_stale=True, recent=0 if args.force else RECENT)
        print(f"pruned {removed} files, {freed / 1e6:.1f} MB")
    info = cache.summary()
    limit = f"{info['max_bytes'] / 1e6:.0f} MB" if info["max_bytes"] else "none"
    print(f"{info['root']}: {info['files']} files, {info['bytes'] / 1e6:.1f} MB "
          f"(limit {limit}; current decoder {info['decoder']})")
    for name, group in sorted(info["groups"].items()):
        stale = ("" if name.split("/")[0] in (info["decoder"], ACTIVATIONS)
                 else "  (other decoder: never read)")
        print(f"  {name:<48} {group['files']:>7} files {group['bytes'] / 1e6:>10.1f} MB{stale}")
    return 0


def _release(args: argparse.Namespace) -> int:
    """`release list` / `release use NAME` in ``retrain.production_dir`` of the project."""
    from unfreeze.config.params import load_params
    from unfreeze.ops import promote

    project = Path(args.project)
    params = load_params(project / "params.yaml").retrain
    production = project / params.production_dir
    if args.action == "use":
        if not args.name:
            return _fail("release use: give the release name (see `unfreeze release list`)")
        decision = promote.use_release(production, args.name, params.metric)
        print(f"current -> {decision.release} ({decision.reason}; retrains will not promote "
              "until `unfreeze release unpin`)")
        return 0
    if args.action == "unpin":
        promote.unpin(production, params.metric)
        print("unpinned: the next better model is promoted again")
        return 0
    for release in promote.list_releases(production):
        value = release["metrics"].get(params.metric)
        shown = "–" if value is None else f"{value:.4f}"
        print(f"{'*' if release['current'] else ' '} {release['name']}  "
              f"{params.metric} {shown}")
    print(f"history ({production / 'history.parquet'}):")
    for row in promote.read_history(production):
        print(f"  {row['time']}  {row['decision']:<9} {row['release'] or '–':<26} "
              f"{row['reason']}")
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


def _report(args: argparse.Namespace) -> int:
    """`report`: reports/index.html from whatever stage reports exist."""
    from unfreeze.report import build_report, inputs_under

    print(build_report(inputs_under(Path(args.reports)), Path(args.out)))
    return 0


def check_server(url: str | None, timeout: float = 5.0) -> str | None:
    """None when no server is configured or it answers; else a message saying what to do."""
    if not url:
        return None
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as exc:
        return (f"PREFECT_API_URL is set to {url} but no Prefect server answers there ({exc}). "
                "Start one with `prefect server start --host 127.0.0.1`, or unset "
                "PREFECT_API_URL to run with a temporary local server.")
    return None


def _check(args: argparse.Namespace) -> int:
    from unfreeze.config.params import load_params
    from unfreeze.dataset.sources import resolve_root

    params = load_params(args.params)
    root = resolve_root(params.data.source, root=params.data.root)
    print(json.dumps({"params": asdict(params), "data_root": str(root)}, indent=2))
    return 0


def _retrain(args: argparse.Namespace) -> int:
    problem = check_server(os.environ.get("PREFECT_API_URL"))
    if problem:
        return _fail(problem)
    from unfreeze.ops.retrain import retrain_flow

    state = retrain_flow(project=str(Path(args.project)), return_state=True)
    if not state.is_completed():
        print(f"unfreeze: retrain failed: {state.message}", file=sys.stderr)
        return 1
    print(format_summary(state.result()))
    return 0


def format_summary(result: dict) -> str:
    """One line per stage (ran / up to date, seconds), then the promotion decision."""
    lines = [f"retrain of {result['project']}"
             + (" (data source changed)" if result["source_changed"] else "")]
    for s in result["stages"]:
        lines.append(f"  {s['stage']:<12} {'ran' if s['ran'] else 'up to date':<11} "
                     f"{s['seconds']:8.1f} s")
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    p = result["promotion"]
    lines.append(f"promotion: {p['decision']} — {p['reason']}")
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return _fail("serving needs a Prefect server: start one with `prefect server start "
                     "--host 127.0.0.1` and set PREFECT_API_URL=http://127.0.0.1:4200/api")
    problem = check_server(url)
    if problem:
        return _fail(problem)
    from prefect.deployments.runner import EntrypointType

    from unfreeze.ops.retrain import retrain_flow

    root = Path(args.project).resolve()
    retrain_flow.serve(name=args.name or deployment_name(root), cron=args.cron, global_limit=1,
                       parameters={"project": str(root)},
                       entrypoint_type=EntrypointType.MODULE_PATH)
    return 0


def deployment_name(root: Path) -> str:
    """A stable deployment name per working copy: folder name plus a short path hash."""
    import hashlib

    return f"{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"


if __name__ == "__main__":
    sys.exit(main())
