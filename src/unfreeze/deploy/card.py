"""The model card: ``MODEL_CARD.md`` in every exported bundle, written from the run's facts.

:func:`gather` reads what the pipeline wrote (data and split reports, the data fingerprint,
both phases' training summaries, test and CV metrics, the operating point, export parity)
and :func:`render` turns it into markdown, limitations included: they are derived from
the facts (random initial weights, degenerate models, classes with few test images, a CV
that does not estimate the main model), never written by hand. A multi-label run (its
operating point holds one threshold per label) gets positives per label, a per-label test
table with each label's threshold and temperature, and limitations per label.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from unfreeze.config.params import METRIC_NAMES, Params
from unfreeze.evaluation.caveats import HEADLINE_MEANING, caveats
from unfreeze.io import read_json

CARD_FILE = "MODEL_CARD.md"
CARD_JSON = "MODEL_CARD.json"  # the facts the card is written from, for programs
FEW_TEST_IMAGES = 30  # a class with fewer test images has wide per-class intervals
SOURCES = {"data": "prepare/data.json", "split": "split/split.json",
           "head": "head/metrics.json", "finetune": "finetune/metrics.json",
           "test": "evaluate/metrics.json", "cv": "cv/metrics.json"}


def gather(reports: Path, source: Path, params: Params) -> dict:
    """The facts a card is written from; a report that does not exist is an empty dict."""
    facts = {name: _read(reports / rel) for name, rel in SOURCES.items()}
    return facts | {"source": _read(source), "params": asdict(params)}


def render(facts: dict, point: dict, parity: dict) -> str:
    """The card as markdown: ``facts`` from :func:`gather`, the operating point and the
    export parity numbers."""
    p, test, cv = facts["params"], facts["test"], facts["cv"]
    kind = "multi-label: " if point.get("thresholds") is not None else ""
    parts = [f"# Model card: {kind}{', '.join(point['classes'])}", "",
             "Written by the `export` stage from this run's reports; every number below has "
             "the file it comes from in `reports/`.", "",
             "## Limitations", "", *[f"- {x}" for x in limitations(facts)], "",
             *_data(facts), *_recipe(p, facts), *_test(test),
             *_cv(cv), *_operating_point(point, test), "## Export parity (test images)", "",
             *[f"- {k}: {v:.3g}" if isinstance(v, float) else f"- {k}: {v}"
               for k, v in sorted(parity.items())], ""]
    return "\n".join(parts)


def limitations(facts: dict) -> list[str]:
    """What the facts say a user must not overlook; "none found" when nothing is."""
    p, test, split = facts["params"], facts["test"], facts["split"]
    out = []
    if p["model"]["weights"] is None:
        out.append("trained from random initial weights (`model.weights: null`): not a "
                   "usable model; for a real one train from `imagenet` or a local weights file")
    out += caveats(test, facts["cv"])
    test_split = (split.get("splits") or {}).get("test") or {}
    if "labels" in test_split:
        out += _few_label_images(test_split) + list(split.get("warnings") or [])
        return out or ["none found in this run's reports"]
    test_counts = test_split.get("classes", {})
    few = {c: n for c, n in test_counts.items() if n < FEW_TEST_IMAGES}
    if few:
        out.append(f"few test images in class(es) {few}: per-class numbers are uncertain "
                   "(see the intervals)")
    return out or ["none found in this run's reports"]


def _few_label_images(test_split: dict) -> list[str]:
    """Multi-label: labels with fewer than FEW_TEST_IMAGES positive (or negative) test
    images."""
    n, out = test_split.get("n", 0), []
    for which, counts in (("positive", test_split["labels"]),
                          ("negative", {c: n - k for c, k in test_split["labels"].items()})):
        few = {c: k for c, k in counts.items() if k < FEW_TEST_IMAGES}
        if few:
            out.append(f"few {which} test images for label(s) {few}: per-label numbers are "
                       "uncertain (see the intervals)")
    return out


def _data(facts: dict) -> list[str]:
    data, split, source = facts["data"], facts["split"], facts["source"]
    if data.get("task") == "multilabel":
        return _label_data(data, split, source)
    rows = [f"| {name} | " + " | ".join(
        str(((split.get("splits") or {}).get(s) or {}).get("classes", {}).get(name, 0))
        for s in ("train", "val", "test")) + f" | {n} |"
        for name, n in (data.get("classes") or {}).items()]
    return ["## Data", "",
            f"Source `{source.get('source', '—')}`: {data.get('n_ok')} usable images, "
            f"{data.get('n_rejected')} rejected; fingerprint `{source.get('fingerprint', '—')}` "
            f"({source.get('files', '—')} files).", "",
            "| class | train | val | test | all |", "|---|---|---|---|---|", *rows, ""]


def _label_data(data: dict, split: dict, source: dict) -> list[str]:
    """Multi-label: images carrying each label per split, and images with no label."""
    splits = [(split.get("splits") or {}).get(s) or {} for s in ("train", "val", "test")]
    rows = [f"| {name} | " + " | ".join(str((s.get("labels") or {}).get(name, 0))
                                        for s in splits) + f" | {n} |"
            for name, n in (data.get("classes") or {}).items()]
    rows.append("| (no label) | " + " | ".join(str(s.get("no_label", 0)) for s in splits)
                + f" | {data.get('no_label', 0)} |")
    return ["## Data", "",
            f"Source `{source.get('source', '—')}`: {data.get('n_ok')} usable images, "
            f"{data.get('n_rejected')} rejected; fingerprint `{source.get('fingerprint', '—')}` "
            f"({source.get('files', '—')} files). Multi-label: an image carries any number of "
            f"labels, none included ({len(data.get('label_sets') or {})} distinct label sets); "
            f"split stratification {split.get('stratification', '—')}.", "",
            "| label (images with it) | train | val | test | all |", "|---|---|---|---|---|",
            *rows, ""]


def _recipe(p: dict, facts: dict) -> list[str]:
    lines = ["## Recipe and training", "",
             f"InceptionV3, {p['model']['image_size']} px, weights `{p['model']['weights']}`, "
             f"head {p['model']['hidden_units']} units (dropout {p['model']['dropout']}); "
             f"phase two unfreezes from `{p['finetune']['unfreeze_from']}` with BatchNorm "
             "kept in inference mode.", "",
             "| phase | epochs run | best epoch | best val loss | learning rate | batch |",
             "|---|---|---|---|---|---|"]
    for phase in ("head", "finetune"):
        s = facts[phase]
        lines.append(f"| {phase} | {s.get('epochs_run', '—')} | {s.get('best_epoch', '—')} | "
                     f"{_fmt(s.get('best_val_loss'))} | {p[phase]['learning_rate']} | "
                     f"{p[phase]['batch_size']} |")
    return [*lines, ""]


def _test(test: dict) -> list[str]:
    ci = test.get("ci95") or {}
    rows = [f"| {m} | {_fmt(test.get(m))} | " + (
        f"{_fmt(ci[m]['low'])} – {_fmt(ci[m]['high'])}" if ci.get(m) else "—") + " |"
        for m in METRIC_NAMES]
    multilabel = test.get("task") == "multilabel"
    return ["## Test set", "",
            f"{test.get('n_test', '—')} held-out test images, never used for training, early "
            "stopping or the operating point; 95% intervals from "
            f"{(test.get('bootstrap') or {}).get('resamples', 0)} "
            f"{'label-set' if multilabel else 'class'}-stratified bootstrap "
            "resamples.", "", *([HEADLINE_MEANING, ""] if multilabel else []),
            "| metric | value | 95% CI |", "|---|---|---|", *rows, "",
            *(_label_test(test) if multilabel else [])]


def _label_test(test: dict) -> list[str]:
    """Multi-label: a row per label, each with its own threshold and temperature, then the
    micro/macro summary."""
    ci = (test.get("ci95") or {}).get("per_label") or {}
    thresholds, temps = test.get("thresholds") or {}, test.get("temperatures") or {}
    fallbacks = test.get("threshold_fallbacks") or {}
    rows = [f"| {c} | {v.get('support')} | {_fmt(v.get('precision'))} | "
            f"{_fmt(v.get('recall'))} | {_fmt(v.get('f1'))} | {_fmt(v.get('roc_auc'))} | "
            f"{_interval((ci.get(c) or {}).get('roc_auc'))} | "
            f"{_fmt(v.get('average_precision'))} | {_fmt(thresholds.get(c))}"
            f"{' (fallback)' if c in fallbacks else ''} | {_fmt(temps.get(c))} |"
            for c, v in (test.get("per_label") or {}).items()]
    summary = ", ".join(f"{name} {_fmt(test.get(key))}" for key, name in (
        ("subset_accuracy", "subset accuracy"), ("hamming_loss", "Hamming loss"),
        ("micro_precision", "micro precision"), ("micro_recall", "micro recall"),
        ("micro_f1", "micro F1"), ("macro_f1", "macro F1"), ("micro_roc_auc", "micro ROC-AUC"),
        ("map", "mAP")))
    return ["| label | test positives | precision | recall | F1 | ROC-AUC | 95% CI | AP | "
            "threshold | temperature |", "|---|---|---|---|---|---|---|---|---|---|", *rows, "",
            f"Over all labels: {summary}.", ""]


def _cv(cv: dict) -> list[str]:
    if not cv:
        return ["## Cross-validation", "", "Not run.", ""]
    rows = [f"| {m} | {_fmt(v['mean'])} ± {_fmt(v['std'])} | "
            + (f"{_fmt(v['ci95'][0])} – {_fmt(v['ci95'][1])}" if v.get("ci95") else "—")
            + " |" for m, v in cv["metrics"].items()]
    return ["## Cross-validation", "",
            f"{cv['folds']} folds of train + val; estimates {cv.get('estimates', '—')}.", "",
            "| metric | mean ± std | 95% CI of the mean |", "|---|---|---|", *rows, ""]


def _operating_point(point: dict, test: dict) -> list[str]:
    if point.get("thresholds") is not None:
        return _label_point(point, test)
    return ["## Operating point and calibration", "",
            f"Fitted on validation: temperature {_fmt(point.get('temperature'))}, "
            f"threshold {_fmt(point.get('threshold'))} on `{point.get('positive_class')}` "
            f"(rule `{point.get('threshold_rule')}`), test-time augmentation "
            f"`{point.get('tta')}`. Expected calibration error on test "
            f"{_fmt(test.get('ece_uncalibrated'))} before, {_fmt(test.get('ece'))} after.", ""]


def _label_point(point: dict, test: dict) -> list[str]:
    """Multi-label: each label's temperature and threshold, the fallbacks with their reason."""
    fallbacks = point.get("fallbacks") or {}
    said = "; ".join(
        f"`{c}` temperature {_fmt(t)}, threshold {_fmt(h)}"
        + (f" (fallback: {fallbacks[c]})" if c in fallbacks else "")
        for c, t, h in zip(point["classes"], point.get("temperatures") or [],
                           point["thresholds"], strict=False))
    return ["## Operating point and calibration", "",
            f"Fitted on validation, label by label (rule `{point.get('threshold_rule')}`): "
            f"{said}. A label is predicted when its calibrated probability reaches its "
            f"threshold; test-time augmentation `{point.get('tta')}`. Expected calibration "
            f"error on test (every image × label) {_fmt(test.get('ece_uncalibrated'))} "
            f"before, {_fmt(test.get('ece'))} after.", ""]


def _interval(ci: dict | None) -> str:
    return f"{_fmt(ci['low'])} – {_fmt(ci['high'])}" if ci else "—"


def _fmt(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _read(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}
