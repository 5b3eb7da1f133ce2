"""The operating point, fitted on the validation split: temperature, decision threshold, TTA.

Pure functions of true labels (integers into ``classes``) and predicted probabilities.

- **Temperature scaling** divides the model's log-probabilities by one scalar ``T`` fitted by
  minimising the validation negative log-likelihood. It changes confidence, never the ranking
  of images or the arg-max class.
- **Threshold** (binary tasks): the positive class is predicted when its probability is at
  least the threshold, chosen on validation by a rule (``evaluate.threshold``). Multi-class
  tasks always predict the arg-max class.
- **Expected calibration error**: the mean gap between confidence (top probability) and
  accuracy over 15 equal-width confidence bins, weighted by the bins' sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn import metrics as skm

from unfreeze.config.errors import ParamsError
from unfreeze.config.params import parse_threshold

ECE_BINS = 15
EPS = 1e-12
CLIP = 1e-7  # multi-label: probabilities clipped to [CLIP, 1 - CLIP] before the logit


@dataclass(frozen=True)
class OperatingPoint:
    """How probabilities become decisions; saved with the exported model (meta.json)."""

    classes: list[str]
    positive_class: str | None  # binary tasks only
    threshold: float | None  # on the calibrated positive-class probability; None: arg-max
    threshold_rule: str
    temperature: float
    tta: str
    # multi-label tasks: one threshold and one temperature per label (classes order); the
    # labels whose threshold fell back to 0.5 (validation could not support the rule), why
    thresholds: list[float] | None = None
    temperatures: list[float] | None = None
    fallbacks: dict[str, str] | None = None

    @property
    def multilabel(self) -> bool:
        """Whether this point decides each label on its own (sigmoid outputs)."""
        return self.thresholds is not None

    def as_dict(self) -> dict:
        """As stored in operating_point.json and an exported meta.json (the per-label fields
        only for a multi-label point)."""
        out = asdict(self)
        if not self.multilabel:
            for key in ("thresholds", "temperatures", "fallbacks"):
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> OperatingPoint:
        """From a stored dict (extra keys, such as image_size, are ignored)."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)``, row-wise; T = 1 returns the probabilities unchanged."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs.astype(np.float64), EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(probs.dtype)


def apply_label_temperature(probs: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """Multi-label: ``sigmoid(logit(p) / T_l)`` column by column; a label with T = 1 keeps
    its values."""
    t = np.asarray(temperatures, dtype=np.float64)
    scaled = 1.0 / (1.0 + np.exp(-_logit(probs) / t))
    return np.where(t == 1.0, probs, scaled).astype(probs.dtype)


def _logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), CLIP, 1.0 - CLIP)
    return np.log(p) - np.log1p(-p)


def decide_labels(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(n, L) 0/1 decisions: label l is predicted when its probability is >= thresholds[l]."""
    return (probs >= np.asarray(thresholds)).astype(int)


def calibrate_probs(probs: np.ndarray, point: OperatingPoint | None) -> np.ndarray:
    """``probs`` at ``point``'s temperature(s); unchanged without a point."""
    if point is None:
        return probs
    if point.multilabel:
        return apply_label_temperature(probs, np.asarray(point.temperatures))
    return apply_temperature(probs, point.temperature)


def fit_temperature(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises the negative log-likelihood of ``y_true``."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(probs.astype(np.float64), EPS, 1.0))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(log_norm - z[np.arange(len(y_true)), y_true]))

    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                           options={"xatol": 1e-4})
    return float(np.exp(best.x))


def choose_threshold(is_positive: np.ndarray, scores: np.ndarray, spec: float | str) -> float:
    """The threshold on ``scores`` that ``spec`` asks for (see ``params.THRESHOLD_HELP``).

    ``f1``: maximum F1; ``youden``: maximum TPR − FPR; ``recall>=r``: the highest threshold
    whose recall is at least r; ``precision>=p``: the lowest threshold whose precision is at
    least p (most recall). Raises ParamsError when validation cannot support the rule.
    """
    rule, target = parse_threshold(spec)
    if rule == "fixed":
        return float(target)
    if is_positive.all() or not is_positive.any():
        raise ParamsError(f"evaluate.threshold: {spec!r} needs both classes in the validation "
                         "split, which has one only; use a fixed threshold such as 0.5 or "
                         "a larger split.val")
    if rule == "youden":
        fpr, tpr, thresholds = skm.roc_curve(is_positive, scores)
        keep = np.isfinite(thresholds)
        return float(thresholds[keep][np.argmax((tpr - fpr)[keep])])
    precision, recall, thresholds = skm.precision_recall_curve(is_positive, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    if rule == "f1":
        f1 = 2 * precision * recall / np.maximum(precision + recall, EPS)
        return float(thresholds[np.argmax(f1)])
    values = recall if rule == "recall" else precision
    ok = np.flatnonzero(values >= target - 1e-12)
    if not len(ok):
        raise ParamsError(f"evaluate.threshold: {spec!r} is not reachable on the validation "
                         f"split (best {rule} {values.max():.3f}); lower the target")
    return float(thresholds[ok[-1]] if rule == "recall" else thresholds[ok[0]])


def decide_classes(probs: np.ndarray, point: OperatingPoint | None = None,
                   threshold: float | None = None) -> np.ndarray:
    """Predicted class indices: ``point``'s binary threshold (or ``threshold`` instead),
    else the arg-max. Multi-label: (n, L) 0/1 decisions at ``point``'s per-label thresholds
    (or ``threshold`` for every label)."""
    if point is not None and point.multilabel:
        return decide_labels(probs, point.thresholds if threshold is None else threshold)
    if point is None or point.positive_class is None or probs.shape[1] != 2:
        return probs.argmax(axis=1)
    value = point.threshold if threshold is None else threshold
    if value is None:
        return probs.argmax(axis=1)
    pos = point.classes.index(point.positive_class)
    return np.where(probs[:, pos] >= value, pos, 1 - pos)


def fit_operating_point(y_val: np.ndarray, val_probs: np.ndarray, classes: list[str],
                        positive: int | None, threshold: float | str, calibration: str,
                        tta: str) -> OperatingPoint:
    """Temperature (``calibration: temperature``), then the threshold on calibrated scores.
    Multi-label (``y_val`` multi-hot): both per label (:func:`fit_label_point`)."""
    if y_val.ndim == 2:
        return fit_label_point(y_val, val_probs, classes, threshold, calibration, tta)
    temperature = fit_temperature(y_val, val_probs) if calibration == "temperature" else 1.0
    calibrated = apply_temperature(val_probs, temperature)
    if len(classes) != 2 or positive is None:
        return OperatingPoint(classes, None, None, "argmax (multi-class)", temperature, tta)
    value = choose_threshold(y_val == positive, calibrated[:, positive], threshold)
    return OperatingPoint(classes, classes[positive], value, str(threshold), temperature, tta)


def at_operating_point(y_val: np.ndarray, val_probs: np.ndarray, probs: np.ndarray,
                       classes: list[str], positive: int | None, threshold: float | str,
                       calibration: str, tta: str
                       ) -> tuple[OperatingPoint, np.ndarray, np.ndarray]:
    """The one way a report turns a model's probabilities into decisions, for the test set
    and for every CV fold alike: fit the operating point on validation probabilities
    (``val_probs``, already averaged over the TTA views), then calibrate ``probs`` (averaged
    the same way) and decide. Returns (point, calibrated probabilities, decided classes)."""
    point = fit_operating_point(y_val, val_probs, classes, positive, threshold, calibration,
                                tta)
    calibrated = calibrate_probs(probs, point)
    return point, calibrated, decide_classes(calibrated, point)


def fit_label_point(y_val: np.ndarray, val_probs: np.ndarray, classes: list[str],
                    threshold: float | str, calibration: str, tta: str) -> OperatingPoint:
    """Multi-label: a temperature per label, then each label's threshold by the rule on its
    calibrated validation probabilities (a label that cannot support it falls back to 0.5,
    named in ``fallbacks``: :mod:`unfreeze.evaluation.multilabel`)."""
    from unfreeze.evaluation.multilabel import fit_label_temperatures, fit_label_thresholds

    temps = (fit_label_temperatures(y_val, val_probs) if calibration == "temperature"
             else np.ones(len(classes)))
    calibrated = apply_label_temperature(val_probs, temps)
    values, fallbacks = fit_label_thresholds(y_val, calibrated, threshold, classes)
    return OperatingPoint(classes, None, None, f"{threshold} (per label)", 1.0, tta,
                          thresholds=[float(v) for v in values],
                          temperatures=[float(t) for t in temps], fallbacks=fallbacks)


def is_degenerate(y_true: np.ndarray, y_pred: np.ndarray) -> bool:
    """A model that names the same class for every image of a set that holds several
    classes: whatever its numbers, it has learned nothing that separates them."""
    return len(np.unique(y_true, axis=0)) > 1 and len(np.unique(y_pred, axis=0)) == 1


def reliability_rows(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
                     ) -> list[dict]:
    """Per non-empty confidence bin: its range, mean confidence, accuracy and count.
    Multi-label: every (image, label) cell is a binary prediction of its own."""
    if y_true.ndim == 2:
        p = probs.reshape(-1)
        probs, y_true = np.stack([1.0 - p, p], axis=1), y_true.reshape(-1).astype(int)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append({"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]),
                         "confidence": float(confidence[mask].mean()),
                         "accuracy": float(correct[mask].mean()), "count": int(mask.sum())})
    return rows


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Σ_bins (n_b / n) · |accuracy_b − confidence_b| over equal-width confidence bins."""
    rows = reliability_rows(y_true, probs, bins)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows))
