"""The ranking of a sweep's trials: score, 95% interval, and which trials the data cannot tell
apart from the best; printed, and saved as ranking.csv and ranking.md.

The rule for "not distinguishable from the best" (``≈``):

- **paired** (a CV metric, and the trials share their folds: no swept param decides them,
  see :data:`FOLD_PARAMS`, and every trial has the same held-out fold sizes): per fold, the
  best trial's value minus the trial's; the 95% t-interval of their mean (k-1 degrees of
  freedom, as cv_report's interval of a mean). ``≈`` when it reaches 0. Pairing removes the
  fold-to-fold spread both trials share, so it separates trials the plain intervals cannot;
- **overlap** (a CV metric whose folds differ between trials): ``≈`` when the trial's 95%
  interval over folds overlaps the best's — a rougher, more lenient rule;
- **none** (a validation metric): one validation split gives no interval; no ``≈`` marks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from unfreeze.io import write_atomic, write_csv
from unfreeze.ops.sweep_space import Metric

# Params that decide the CV folds (dvc.yaml: folds ← seed, split.group_by, cv.folds; and
# the images themselves ← data, split): sweeping one makes the folds differ between trials.
FOLD_PARAMS = ("seed", "split", "cv.folds", "data")
MODES = {
    "paired": "paired, the 95% t-interval of the per-fold differences from the best over "
              "the same {k} folds; ≈ when it reaches 0",
    "overlap": "overlap of the 95% intervals over folds ({why}); ≈ when a trial's interval "
               "overlaps the best's",
    "none": "none, a validation metric has no interval (one validation split); use a cv: "
            "metric to tell trials apart",
}


def comparison_mode(metric: Metric, paths: list[str], trials: list[dict]) -> tuple[str, str]:
    """``paired``, ``overlap`` or ``none``, and the sentence that says so."""
    if metric.kind != "cv":
        return "none", MODES["none"]
    swept = [p for p in paths if any(p == f or p.startswith(f + ".") for f in FOLD_PARAMS)]
    sizes = {tuple(t.get("fold_sizes") or ()) for t in trials if t.get("values")}
    if swept:
        return "overlap", MODES["overlap"].format(why=f"{swept[0]} is swept: folds differ")
    if len(sizes) > 1:
        return "overlap", MODES["overlap"].format(why="fold sizes differ between trials")
    k = len(next(iter(sizes), ()))
    return "paired", MODES["paired"].format(k=k or "k")


def paired_interval(best: list[float], other: list[float], maximize: bool
                    ) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the per-fold amount by which ``best`` beats ``other``."""
    from unfreeze.evaluation.cv_report import t_quantile_975

    sign = 1.0 if maximize else -1.0
    diffs = [sign * (b - o) for b, o in zip(best, other, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    half = t_quantile_975(n - 1) * sd / math.sqrt(n) if n > 1 else 0.0
    return mean, mean - half, mean + half


def _compare(trial: dict, best: dict, mode: str, maximize: bool) -> dict:
    """The row fields comparing ``trial`` with ``best`` under ``mode``."""
    if trial is best:
        return {"vs_best": 0.0, "indistinguishable": True, "mark": "best"}
    if mode == "paired":
        mean, low, high = paired_interval(best["values"], trial["values"], maximize)
        same = low <= 0.0
        return {"vs_best": 0.0 - mean, "vs_best_low": 0.0 - high, "vs_best_high": 0.0 - low,
                "indistinguishable": same, "mark": "≈" if same else ""}
    gap = trial["score"] - best["score"]
    if mode == "overlap" and trial.get("ci95") and best.get("ci95"):
        (low, high), (b_low, b_high) = trial["ci95"], best["ci95"]
        same = low <= b_high and b_low <= high
        return {"vs_best": gap, "indistinguishable": same, "mark": "≈" if same else ""}
    return {"vs_best": gap, "indistinguishable": None, "mark": ""}


def rank(trials: list[dict], metric: Metric, mode: str) -> list[dict]:
    """Rows best first: scored trials, then unscored and failed ones (no rank)."""
    done = [t for t in trials if t["status"] == "done" and t.get("score") is not None]
    sign = -1.0 if metric.maximize else 1.0
    done.sort(key=lambda t: (sign * t["score"], t["number"]))
    rows = []
    for i, trial in enumerate(done, start=1):
        rows.append(_row(trial, i) | _compare(trial, done[0], mode, metric.maximize))
    for trial in trials:
        if trial["status"] in ("done", "failed") and trial not in done:
            rows.append(_row(trial, None) | {"mark": trial["status"] if trial["status"]
                                             == "failed" else "no score"})
    return rows


def _row(trial: dict, position: int | None) -> dict:
    ci = trial.get("ci95") or [None, None]
    return {"rank": position, "trial": trial["number"], "experiment": trial["experiment"],
            "status": trial["status"], "score": trial.get("score"), "ci95_low": ci[0],
            "ci95_high": ci[1], "seconds": trial.get("seconds"), "params": trial["params"],
            "error": trial.get("error")}


def _num(value: Any, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[dict], metric: Metric) -> list[str]:
    """The ranking as aligned text lines (markdown table syntax)."""
    lines = [f"| rank | trial | experiment | {metric.label} | 95% interval | vs best | "
             "params |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        interval = (f"[{_num(r['ci95_low'])}, {_num(r['ci95_high'])}]"
                    if r["ci95_low"] is not None else "–")
        versus = r["mark"] or ""
        if r.get("vs_best") is not None and r["mark"] != "best":
            versus = f"{r['mark']} {r['vs_best']:+.4f}".strip()
            if r.get("vs_best_low") is not None:
                versus += f" [{r['vs_best_low']:+.4f}, {r['vs_best_high']:+.4f}]"
        params = " ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"| {_num(r['rank'], 'd')} | {r['trial']} | {r['experiment']} | "
                     f"{_num(r['score'])} | {interval} | {versus} | {params} |")
    return lines


def summary(rows: list[dict], metric: Metric, note: str, header: str) -> list[str]:
    """The header line, the table, the comparison rule and how to restore the best trial."""
    better = "higher" if metric.maximize else "lower"
    lines = [header, "", f"Metric: {metric.label} ({better} is better). Comparison with the "
             f"best: {note}.",
             "", *table(rows, metric), ""]
    best = next((r for r in rows if r["mark"] == "best"), None)
    if best:
        lines.append(f"Best: {best['experiment']}; restore it with "
                     f"`dvc exp apply {best['experiment']}`, then `dvc repro evaluate` reads "
                     "the test split once, for it.")
    else:
        lines.append("No trial has a score yet.")
    return lines


def write_ranking(folder: Path, rows: list[dict], lines: list[str]) -> None:
    """ranking.csv (one column per swept param) and ranking.md, atomically."""
    paths = sorted({p for r in rows for p in r["params"]})
    columns = ["rank", "trial", "experiment", "status", "score", "ci95_low", "ci95_high",
               "vs_best", "vs_best_low", "vs_best_high", "indistinguishable", "seconds",
               *paths, "error"]
    flat = [{k: v for k, v in r.items() if k in columns} | r["params"] for r in rows]
    write_csv(folder / "ranking.csv", flat, columns)
    text = "\n".join(lines) + "\n"
    write_atomic(folder / "ranking.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
