"""The HTML report of a multi-label run: positives per label, a per-label test table with each
label's own threshold and temperature, and what the headline numbers mean; a multiclass run's
page keeps its class tables. ``multilabel_reports`` (also used by tests/deploy/test_card.py)
writes the reports the way the stages compute them, on synthetic arrays."""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from unfreeze.config.params import SplitParams
from unfreeze.dataset.splits import split_table, summarize_splits
from unfreeze.evaluation.bootstrap import metric_intervals
from unfreeze.evaluation.calibrate import (
    calibrate_probs,
    decide_classes,
    expected_calibration_error,
    fit_operating_point,
    is_degenerate,
)
from unfreeze.evaluation.metrics import compute_metrics
from unfreeze.report import build_report, inputs_under

CLASSES = ["defect", "mono"]
SPLIT = SplitParams(test=0.2, val=0.1)


def label_arrays(n: int, seed: int, mono: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot truth and informative but noisy sigmoid probabilities; ``mono=False``: the
    label ``mono`` has no positive image (its threshold must fall back)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < [0.4, 0.5]).astype(int)
    y[:, 1] *= mono
    return y, np.clip(0.25 + 0.5 * y + rng.normal(0, 0.2, y.shape), 0.01, 0.99)


def label_sets(n: int = 40, seed: int = 0) -> list[list[str]]:
    """Image label sets: ``defect`` common, ``mono`` rare (4 images), some with no label."""
    rng = np.random.default_rng(seed)
    sets = [["defect"] if rng.random() < 0.5 else [] for _ in range(n)]
    for i in (1, 2, 5, 9):
        sets[i] = sorted({*sets[i], "mono"})
    return sets


def split_report(sets: list[list[str]]) -> dict:
    """split.json of these label sets, from the split stage's own functions."""
    rows = [{"path": f"img/{i}.png", "label": ";".join(s), "labels": s, "sha256": f"h{i}"}
            for i, s in enumerate(sets)]
    manifest = pa.Table.from_pylist(rows, schema=pa.schema([
        ("path", pa.string()), ("label", pa.string()), ("labels", pa.list_(pa.string())),
        ("sha256", pa.string())])).replace_schema_metadata(
        {b"task": b"multilabel", b"classes": json.dumps(CLASSES).encode()})
    return summarize_splits(split_table(manifest, SPLIT, seed=0), SPLIT)


def evaluate_metrics() -> tuple[dict, dict]:
    """evaluate's metrics.json and operating point: fitted on validation (where ``mono`` has
    no positive image), then measured on test with bootstrap intervals."""
    y_val, p_val = label_arrays(30, 1, mono=False)
    y, raw = label_arrays(60, 2)
    point = fit_operating_point(y_val, p_val, CLASSES, None, "f1", "temperature", "hflip")
    probs = calibrate_probs(raw, point)
    y_pred = decide_classes(probs, point)
    metrics = compute_metrics(y, probs, CLASSES, None, y_pred) | {
        "ci95": metric_intervals(y, probs, y_pred, CLASSES, None, 200, 0),
        "bootstrap": {"resamples": 200}, "task": "multilabel", "n_val": 30, "tta": "hflip",
        "threshold": None, "threshold_rule": point.threshold_rule, "temperature": 1.0,
        "thresholds": dict(zip(CLASSES, point.thresholds, strict=True)),
        "temperatures": dict(zip(CLASSES, point.temperatures, strict=True)),
        "threshold_fallbacks": point.fallbacks, "degenerate": is_degenerate(y, y_pred),
        "ece": expected_calibration_error(y, probs),
        "ece_uncalibrated": expected_calibration_error(y, raw)}
    return json.loads(json.dumps(metrics)), point.as_dict()


def multilabel_reports(root: Path) -> tuple[dict, dict]:
    """Write reports/{prepare,split,evaluate,cv} of a two-label run under ``root``; return
    (test metrics, operating point) as written. The split's images and the test arrays are
    drawn independently: their counts do not match, and no test relies on them matching."""
    sets = label_sets()
    metrics, point = evaluate_metrics()
    files = {
        "prepare/data.json": {
            "n_candidates": 41, "n_ok": 40, "n_rejected": 1, "n_ignored": 0,
            "task": "multilabel", "classes": dict(Counter(c for s in sets for c in s)),
            "label_sets": dict(Counter(";".join(s) for s in sets)),
            "no_label": sum(not s for s in sets)},
        "split/split.json": split_report(sets),
        "evaluate/metrics.json": metrics,
        "cv/metrics.json": {
            "folds": 2, "phases": ["head", "finetune"], "degenerate_folds": [],
            "estimates": "the main model's whole procedure (both phases)",
            "operating_point": {"threshold_rule": "f1", "calibration": "temperature",
                                "tta": "hflip", "per_fold": [
                                    {"fold": k, "threshold": None, "temperature": 1.0,
                                     "thresholds": [0.4, 0.5], "temperatures": [1.1, 1.0]}
                                    for k in range(2)]},
            "metrics": {"accuracy": {"mean": 0.6, "std": 0.05, "ci95": [0.5, 0.7]}}},
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(data))
    return metrics, point


def page(root: Path) -> str:
    return build_report(inputs_under(root), root / "index.html").read_text()


def row(*cells) -> str:
    """The start of a table row, as report.table prints it (floats to 4 decimals)."""
    return "<tr>" + "".join(
        f"<td>{f'{c:.4f}' if isinstance(c, float) else html.escape(str(c))}</td>"
        for c in cells)


def test_data_and_split_tables_count_positives_per_label_and_images_without_one(tmp_path):
    multilabel_reports(tmp_path)
    text = page(tmp_path)
    data = json.loads((tmp_path / "prepare/data.json").read_text())
    split = json.loads((tmp_path / "split/split.json").read_text())
    assert (f"2 labels, {len(data['label_sets'])} distinct label sets, {data['no_label']} "
            "image(s) with no label") in text
    assert row("defect", data["classes"]["defect"]) in text and row("mono", 4) in text
    assert "<th>fraction</th><th>defect</th><th>mono</th><th>no label</th>" in text
    test = split["splits"]["test"]
    assert row("test", test["n"], test["fraction"], test["labels"]["defect"],
               test["labels"]["mono"], test["no_label"]) in text
    assert "stratification: iterative." in text
    assert split["warnings"] and "label &#x27;mono&#x27; has 4 image(s), too rare" in text


def test_the_test_section_has_a_row_per_label_with_its_threshold_and_interval(tmp_path):
    m, _ = multilabel_reports(tmp_path)
    text = page(tmp_path)
    d, ci = m["per_label"]["defect"], m["ci95"]["per_label"]["defect"]["roc_auc"]
    t = m["thresholds"]["defect"]
    assert d["support"] > 0 and t != 0.5 and m["threshold_fallbacks"] == {
        "mono": "no positive image in validation"}
    assert row("defect", d["support"], d["precision"], d["recall"]) in text
    assert (f"{d['roc_auc']:.4f} [{ci['low']:.3f}, {ci['high']:.3f}]</td>"
            f"<td>{d['average_precision']:.4f}") in text
    assert (f"<td>{t:.4f}</td><td>{m['temperatures']['defect']:.4f}</td></tr>") in text
    assert "<td>0.5000 (fallback)</td><td>1.0000</td></tr>" in text
    assert "<li>mono: no positive image in validation</li>" in text
    assert f"per-label thresholds defect {t:.4f}, mono 0.5000 (rule f1 (per label))" in text
    assert "threshold none (arg-max)" not in text and "<th>class</th>" not in text


def test_the_headline_numbers_say_what_they_mean_for_multilabel(tmp_path):
    m, _ = multilabel_reports(tmp_path)
    text = page(tmp_path)
    assert "accuracy = subset accuracy (exact label set)" in text
    assert "average_precision = mAP" in text
    assert row("subset accuracy (exact label set)", m["subset_accuracy"]) in text
    assert m["subset_accuracy"] == m["accuracy"]
    assert row("Hamming loss (wrong image × label decisions)", m["hamming_loss"]) in text
    assert row("micro f1", m["micro_f1"]) in text and row("mAP (mean average precision)",
                                                             m["map"]) in text
    assert "200 label-set-stratified bootstrap resamples" in text
    assert "(per-label thresholds by rule f1, calibration temperature" in text  # CV
    warn = text.split('<div class="warn">')[1].split("</div>")[0]  # "Read this first"
    assert "mono keep the fallback threshold" in warn


def test_a_multiclass_page_keeps_its_class_tables_and_single_threshold(tmp_path):
    files = {
        "prepare/data.json": {"n_candidates": 9, "n_ok": 8, "n_rejected": 1, "n_ignored": 0,
                              "classes": {"cat": 5, "dog": 3}},
        "split/split.json": {"splits": {"test": {"n": 4, "fraction": 0.5,
                                                 "classes": {"cat": 3, "dog": 1}}}},
        "evaluate/metrics.json": {
            "n_test": 4, "n_val": 2, "accuracy": 0.75, "threshold": 0.41, "threshold_rule": "f1",
            "temperature": 1.7, "tta": "none", "ece": 0.05, "ece_uncalibrated": 0.1,
            "bootstrap": {"resamples": 50}, "per_class": {"cat": {
                "precision": 1.0, "recall": 0.5, "f1": 0.6, "support": 3}}},
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(json.dumps(data))
    text = page(tmp_path)
    assert ("validation images: threshold 0.4100 (rule f1), temperature 1.700, test-time "
            "augmentation none.") in text
    assert "<th>split</th><th>images</th><th>fraction</th><th>cat</th><th>dog</th></tr>" in text
    assert row("test", 4, 0.5, 3, 1) + "</tr>" in text
    assert "<th>class</th>" in text and row("cat", 1.0, 0.5, 0.6, 3) + "</tr>" in text
    assert "50 class-stratified bootstrap" in text
    assert "ulti-label" not in text and "no label" not in text and "per-label" not in text
