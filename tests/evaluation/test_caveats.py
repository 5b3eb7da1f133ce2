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
