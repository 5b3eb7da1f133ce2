"""The model card is written from the run's facts, limitations included."""

from __future__ import annotations

import json
from dataclasses import replace

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
