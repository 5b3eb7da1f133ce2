"""The HTML building blocks of ``reports/index.html`` (:mod:`unfreeze.report`): tables, image
tags, notes, and the multi-label parts (positives per label and split, the per-label test
table with each label's threshold and temperature, micro/macro summary, fallbacks).

Pure functions of the stages' JSON dicts returning HTML strings; escaped throughout.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from unfreeze.evaluation.caveats import HEADLINE_MEANING

MEANING = f"<p>{html.escape(HEADLINE_MEANING)}</p>"
SUMMARY = {"subset_accuracy": "subset accuracy (exact label set)",
           "hamming_loss": "Hamming loss (wrong image × label decisions)",
           **{f"{kind}_{k}": f"{kind} {k}" for kind in ("micro", "macro")
              for k in ("precision", "recall", "f1", "roc_auc")},
           "map": "mAP (mean average precision)", "labels_per_image": "labels per image"}


def image_tag(path: Path, alt: str) -> str:
    """An <img> with the PNG inlined, or a note naming the missing file."""
    if not path.is_file():
        return missing(f"{path} not found")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def missing(text: str) -> str:
    """A note, in the page, that an input is missing and which stage writes it."""
    return f'<p class="missing">{html.escape(text)}</p>'


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; floats shown with 4 decimals, None as a dash."""
    def cell(value) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def label_counts(data: dict) -> str:
    """Multi-label data.json: images carrying each label, label sets, images with none."""
    sets = data.get("label_sets") or {}
    return (f"<p>Multi-label task: {len(data['classes'])} labels, {len(sets)} distinct label "
            f"sets, {data.get('no_label', 0)} image(s) with no label.</p>"
            + table(["label", "images with it"], [[c, n] for c, n in data["classes"].items()]))


def label_split_table(split: dict) -> str:
    """Multi-label split.json: per split its images, positives per label and images with no
    label; the stratification used and the warnings on rare labels."""
    splits = split["splits"]
    labels = sorted({c for s in splits.values() for c in s["labels"]})
    rows = [[name, s["n"], s["fraction"], *(s["labels"].get(c, 0) for c in labels),
             s.get("no_label", 0)] for name, s in splits.items()]
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in split.get("warnings") or [])
    return (table(["split", "images", "fraction", *labels, "no label"], rows)
            + f"<p>Positive images per label and split (an image may carry several labels, "
            f"or none); stratification: {html.escape(str(split.get('stratification')))}.</p>"
            + (f'<ul class="missing">{warnings}</ul>' if warnings else ""))


def per_label(values: dict | None, digits: int) -> str:
    """``{label: number}`` as "a 0.4100, b 0.5000"."""
    return ", ".join(f"{html.escape(k)} {v:.{digits}f}" for k, v in (values or {}).items())


def label_details(m: dict) -> str:
    """Multi-label: a row per label (support, P/R/F1, ROC-AUC and AP with their intervals,
    threshold, temperature), the micro/macro summary and the labels whose threshold fell
    back to the default."""
    ci = (m.get("ci95") or {}).get("per_label") or {}
    fallbacks = m.get("threshold_fallbacks") or {}
    thresholds, temps = m.get("thresholds") or {}, m.get("temperatures") or {}
    rows = [[c, v["support"], v["precision"], v["recall"],
             *(with_interval(v.get(k), (ci.get(c) or {}).get(k))
               for k in ("f1", "roc_auc", "average_precision")),
             f"{thresholds[c]:.4f} (fallback)" if c in fallbacks and c in thresholds
             else thresholds.get(c),
             temps.get(c)] for c, v in (m.get("per_label") or {}).items()]
    said = "".join(f"<li>{html.escape(c)}: {html.escape(str(why))}</li>"
                   for c, why in fallbacks.items())
    return "\n".join([
        table(["label", "support", "precision", "recall", "f1", "ROC-AUC", "AP", "threshold",
               "temperature"], rows),
        table(["metric", "test"], [[name, m.get(k)] for k, name in SUMMARY.items()]),
        f"<p>Threshold fallbacks (validation could not support the rule):</p><ul>{said}</ul>"
        if said else ""])


def with_interval(value, ci: dict | None):
    """A value, or "value [low, high]" when it has an interval."""
    if value is None or not ci:
        return value
    return f"{value:.4f} [{ci['low']:.3f}, {ci['high']:.3f}]"
