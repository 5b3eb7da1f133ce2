"""The model card is written from the run's facts, limitations included."""

from __future__ import annotations

import json
from dataclasses import replace

from test_report_multilabel import multilabel_reports

from unfreeze.config.params import ModelParams, Params
from unfreeze.deploy import card

POINT = {"classes": ["cat", "dog"], "positive_class": "dog", "threshold": 0.41,
         "threshold_rule": "f1", "temperature": 1.7, "tta": "hflip"}


def reports(tmp_path, degenerate: bool, test_per_class: int):
    files = {
        "prepare/data.json": {"n_ok": 80, "n_rejected": 1, "classes": {"cat": 50, "dog": 30}},
        "split/split.json": {"splits": {
            "train": {"classes": {"cat": 35, "dog": 20}}, "val": {"classes": {"cat": 5,
                                                                              "dog": 4}},
            "test": {"classes": {"cat": test_per_class, "dog": test_per_class}}}},
        "head/metrics.json": {"epochs_run": 3, "best_epoch": 2, "best_val_loss": 0.5},
        "finetune/metrics.json": {"epochs_run": 2, "best_epoch": 2, "best_val_loss": 0.4},
        "evaluate/metrics.json": {"n_test": 16, "accuracy": 0.8125, "degenerate": degenerate,
                                  "ci95": {"accuracy": {"low": 0.625, "high": 1.0}},
                                  "bootstrap": {"resamples": 1000}, "ece": 0.05},
        "cv/metrics.json": {"folds": 3, "estimates": "the main model's whole procedure",
                            "degenerate_folds": [], "metrics": {"accuracy": {
                                "mean": 0.8, "std": 0.05, "ci95": [0.7, 0.9]}}},
    }
    for rel, data in files.items():
        (tmp_path / "reports" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "reports" / rel).write_text(json.dumps(data))
    (tmp_path / "source.json").write_text(json.dumps({"fingerprint": "ab" * 32, "files": 81,
                                                      "source": "data/images"}))


def test_the_card_holds_every_section_with_the_numbers_and_their_intervals(tmp_path):
    reports(tmp_path, degenerate=False, test_per_class=40)
    params = replace(Params(), model=ModelParams(weights="imagenet"))
    facts = card.gather(tmp_path / "reports", tmp_path / "source.json", params)
    text = card.render(facts, POINT, {"savedmodel_max_abs_diff": 1e-7, "passed": True})
    for heading in ("## Limitations", "## Data", "## Recipe and training", "## Test set",
                    "## Cross-validation", "## Operating point and calibration",
                    "## Export parity"):
        assert heading in text
    assert "none found in this run's reports" in text
    assert "- savedmodel_max_abs_diff: 1e-07" in text
    assert "| accuracy | 0.8125 | 0.6250 – 1.0000 |" in text
    assert "| cat | 35 | 5 | 40 | 50 |" in text and "ab" * 32 in text
    assert "Source `data/images`: 80 usable images, 1 rejected" in text
    assert "| accuracy | 0.8000 ± 0.0500 | 0.7000 – 0.9000 |" in text
    assert "threshold 0.4100 on `dog` (rule `f1`)" in text and "temperature 1.7000" in text
    assert "| head | 3 | 2 | 0.5000 |" in text


def test_limitations_are_derived_from_the_facts(tmp_path):
    reports(tmp_path, degenerate=True, test_per_class=5)
    params = replace(Params(), model=ModelParams(weights=None))
    facts = card.gather(tmp_path / "reports", tmp_path / "source.json", params)
    said = card.limitations(facts)
    assert said[0].startswith("trained from random initial weights")
    assert any("names one class for every one of its 16 test images" in s for s in said)
    assert any("few test images in class(es) {'cat': 5, 'dog': 5}" in s for s in said)


def multilabel_facts(tmp_path) -> tuple[dict, dict]:
    """A two-label run's facts (reports computed as the stages compute them) and its point."""
    _, point = multilabel_reports(tmp_path / "reports")
    (tmp_path / "source.json").write_text(json.dumps({"fingerprint": "cd" * 32, "files": 41,
                                                      "source": "data/labels.csv"}))
    params = replace(Params(), model=ModelParams(weights="imagenet"))
    return card.gather(tmp_path / "reports", tmp_path / "source.json", params), point


def test_a_multilabel_card_names_its_labels_and_each_labels_threshold(tmp_path):
    facts, point = multilabel_facts(tmp_path)
    text = card.render(facts, point, {"thresholds": point["thresholds"]})
    test, split = facts["test"], facts["split"]["splits"]
    assert text.startswith("# Model card: multi-label: defect, mono\n")
    train, val, tst = (split[s]["labels"]["mono"] for s in ("train", "val", "test"))
    assert f"| mono | {train} | {val} | {tst} | 4 |" in text
    assert ("| (no label) | " + " | ".join(str(split[s]["no_label"]) for s in
                                           ("train", "val", "test"))
            + f" | {facts['data']['no_label']} |") in text
    assert "accuracy = subset accuracy (exact label set)" in text
    d, t = test["per_label"]["defect"], test["thresholds"]["defect"]
    ci = test["ci95"]["per_label"]["defect"]["roc_auc"]
    assert (f"| defect | {d['support']} | {d['precision']:.4f} | {d['recall']:.4f} | "
            f"{d['f1']:.4f} | {d['roc_auc']:.4f} | {ci['low']:.4f} – {ci['high']:.4f} | "
            f"{d['average_precision']:.4f} | {t:.4f} | "
            f"{test['temperatures']['defect']:.4f} |") in text
    assert "| 0.5000 (fallback) | 1.0000 |" in text
    assert f"subset accuracy {test['subset_accuracy']:.4f}, Hamming loss" in text
    assert f"mAP {test['map']:.4f}." in text and "label-set-stratified bootstrap" in text
    assert (f"`defect` temperature {point['temperatures'][0]:.4f}, threshold {t:.4f}; `mono` "
            "temperature 1.0000, threshold 0.5000 (fallback: no positive image in validation)"
            ) in text
    assert "on `None`" not in text and "| class |" not in text


def test_multilabel_limitations_name_fallbacks_and_labels_with_few_test_images(tmp_path):
    facts, _ = multilabel_facts(tmp_path)
    said = card.limitations(facts)
    test = facts["split"]["splits"]["test"]
    assert any(s.startswith("label(s) mono keep the fallback threshold") and
               "mono at 0.5: no positive image in validation" in s for s in said)
    assert f"few positive test images for label(s) {test['labels']}" in " ".join(said)
    negatives = {c: test["n"] - k for c, k in test["labels"].items()}
    assert f"few negative test images for label(s) {negatives}" in " ".join(said)
    assert any("label 'mono' has 4 image(s), too rare" in s for s in said)  # split warning
    facts["split"]["splits"]["test"] = {"n": 100, "labels": {"defect": 40, "mono": 50}}
    facts["split"]["warnings"], facts["test"]["threshold_fallbacks"] = [], {}
    assert card.limitations(facts) == ["none found in this run's reports"]
