"""What a reader of the numbers must know first: degenerate models, a CV that does not
estimate the main model and, for a multi-label task, labels whose threshold fell back or
whose test scores are undefined. One list, shown by the HTML report, the retrain flow's
summary and the model card. Pure functions of the metrics dicts the stages write."""

from __future__ import annotations

# what the headline names mean for a multi-label task, said once for the report and the card
HEADLINE_MEANING = ("Multi-label: each label is decided on its own. accuracy = subset accuracy "
                    "(exact label set); balanced_accuracy = mean over labels of (TPR + TNR) / "
                    "2; precision, recall, f1 = macro means over labels; roc_auc = macro "
                    "ROC-AUC over the labels with both classes in the test set; "
                    "average_precision = mAP.")


def caveats(test: dict, cv: dict) -> list[str]:
    """Plain sentences from ``reports/evaluate/metrics.json`` and ``reports/cv/metrics.json``
    (either may be empty when its stage has not run)."""
    out = []
    multilabel = test.get("task") == "multilabel"
    if test.get("degenerate"):
        said = "the same label set" if multilabel else "one class"
        out.append(f"the main model names {said} for every one of its {test.get('n_test')} "
                   "test images (degenerate): its metrics describe a constant answer")
    if multilabel:
        out += label_caveats(test)
    folds = cv.get("degenerate_folds") or []
    if folds:
        out.append(f"cross-validation fold(s) {', '.join(map(str, folds))} of {cv.get('folds')} "
                   "name one class for every held-out image (degenerate)")
    estimates = cv.get("estimates", "")
    if estimates and not estimates.startswith("the main model"):
        out.append(f"cross-validation estimates {estimates}")
    return out


def label_caveats(test: dict) -> list[str]:
    """Multi-label: labels whose threshold fell back to the default (validation could not
    support the rule) and labels whose test ROC-AUC and AP are undefined."""
    out = []
    fallbacks, thresholds = test.get("threshold_fallbacks") or {}, test.get("thresholds") or {}
    if fallbacks:
        why = "; ".join(f"{name} at {thresholds.get(name, 0.5):g}: {reason}"
                        for name, reason in sorted(fallbacks.items()))
        out.append(f"label(s) {', '.join(sorted(fallbacks))} keep the fallback threshold "
                   f"instead of one fitted by the rule `{test.get('threshold_rule')}` ({why}): "
                   "their decisions are not tuned")
    undefined = test.get("degenerate_labels") or []
    if undefined:
        out.append(f"label(s) {', '.join(undefined)} are in every test image or in none: their "
                   "ROC-AUC and AP are undefined and left out of the macro means")
    return out
