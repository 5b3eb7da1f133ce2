"""Typed, frozen parameters loaded from ``params.yaml``.

Every section of ``params.yaml`` maps to one frozen dataclass. Loading checks types, unknown
keys and ranges before any data is read, and every error names the key and the value received.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from unfreeze.config.errors import ParamsError
from unfreeze.config.typed import build_checked, check_fraction, fail

INCEPTION_BLOCKS = tuple(f"mixed{i}" for i in range(11))
MIN_IMAGE_SIZE = 75
MAX_PIXELS = 100_000_000  # data.max_pixels' default; also what `predict` refuses undecoded
MAX_FOLDS = 10  # dvc.yaml declares the fold stages cv@0 … cv@9
MAX_VIEWS = 50  # head.cached_views, finetune.cached_views
MAX_MIX_ALPHA = 10.0  # augment.mixup, augment.cutmix
SCHEDULES = ("constant", "cosine", "one_cycle")
PHASES = ("head", "finetune")
# The headline metrics: reported on test and per fold, aggregated by CV, shown in every table,
# and the choices of retrain.metric (higher is better for each). The one list of them.
METRIC_NAMES = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc",
                "average_precision")


LABEL_FILE_SUFFIXES = (".csv", ".parquet")
TASKS = ("multiclass", "multilabel")


@dataclass(frozen=True)
class DataParams:
    """Where the images come from: ``elpv`` (demo package), a folder of class subfolders, or a
    label file (``.csv`` / ``.parquet``: one row per image, a path and a label column)."""

    source: str = "elpv"
    elpv_labels: Literal["binary", "four_class", "multilabel"] = "binary"
    on_bad_file: Literal["skip", "fail"] = "skip"
    max_pixels: int = MAX_PIXELS  # larger images are refused from their header, undecoded
    root: str | None = None  # label files: the folder paths are relative to (null: the file's)
    path_column: str = "path"  # label files: the column holding each image's path
    label_column: str = "label"  # label files: the class (multilabel: separator-joined labels)
    label_separator: str = ";"  # multilabel label column: `crack;finger`, empty = no label
    multilabel_columns: tuple[str, ...] | None = None  # multilabel: one 0/1 column per label

    def __post_init__(self) -> None:
        if not self.source.strip():
            fail("data.source", self.source, "`elpv`, a path to a folder of class subfolders, "
                 "or a .csv / .parquet label file")
        if self.max_pixels < 75 * 75:
            fail("data.max_pixels", self.max_pixels, "an integer >= 5625 (75×75)")
        for key in ("path_column", "label_column", "label_separator"):
            if not getattr(self, key):
                fail(f"data.{key}", getattr(self, key), "a non-empty string")
        if self.multilabel_columns is not None and (
                not self.multilabel_columns
                or len(set(self.multilabel_columns)) != len(self.multilabel_columns)):
            fail("data.multilabel_columns", list(self.multilabel_columns),
                 "null or a list of distinct column names (one 0/1 column per label)")
        if (self.root is not None or self.multilabel_columns is not None) and not (
                self.is_label_file):
            key = "root" if self.root is not None else "multilabel_columns"
            fail(f"data.{key}", getattr(self, key), "null unless data.source is a "
                 f"{' / '.join(LABEL_FILE_SUFFIXES)} label file (got source {self.source!r})")

    @property
    def is_label_file(self) -> bool:
        """Whether ``source`` names a label file rather than the demo or a folder."""
        return self.source.lower().endswith(LABEL_FILE_SUFFIXES)


@dataclass(frozen=True)
class SplitParams:
    """Fractions of the held-out test and validation splits, and optional grouping column."""

    test: float = 0.2
    val: float = 0.1
    group_by: str | None = None

    def __post_init__(self) -> None:
        check_fraction("split.test", self.test, 0.0, 0.9)
        check_fraction("split.val", self.val, 0.0, 0.9)
        if self.test + self.val >= 0.9:
            fail("split.test + split.val", self.test + self.val, "below 0.9 (train needs images)")


@dataclass(frozen=True)
class ModelParams:
    """InceptionV3 base and classification head."""

    image_size: int = 299
    weights: str | None = "imagenet"
    hidden_units: int = 1024
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.image_size < MIN_IMAGE_SIZE:
            fail("model.image_size", self.image_size, f"an integer >= {MIN_IMAGE_SIZE}")
        if self.hidden_units < 1:
            fail("model.hidden_units", self.hidden_units, "an integer >= 1")
        if not 0.0 <= self.dropout < 1.0:
            fail("model.dropout", self.dropout, "a number in [0, 1)")
        if self.weights is not None and not self.weights.strip():
            fail("model.weights", self.weights, "`imagenet`, a path to a weights file, or null")


@dataclass(frozen=True)
class AugmentParams:
    """Training-time augmentation; the defaults are the classic ImageDataGenerator recipe.

    ``rotation`` and ``shear`` are in degrees (as ImageDataGenerator's ``rotation_range`` and
    ``shear_range``); shifts are fractions of width/height; ``zoom`` 0.2 means scale in [0.8, 1.2].
    """

    rotation: float = 40.0
    width_shift: float = 0.2
    height_shift: float = 0.2
    shear: float = 0.2
    zoom: float = 0.2
    horizontal_flip: bool = True
    vertical_flip: bool = False
    fill_mode: Literal["nearest", "reflect", "constant", "wrap"] = "nearest"
    mixup: float = 0.0  # Beta(alpha, alpha) of MixUp's mixing weight; 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) of CutMix's kept area; 0 = off (both: half each)

    def __post_init__(self) -> None:
        for name in ("mixup", "cutmix"):
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_MIX_ALPHA:
                fail(f"augment.{name}", value, f"a Beta alpha in [0, {MAX_MIX_ALPHA}] (0 = off; "
                     "0.2–0.4 for MixUp and 1.0 for CutMix are the usual values)")
        if not 0.0 <= self.rotation <= 180.0:
            fail("augment.rotation", self.rotation, "degrees in [0, 180]")
        if not 0.0 <= self.shear < 90.0:
            fail("augment.shear", self.shear, "degrees in [0, 90)")
        for name in ("width_shift", "height_shift", "zoom"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                fail(f"augment.{name}", value, "a fraction in [0, 1)")


@dataclass(frozen=True)
class PhaseParams:
    """Fields shared by both training phases."""

    epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 32
    patience: int = 3
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    class_weight: Literal["balanced"] | None = None
    cached_views: int = 0  # 0: fresh augmentation through the frozen part every epoch
    # the learning rate of each step (unfreeze.training.schedules): constant (the classic
    # recipe) | cosine (linear warm-up over warmup_epochs, then cosine to 0) | one_cycle
    # (fastai's: cosine warm-up from learning_rate/25 over pct_start of the steps, cosine
    # down to learning_rate/1e5); learning_rate is the peak
    schedule: Literal["constant", "cosine", "one_cycle"] = "constant"
    warmup_epochs: float = 0.0  # cosine only
    pct_start: float = 0.25  # one_cycle only
    label_smoothing: float = 0.0  # 0 = off; targets (1 - e) one-hot + e / classes

    def _check(self, section: str) -> None:
        if self.epochs < 1:
            fail(f"{section}.epochs", self.epochs, "an integer >= 1")
        if not 0.0 < self.learning_rate < 1.0:
            fail(f"{section}.learning_rate", self.learning_rate, "a number in (0, 1)")
        if self.batch_size < 1:
            fail(f"{section}.batch_size", self.batch_size, "an integer >= 1")
        if self.patience < 0:
            fail(f"{section}.patience", self.patience, "an integer >= 0 (0 disables early stop)")
        if not 0 <= self.cached_views <= MAX_VIEWS:
            fail(f"{section}.cached_views", self.cached_views,
                  f"an integer in 0 … {MAX_VIEWS} (0 = no caching)")
        if not 0.0 <= self.warmup_epochs < self.epochs:
            fail(f"{section}.warmup_epochs", self.warmup_epochs,
                 f"a number of epochs in [0, {section}.epochs = {self.epochs})")
        if self.warmup_epochs and self.schedule != "cosine":
            fail(f"{section}.warmup_epochs", self.warmup_epochs,
                 f"0 with {section}.schedule: {self.schedule} (warm-up belongs to `cosine`; "
                 "`one_cycle` warms up over pct_start)")
        check_fraction(f"{section}.pct_start", self.pct_start, 0.0, 1.0)
        if not 0.0 <= self.label_smoothing < 1.0:
            fail(f"{section}.label_smoothing", self.label_smoothing, "a number in [0, 1) "
                 "(0 = off; 0.1 is the usual value)")


@dataclass(frozen=True)
class HeadParams(PhaseParams):
    """Phase one: frozen base, new head."""

    cached_views: int = 1  # 0: full forward pass per epoch; 1: unaugmented features; K views

    def __post_init__(self) -> None:
        self._check("head")


@dataclass(frozen=True)
class FinetuneParams(PhaseParams):
    """Phase two: unfreeze the top of the base from a block name or a number of top layers."""

    epochs: int = 10
    learning_rate: float = 1e-4
    unfreeze_from: str | int = "mixed9"
    # layer-wise learning rates: the top unfrozen block at learning_rate, each block below
    # at learning_rate * layer_lr_decay ** depth, the head at learning_rate * head_lr_mult
    layer_lr_decay: float = 1.0  # 1.0 = off (one rate for every unfrozen layer)
    head_lr_mult: float = 1.0
    # 1: the unaugmented activations below the cut, from phase one's pass (chosen by 3-fold
    # CV against 0, fresh augmentation through the whole base: docs/benchmarks.md)
    cached_views: int = 1

    def __post_init__(self) -> None:
        self._check("finetune")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            fail("finetune.layer_lr_decay", self.layer_lr_decay,
                 "a number in (0, 1] (1.0 = off; 0.5–0.9 are the usual values)")
        if not 0.0 < self.head_lr_mult <= 100.0:
            fail("finetune.head_lr_mult", self.head_lr_mult, "a number in (0, 100]")
        if isinstance(self.unfreeze_from, int):
            if self.unfreeze_from < 1:
                fail("finetune.unfreeze_from", self.unfreeze_from, "a number of layers >= 1")
        elif self.unfreeze_from not in INCEPTION_BLOCKS:
            fail(
                "finetune.unfreeze_from",
                self.unfreeze_from,
                f"one of {', '.join(INCEPTION_BLOCKS)} or a number of top layers",
            )


THRESHOLD_RULES = ("f1", "youden")
THRESHOLD_HELP = ("a probability in (0, 1) such as 0.5, `f1`, `youden`, or a target such as "
                  "`recall>=0.95` / `precision>=0.9`")
MAX_GRADCAM = 20
MIN_RESAMPLES, MAX_RESAMPLES = 100, 100_000  # bootstrap resamples: fewer give ragged intervals


def parse_threshold(value: float | str) -> tuple[str, float | None]:
    """``evaluate.threshold`` as (rule, number): ("fixed", 0.5), ("f1", None), ("recall", 0.95).

    Raises :class:`ParamsError` naming the value received.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0.0 < value < 1.0:
            fail("evaluate.threshold", value, THRESHOLD_HELP)
        return "fixed", float(value)
    text = str(value).replace(" ", "")
    if text in THRESHOLD_RULES:
        return text, None
    for rule in ("recall", "precision"):
        if text.startswith(f"{rule}>="):
            try:
                target = float(text[len(rule) + 2:])
            except ValueError:
                break
            if 0.0 < target <= 1.0:
                return rule, target
    fail("evaluate.threshold", value, THRESHOLD_HELP)


@dataclass(frozen=True)
class EvaluateParams:
    """Test-set evaluation and the operating point fitted on the validation split."""

    batch_size: int = 64
    positive_class: str | None = None  # binary tasks; null = the rarer class of train + val
    threshold: float | str = 0.5  # binary tasks: see THRESHOLD_HELP; chosen on validation
    tta: Literal["none", "hflip", "flips"] = "none"  # test-time augmentation (mean of views)
    calibration: Literal["none", "temperature"] = "temperature"  # fitted on validation
    gradcam: int = 2  # Grad-CAM images per (class, correct / misclassified) cell; 0 = none
    gradcam_label: str | None = None  # multilabel: the label to explain; null = every label
    bootstrap: int = 1000  # resamples of the test images for each metric's 95% CI; 0 = none

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            fail("evaluate.batch_size", self.batch_size, "an integer >= 1")
        parse_threshold(self.threshold)
        if not 0 <= self.gradcam <= MAX_GRADCAM:
            fail("evaluate.gradcam", self.gradcam, f"an integer in 0 … {MAX_GRADCAM}")
        if self.gradcam_label is not None and not self.gradcam_label.strip():
            fail("evaluate.gradcam_label", self.gradcam_label, "null or a label name")
        if self.bootstrap != 0 and not MIN_RESAMPLES <= self.bootstrap <= MAX_RESAMPLES:
            fail("evaluate.bootstrap", self.bootstrap,
                 f"0 (no intervals) or an integer from {MIN_RESAMPLES} to {MAX_RESAMPLES}")


@dataclass(frozen=True)
class ExportParams:
    """Deployable formats of the final model and the parity each must keep."""

    savedmodel: bool = True  # TensorFlow SavedModel (serving signature on uint8 images)
    tflite: bool = True  # float TFLite model, converted from the SavedModel
    quantize: bool = False  # dynamic-range quantised TFLite model too (opt-in, see README)
    max_abs_diff: float = 1e-4  # SavedModel / float TFLite vs Keras, max |probability difference|
    max_accuracy_drop: float = 0.01  # quantised TFLite vs Keras, test accuracy (0.01 = 1 point)

    def __post_init__(self) -> None:
        if not 0.0 < self.max_abs_diff < 1.0:
            fail("export.max_abs_diff", self.max_abs_diff, "a number in (0, 1)")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            fail("export.max_accuracy_drop", self.max_accuracy_drop, "a number in [0, 1]")
        if self.tflite and not self.savedmodel:
            fail("export.tflite", self.tflite, "false when `export.savedmodel` is false (TFLite "
                  "models are converted from the SavedModel)")
        if self.quantize and not self.tflite:
            fail("export.quantize", self.quantize, "false when `export.tflite` is false")


@dataclass(frozen=True)
class TrainParams:
    """How both phases compute: precision policy, XLA compilation, distribution strategy.

    ``precision: auto`` and ``xla: auto`` decide from the machine, ``xla`` per use (frozen
    passes, head, phase two, prediction): the rules and their measurements are in
    :mod:`unfreeze.training.hardware`.
    """

    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    xla: Literal["auto", True, False] = "auto"
    # auto: MirroredStrategy over >1 GPU, else one device | mirrored | multi_worker | none
    strategy: Literal["auto", "mirrored", "multi_worker", "none"] = "auto"


@dataclass(frozen=True)
class CVParams:
    """k-fold cross-validation of the whole recipe on the non-test pool."""

    folds: int = 5
    phases: tuple[Literal["head", "finetune"], ...] = PHASES
    val: float = 0.15  # inner validation slice of each fold's training part (early stopping)

    def __post_init__(self) -> None:
        if not 2 <= self.folds <= MAX_FOLDS:
            fail("cv.folds", self.folds, f"an integer from 2 to {MAX_FOLDS} (dvc.yaml declares "
                  f"fold stages cv@0 … cv@{MAX_FOLDS - 1})")
        if self.phases not in (("head",), PHASES):
            fail("cv.phases", list(self.phases), "[head] or [head, finetune]")
        check_fraction("cv.val", self.val, 0.0, 0.5)


@dataclass(frozen=True)
class RetrainParams:
    """The Prefect retrain flow: concurrency, retries and the promotion rule."""

    workers: int = 2  # stage tasks (CV folds) running at once
    stage_retries: int = 2  # retries of a stage that failed for a transient reason
    metric: Literal[METRIC_NAMES] = "roc_auc"  # type: ignore[valid-type]  # one of the names
    min_improvement: float = 0.0  # the new test metric must beat the promoted one by more
    rule: Literal["ci", "point"] = "ci"  # ci: the paired interval's lower bound must beat
    # min_improvement | point: the difference on the same images must
    bootstrap: int = 2000  # paired resamples of the new test images for the interval
    on_incomparable: Literal["keep", "promote"] = "keep"  # the champion cannot be scored
    production_dir: str = "production"
    lock_timeout: float = 0.0  # seconds a second retrain of this working copy waits; 0 = refuse

    def __post_init__(self) -> None:
        if self.workers < 1:
            fail("retrain.workers", self.workers, "an integer >= 1")
        if self.stage_retries < 0:
            fail("retrain.stage_retries", self.stage_retries, "an integer >= 0")
        if not 0.0 <= self.min_improvement < 1.0:
            fail("retrain.min_improvement", self.min_improvement, "a number in [0, 1)")
        if self.bootstrap < (100 if self.rule == "ci" else 0):
            fail("retrain.bootstrap", self.bootstrap, "an integer >= 100 with rule: ci "
                 "(an interval needs resamples), >= 0 with rule: point")
        if self.lock_timeout < 0:
            fail("retrain.lock_timeout", self.lock_timeout, "seconds >= 0")
        if not self.production_dir.strip():
            fail("retrain.production_dir", self.production_dir, "a folder path")


@dataclass(frozen=True)
class Params:
    """All parameters of the pipeline, one field per params.yaml section."""

    seed: int = 42
    deterministic: bool = False  # TensorFlow op determinism: exact repeats, slower
    task: Literal["multiclass", "multilabel"] = "multiclass"  # one class per image, or a set
    data: DataParams = field(default_factory=DataParams)
    split: SplitParams = field(default_factory=SplitParams)
    model: ModelParams = field(default_factory=ModelParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    head: HeadParams = field(default_factory=HeadParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportParams = field(default_factory=ExportParams)
    cv: CVParams = field(default_factory=CVParams)
    retrain: RetrainParams = field(default_factory=RetrainParams)

    def __post_init__(self) -> None:
        mixing = [f"augment.{n}" for n in ("mixup", "cutmix") if getattr(self.augment, n)]
        for section in ("head", "finetune"):
            views = getattr(self, section).cached_views
            if mixing and views == 1:
                fail(f"{section}.cached_views", views, f"0 (fresh batches) or >= 2 (mixed "
                     f"views) with {' and '.join(mixing)} on: one cached view is the "
                     "unaugmented images, which MixUp/CutMix cannot change without fixing "
                     "one mixed pair per image for every epoch; or set "
                     f"{' and '.join(m + ': 0' for m in mixing)}")
        self._check_task()
        if self.deterministic and self.train.xla is True:
            fail("train.xla", self.train.xla, "`auto` or false with `deterministic: true` "
                  "(XLA kernels are not covered by TensorFlow's op determinism)")


    def _check_task(self) -> None:
        data, multilabel = self.data, self.task == "multilabel"
        if data.multilabel_columns is not None and not multilabel:
            fail("data.multilabel_columns", list(data.multilabel_columns),
                 "null with task: multiclass (set task: multilabel for one 0/1 column per label)")
        if data.source == "elpv" and multilabel != (data.elpv_labels == "multilabel"):
            fail("data.elpv_labels", data.elpv_labels, "`multilabel` with task: multilabel, and "
                 "binary or four_class with task: multiclass (set both together)")
        if not multilabel and self.evaluate.gradcam_label is not None:
            fail("evaluate.gradcam_label", self.evaluate.gradcam_label, "null with task: "
                 "multiclass (Grad-CAM explains each image's predicted class)")
        if multilabel and self.evaluate.positive_class is not None:
            fail("evaluate.positive_class", self.evaluate.positive_class, "null with task: "
                 "multilabel (every label is scored as its own positive class)")


def params_from_dict(raw: dict[str, Any] | None) -> Params:
    """Validate a parsed params mapping and return the typed, frozen :class:`Params`."""
    return build_checked(Params, raw or {}, "")


class YAML12Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading floats as YAML 1.2 (and DVC's ruamel) do: ``1e-05`` is a
    number. PyYAML's YAML 1.1 rules read an exponent without a decimal point as a string, and
    ``dvc exp run -S finetune.learning_rate=3e-5`` writes exactly that."""


YAML12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_yaml(text: str) -> Any:
    """Parse YAML text safely, floats as YAML 1.2 reads them (:class:`YAML12Loader`)."""
    return yaml.load(text, Loader=YAML12Loader)  # a SafeLoader subclass: safe


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read ``params.yaml`` with a safe YAML loader and validate it."""
    path = Path(path)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"params: file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {exc}") from None
    try:
        return params_from_dict(raw)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
