from unfreeze.evaluation.caveats import caveats


def test_degenerate_models_and_a_phase_one_cv_are_said_plainly():
    assert caveats({"degenerate": False}, {"degenerate_folds": [], "estimates":
                                           "the main model's whole procedure (both phases)"}) == []
    said = caveats({"degenerate": True, "n_test": 9},
                   {"folds": 3, "degenerate_folds": [0, 2],
                    "estimates": "phase one only (cv.phases: [head]): a frozen-base model"})
    assert said[0].startswith("the main model names one class for every one of its 9")
    assert "fold(s) 0, 2 of 3" in said[1]
    assert said[2] == "cross-validation estimates phase one only (cv.phases: [head]): a " \
                      "frozen-base model"
    assert caveats({}, {}) == []  # stages not run yet


def test_multilabel_caveats_name_fallback_thresholds_and_labels_without_a_score():
    test = {"task": "multilabel", "degenerate": True, "n_test": 12, "threshold_rule":
            "f1 (per label)", "thresholds": {"crack": 0.31, "mono": 0.5, "spot": 0.5},
            "threshold_fallbacks": {"spot": "no positive image in validation",
                                    "mono": "no negative image in validation"},
            "degenerate_labels": ["spot"]}
    said = caveats(test, {})
    assert said[0].startswith("the main model names the same label set for every one of its 12")
    assert said[1] == ("label(s) mono, spot keep the fallback threshold instead of one fitted "
                       "by the rule `f1 (per label)` (mono at 0.5: no negative image in "
                       "validation; spot at 0.5: no positive image in validation): their "
                       "decisions are not tuned")
    assert said[2].startswith("label(s) spot are in every test image or in none: their ROC-AUC")
    assert caveats(test | {"degenerate": False, "threshold_fallbacks": {},
                           "degenerate_labels": []}, {}) == []
