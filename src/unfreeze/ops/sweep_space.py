"""What a sweep searches and how it scores: the search space (a YAML file and ``-S``
options), the metric (test metrics refused) and the wall-clock budget. No DVC, no TensorFlow.

Search space. A YAML file of dotted param paths (``--space FILE``)::

    head.learning_rate: [0.0001, 0.001, 0.01]            # choices (grid, random, tpe)
    finetune.learning_rate: {low: 1e-5, high: 1e-3, log: true}   # a range (random, tpe)
    head.epochs: {low: 2, high: 8, int: true}            # an integer range
    cv.phases: [[head], [head, finetune]]                # choices that are lists

and/or ``-S PATH=V1,V2,...`` (choices; commas inside ``[...]`` do not split) or
``-S PATH=LOW..HIGH`` / ``LOW..HIGH:log`` (a range; integers when both ends are). ``-S``
replaces the file's entry for the same path. Numbers such as ``1e-5`` are numbers here, as
in params.yaml (:func:`unfreeze.config.params.read_yaml`).

Metric. ``cv:NAME`` (default ``cv:<retrain.metric>``): the mean over the CV folds, as in
``reports/cv/metrics.json`` (target stage ``cv_report``), with the folds' 95% interval.
``val:loss`` / ``val:accuracy``: the finetune phase's best validation value (``best_val_*``
of its summary, target stage ``finetune``); one validation split gives no interval. A test
metric (``test:…``, ``evaluate…``, ``export…``) is refused: see :data:`TEST_REFUSAL`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from unfreeze.config.errors import SweepError
from unfreeze.config.params import METRIC_NAMES, read_yaml

VAL_METRICS = ("loss", "accuracy")  # what the phases compile: fit writes best_val_<name>
TEST_PREFIXES = ("test", "evaluate", "export", "reports/evaluate", "reports/export")
TEST_REFUSAL = (
    "--metric {metric}: refused, it is a metric of the test split. Choosing among trials by "
    "their test score makes the winner's test number an optimistic estimate (the choice has "
    "seen the test images), and the test split must be read once, at the end, for the params "
    "the sweep chose. Use a cross-validation metric, the mean over folds with an interval "
    "(cv:{default}), or a validation metric (val:loss, val:accuracy)")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Choice:
    """Values to pick from (grid: each in turn)."""

    values: tuple


@dataclass(frozen=True)
class Range:
    """A numeric interval for random/TPE sampling (``log``: log-uniform)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


Space = dict[str, Choice | Range]


@dataclass(frozen=True)
class Metric:
    """The score of a trial: where it is read, which stage makes it, which way is better."""

    kind: str  # "cv" | "val"
    name: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def target(self) -> str:
        return "cv_report" if self.kind == "cv" else "finetune"

    @property
    def maximize(self) -> bool:
        return not self.name.endswith("loss")


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep searches and how: what ``unfreeze sweep``'s options say."""

    space: Space
    metric: Metric
    method: str = "grid"
    trials: int | None = None
    seed: int = 0
    budget: float | None = None
    name: str | None = None
    retry_failed: bool = False

    def __post_init__(self) -> None:
        smoothing = [p for p in self.space if p.endswith(".label_smoothing")]
        if self.metric.label == "val:loss" and smoothing:
            raise SweepError(f"--metric val:loss cannot compare trials that sweep "
                             f"{', '.join(smoothing)}: the validation loss is measured against "
                             "the smoothed targets, so it favours less smoothing whatever the "
                             "model; score with cv:<metric> or val:accuracy instead")


def parse_value(text: str) -> Any:
    """One value from the command line, read as params.yaml is read (``1e-5`` a number)."""
    try:
        return read_yaml(text)
    except yaml.YAMLError as exc:
        raise SweepError(f"-S value {text!r} is not a YAML value: {exc}") from None


def split_top(text: str) -> list[str]:
    """``text`` split at the commas outside brackets: ``[a,b],[c]`` → ``[a,b]``, ``[c]``."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def parse_option(option: str) -> tuple[str, Choice | Range]:
    """One ``-S PATH=V1,V2`` or ``-S PATH=LOW..HIGH[:log]`` option."""
    path, sep, text = option.partition("=")
    if not sep or not path.strip() or not text.strip():
        raise SweepError(f"-S {option!r}: give PATH=V1,V2,... or PATH=LOW..HIGH[:log], "
                         "e.g. -S head.learning_rate=0.001,0.01")
    path, text = path.strip(), text.strip()
    low, dots, high = text.removesuffix(":log").partition("..")
    ends = [parse_value(low), parse_value(high)] if dots else []
    if ends and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ends):
        return path, make_range(path, {"low": ends[0], "high": ends[1],
                                       "log": text.endswith(":log"),
                                       "int": all(isinstance(v, int) for v in ends)})
    return path, Choice(tuple(parse_value(v.strip()) for v in split_top(text)))


def make_range(path: str, spec: dict) -> Range:
    """A checked :class:`Range` from ``{low:, high:, log:, int:}``."""
    unknown = sorted(set(spec) - {"low", "high", "log", "int"})
    low, high = spec.get("low"), spec.get("high")
    integer = bool(spec.get("int", False))
    kind = int if integer else (int, float)
    if (unknown or not all(isinstance(v, kind) and not isinstance(v, bool) for v in (low, high))
            or not low < high or (spec.get("log") and low <= 0)):
        raise SweepError(f"search space {path}: {spec!r} is not a range: give numbers "
                         "{low: L, high: H} with L < H (integers with int: true; L > 0 with "
                         "log: true), or a list of values")
    cast = int if integer else float
    return Range(cast(low), cast(high), bool(spec.get("log", False)), integer)


def load_space(file: str | Path | None, options: list[str]) -> Space:
    """The search space of ``--space FILE`` and the ``-S`` options (these win on a path)."""
    space: Space = {}
    if file:
        try:
            raw = read_yaml(Path(file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SweepError(f"--space {file}: cannot read it as YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise SweepError(f"--space {file}: give a mapping of param paths to lists of "
                             "values or to ranges {low:, high:}")
        for path, spec in raw.items():
            space[str(path)] = (make_range(path, spec) if isinstance(spec, dict) else
                                Choice(tuple(spec if isinstance(spec, list) else [spec])))
    space.update(parse_option(option) for option in options)
    if not space:
        raise SweepError("nothing to search: give --space FILE or -S PATH=V1,V2,...")
    return space


def grid(space: Space) -> list[dict[str, Any]]:
    """Every combination of the choices, in the order given (the first path varies slowest)."""
    ranges = [path for path, dim in space.items() if isinstance(dim, Range)]
    if ranges:
        raise SweepError(f"--method grid needs lists of values; {ranges[0]} is a range: give "
                         "values, or use --method random or tpe")
    paths = list(space)
    return [dict(zip(paths, combo, strict=True))
            for combo in itertools.product(*(space[p].values for p in paths))]


def parse_metric(text: str | None, default: str) -> Metric:
    """``cv:NAME`` / ``val:NAME`` (``.`` works too); a test metric is refused, saying why."""
    text = (text or f"cv:{default}").strip()
    lowered = text.lower()
    if lowered.startswith(TEST_PREFIXES):
        raise SweepError(TEST_REFUSAL.format(metric=text, default=default))
    match = re.fullmatch(r"(\w+)[:.](\w+)", lowered)
    kind, name = match.groups() if match else ("", "")
    if kind == "cv" and name in METRIC_NAMES:
        return Metric("cv", name)
    if kind == "val" and name in VAL_METRICS:
        return Metric("val", name)
    raise SweepError(
        f"--metric {text}: unknown; give cv:NAME (the mean over the CV folds; NAME one of "
        f"{', '.join(METRIC_NAMES)}) or val:NAME (finetune's best validation value; NAME one "
        f"of {', '.join(VAL_METRICS)}). A bare name is refused: retrain.metric names a test "
        "metric, and a sweep never scores on test")


def parse_budget(text: str | None) -> float | None:
    """``--budget``: seconds, or a number with s/m/h/d (``90m``, ``2h``, ``1.5h``)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if not match or float(match[1]) <= 0:
        raise SweepError(f"--budget {text!r}: give a wall-clock time such as 3600, 90m or 2h")
    return float(match[1]) * UNITS[match[2]]


MISSING = object()


def get_path(raw: dict, path: str) -> Any:
    """The value at dotted ``path`` of the parsed params mapping ``raw``, or :data:`MISSING`."""
    node: Any = raw
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node
