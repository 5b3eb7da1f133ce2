"""The classic recipe against each option beyond it, by 3-fold CV of both phases on ELPV.

    .venv/bin/python benchmarks/recipe_options.py                 # 96 px, 5 + 5 epochs
    .venv/bin/python benchmarks/recipe_options.py --weights imagenet --size 299 --epochs 10 10
    .venv/bin/python benchmarks/recipe_options.py --only classic one_cycle

Every contender runs the same cross-validation as `dvc repro cv_report` (the `cv@k` stage
body, :func:`unfreeze.evaluation.cv.cross_validate_fold`, then the CV report's own
definitions: each fold at its operating point fitted on its inner validation slice), on the
same 3 folds of the ELPV train + val pool (the test split is never read), with the same epoch
budget (``--epochs`` head finetune, early stopping off) and the same random or given base
weights. Contenders differ only in the params listed in :data:`OPTIONS`; each runs in its own
process, one after the other.

Printed per contender: the folds whose model predicts one class for every held-out image
(the CV report's ``degenerate_folds``), the CV mean of ROC-AUC and balanced accuracy with their
95 % t intervals over the folds, and the difference from the classic recipe on the same images:
the pooled out-of-fold predictions compared with the project's paired, class-stratified
bootstrap (:func:`unfreeze.evaluation.compare.paired_comparison`, 2000 resamples). A default
changes only where that interval lies above 0. With ImageNet weights the verdict can differ:
rerun with ``--weights imagenet`` (or a local weights file) to check it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

FOLDS = 3
METRICS = ("roc_auc", "balanced_accuracy")
# each contender: the params it changes from the classic recipe (both phases where it applies)
OPTIONS: dict[str, dict] = {
    "classic": {},
    "cosine": {"head": {"schedule": "cosine", "warmup_epochs": 1},
               "finetune": {"schedule": "cosine", "warmup_epochs": 1}},
    "one_cycle": {"head": {"schedule": "one_cycle"}, "finetune": {"schedule": "one_cycle"}},
    # layer-wise rates matter when several blocks train: unfreeze from mixed8, the top block
    # at 2e-4, mixed9 at 1e-4, mixed8 at 5e-5; "mixed8" is its control (one rate, 1e-4)
    "layer_lr_decay": {"finetune": {"unfreeze_from": "mixed8", "layer_lr_decay": 0.5,
                                    "learning_rate": 2e-4}},
    "mixed8": {"finetune": {"unfreeze_from": "mixed8"}},
    "label_smoothing": {"head": {"label_smoothing": 0.1}, "finetune": {"label_smoothing": 0.1}},
    "mixup": {"augment": {"mixup": 0.2}, "head": {"cached_views": 2},
              "finetune": {"cached_views": 2}},
    "combined": {"head": {"schedule": "one_cycle", "label_smoothing": 0.1},
                 "finetune": {"schedule": "one_cycle", "label_smoothing": 0.1}},
}


def merged(base: dict, change: dict) -> dict:
    """``base`` with ``change`` laid over it, section by section."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in change.items():
        out.setdefault(section, {}).update(values)
    return out


def base_params(args: argparse.Namespace) -> dict:
    """The classic recipe at the benchmark's size, epochs and weights (no early stopping)."""
    head, finetune = args.epochs
    weight = {"class_weight": args.class_weight} if args.class_weight else {}
    return {"model": {"image_size": args.size, "weights": args.weights},
            "head": {"epochs": head, "patience": 0, **weight},
            "finetune": {"epochs": finetune, "patience": 0, **weight},
            "cv": {"folds": FOLDS}, "evaluate": {"bootstrap": 0}}


def write_folds(work: Path) -> Path:
    """The 3 folds of the ELPV train + val pool, as the `folds` stage writes them."""
    import pyarrow.parquet as pq

    from unfreeze.config.params import params_from_dict
    from unfreeze.dataset.folds import folds_table
    from unfreeze.dataset.scan import scan
    from unfreeze.dataset.splits import split_table

    defaults = params_from_dict({})
    manifest, _ = scan(defaults.data, progress=False)
    splits = split_table(manifest, defaults.split, defaults.seed).replace_schema_metadata(
        manifest.schema.metadata)
    table = folds_table(splits, FOLDS, defaults.seed, grouped=False)
    path = work / "folds.parquet"
    pq.write_table(table.replace_schema_metadata(manifest.schema.metadata), path)
    return path


def contender(name: str, raw: dict, folds: Path, out: Path) -> None:
    """Run the 3 folds of one contender in this process; write its CV report inputs."""
    from unfreeze.config.params import params_from_dict
    from unfreeze.evaluation.cv import cross_validate_fold

    params = params_from_dict(raw)
    started = time.perf_counter()
    for k in range(FOLDS):
        cross_validate_fold(params, folds, k, out / f"fold_{k}")
    (out / "seconds.json").write_text(json.dumps(time.perf_counter() - started))
    print(f"{name}: {FOLDS} folds in {time.perf_counter() - started:.0f} s", flush=True)


def report(raw: dict, out: Path) -> tuple[dict, object]:
    """The CV report of a contender's folds and its pooled out-of-fold predictions."""
    from unfreeze.config.params import params_from_dict
    from unfreeze.evaluation.cv_report import build_report

    params = params_from_dict(raw)
    result, _, _, table = build_report([out / f"fold_{k}" for k in range(FOLDS)], params.cv,
                                       params.evaluate)
    return result, table


def versus(metric: str, table, classic_table, positive: str) -> dict:
    """The paired bootstrap difference of ``metric`` (this − classic) on the same images."""
    import numpy as np

    from unfreeze.evaluation.compare import paired_comparison

    order = {p: i for i, p in enumerate(classic_table["path"].to_pylist())}
    rows = np.asarray([order[p] for p in table["path"].to_pylist()])
    classes = sorted({c[len("prob_"):] for c in table.column_names if c.startswith("prob_")})
    index = {c: i for i, c in enumerate(classes)}

    def arrays(t, take=None):
        probs = np.stack([t[f"prob_{c}"].to_numpy() for c in classes], axis=1)
        pred = np.asarray([index[v] for v in t["predicted"].to_pylist()])
        return (probs, pred) if take is None else (probs[take], pred[take])

    y = np.asarray([index[v] for v in table["label"].to_pylist()])
    return paired_comparison(metric, y, arrays(table), arrays(classic_table, rows),
                             index.get(positive), 2000, 0)


def cell(entry: dict) -> str:
    lo, hi = entry["ci95"]
    return f"{entry['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, nargs=2, default=(5, 5), metavar=("HEAD", "FT"))
    parser.add_argument("--weights", default=None, help="imagenet | a .h5 file | omit: random")
    parser.add_argument("--only", nargs="*", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--class-weight", choices=["balanced"], default=None,
                        help="both phases of every contender (the README's offline demo sets "
                        "it: without it, weak models predict the majority class at 0.5)")
    parser.add_argument("--work", help="folder for the folds' outputs (kept; a contender "
                        "already finished there is not run again)")
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    args = parser.parse_args()
    base = base_params(args)
    if args.contender:
        work = Path(args.work)
        contender(args.contender, merged(base, OPTIONS[args.contender]),
                  work / "folds.parquet", work / args.contender)
        return
    from common import machine

    print(machine(), flush=True)
    print(f"ELPV, {FOLDS}-fold CV of both phases, {args.size} px, epochs {args.epochs[0]} + "
          f"{args.epochs[1]}, weights {args.weights or 'random (offline)'}, class weights "
          f"{args.class_weight or 'none'}", flush=True)
    names = ["classic", *[n for n in args.only if n != "classic"]]
    work = Path(args.work or tempfile.mkdtemp(prefix="recipe-options-"))
    print(f"outputs in {work}", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "folds.parquet").exists():
        write_folds(work)
    for name in names:
        if (work / name / "seconds.json").exists():
            continue
        subprocess.run([sys.executable, __file__, "--contender", name, "--work", str(work),
                        "--size", str(args.size), "--epochs", *map(str, args.epochs),
                        *(["--weights", args.weights] if args.weights else []),
                        *(["--class-weight", args.class_weight] if args.class_weight else [])],
                       check=True)
    print_table(names, base, work)


def print_table(names: list[str], base: dict, work: Path) -> None:
    """The table: CV mean [95 % CI] per metric, and the paired difference from classic."""
    results = {n: report(merged(base, OPTIONS[n]), work / n) for n in names}
    classic, classic_table = results["classic"]
    positive = classic["positive_class"]
    head = " | ".join(f"CV {m} mean [95% CI] | Δ {m} vs classic [95% CI]" for m in METRICS)
    print(f"\n| contender | seconds | degenerate folds | {head} |\n|---|---|---|"
          + "---|---|" * len(METRICS))
    for name in names:
        result, table = results[name]
        cells = []
        for metric in METRICS:
            cells.append(cell(result["metrics"][metric]))
            if name == "classic":
                cells.append("")
                continue
            diff = versus(metric, table, classic_table, positive)
            ci = diff["ci95"]
            cells.append(f"{diff['difference']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"
                         + (" **real**" if ci["low"] > 0 else ""))
        seconds = json.loads((work / name / "seconds.json").read_text())
        degenerate = len(result["degenerate_folds"])  # one class predicted for every image
        print(f"| {name} | {seconds:.0f} | {degenerate} of {FOLDS} | " + " | ".join(cells)
              + " |", flush=True)


if __name__ == "__main__":
    main()
