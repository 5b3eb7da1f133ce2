"""What a reader of the numbers must know first: degenerate models and a CV that does not
estimate the main model. One list, shown by the HTML report, the retrain flow's summary and
the model card. Pure functions of the metrics dicts the stages write."""

from __future__ import annotations


def caveats(test: dict, cv: dict) -> list[str]:
    """Plain sentences from ``reports/evaluate/metrics.json`` and ``reports/cv/metrics.json``
    (either may be empty when its stage has not run)."""
    out = []
    if test.get("degenerate"):
        out.append(f"the main model names one class for every one of its {test.get('n_test')} "
                   "test images (degenerate): its metrics describe a constant answer")
    folds = cv.get("degenerate_folds") or []
    if folds:
        out.append(f"cross-validation fold(s) {', '.join(map(str, folds))} of {cv.get('folds')} "
                   "name one class for every held-out image (degenerate)")
    estimates = cv.get("estimates", "")
    if estimates and not estimates.startswith("the main model"):
        out.append(f"cross-validation estimates {estimates}")
    return out
