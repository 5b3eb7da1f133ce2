"""`unfreeze predict`, `explain`, `report`, `cache` and `release`: a saved model used on
files, the HTML report, the decoded-image cache, and the promoted releases."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from unfreeze.config.errors import UnfreezeError


def add_commands(sub) -> dict[str, Callable]:
    """`predict`, `explain`, `report`, `cache` and `release`; their handlers by name."""
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
    _add_store_commands(sub)
    return {"predict": _predict, "explain": _explain, "report": _report, "cache": _cache,
            "release": _release}


def _add_store_commands(sub) -> None:
    """`cache` and `release`: what is stored beside the pipeline's outputs."""
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
            raise UnfreezeError("release use: give the release name (see `unfreeze release list`)")
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


def _report(args: argparse.Namespace) -> int:
    """`report`: reports/index.html from whatever stage reports exist."""
    from unfreeze.report import build_report, inputs_under

    print(build_report(inputs_under(Path(args.reports)), Path(args.out)))
    return 0
