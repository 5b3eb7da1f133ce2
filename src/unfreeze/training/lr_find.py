"""The learning-rate range test (Smith 2015; fastai's ``lr_find``) on the project's own data.

:func:`lr_range_test` trains a compiled model one batch per step at exponentially growing
rates, smooths the loss and stops when it diverges; the weights and optimizer state are
put back afterwards. :func:`suggest` reads two rates off the smoothed curve.
:func:`find_for_phase` runs the test on what a phase really trains (the head on cached
features, or the unfrozen top of the phase-one model), built by the project's own code, at
a constant rate: a phase's schedule is switched off for the test, its layer-wise multipliers
stay. :func:`run` is the edge behind ``unfreeze lr-find``: it writes
``<out_dir>/<phase>.csv`` and ``.png`` and returns what to print. Only the ``train`` rows
are read (no validation, no test); ``params.yaml`` is never written.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from unfreeze.config.errors import DataError, LRFindError
from unfreeze.config.params import PHASES, Params, PhaseParams, load_params
from unfreeze.dataset.rows import Rows, TrainingData, load_splits, training_rows
from unfreeze.io import write_atomic, write_csv
from unfreeze.training import distribute, fit, recipe
from unfreeze.training.artifacts import META_FILE, MODEL_FILE, check_classes_match, read_meta

RULES = {"steepest": "steepest descent of the smoothed loss",
         "minimum_div_10": "minimum of the smoothed loss / 10"}
# what makes a phase's rate constant, for the fields its params have (a schedule's warm-up
# is only allowed with that schedule)
CONSTANT_RATE = {"schedule": "constant", "warmup_epochs": 0.0}
COLUMNS = ["step", "lr", "loss", "smoothed_loss"]


@dataclasses.dataclass(frozen=True)
class LRFindResult:
    """One sweep: per step run, its rate, raw batch loss and smoothed loss."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    planned: int  # steps planned; fewer ran when the loss diverged
    stopped: str  # "end" (every step ran), "diverged" or "not finite"


def sweep_rates(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    """``steps`` rates from ``start_lr`` to ``end_lr``, each a constant factor above the last."""
    return start_lr * (end_lr / start_lr) ** (np.arange(steps) / (steps - 1))


class RangeTest(keras.callbacks.Callback):
    """Sets each step's rate, records its batch loss and stops ``fit`` on divergence.

    Smoothing as fastai's ``AvgSmoothLoss``: ``avg = beta * avg + (1 - beta) * loss``,
    debiased as ``avg / (1 - beta ** n)``; stop as its ``LRFinder.after_batch``: when the
    smoothed loss exceeds ``diverge`` times its minimum so far (or is not finite).
    """

    def __init__(self, lrs: np.ndarray, beta: float, diverge: float) -> None:
        super().__init__()
        self.lrs, self.beta, self.diverge = lrs, beta, diverge
        self.losses, self.smoothed = [], []  # per step run: the batch loss, smoothed
        self.avg, self.best, self.stopped = 0.0, float("inf"), "end"

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.model.reset_metrics()  # the logged loss is then this batch's, not a running mean
        set_learning_rate(self.model.optimizer, float(self.lrs[len(self.losses)]))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float(np.mean(np.asarray((logs or {})["loss"])))
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        smooth = self.avg / (1 - self.beta ** (len(self.losses) + 1))
        self.losses.append(loss)
        self.smoothed.append(smooth)
        self.best = min(self.best, smooth)
        if not np.isfinite(smooth):
            self.stopped = "not finite"
        elif smooth > self.diverge * self.best:
            self.stopped = "diverged"
        if self.stopped != "end" or len(self.losses) == len(self.lrs):
            self.model.stop_training = True

    def result(self) -> LRFindResult:
        return LRFindResult([float(lr) for lr in self.lrs[:len(self.losses)]], self.losses,
                            self.smoothed, len(self.lrs), self.stopped)


def set_learning_rate(optimizer: keras.optimizers.Optimizer, lr: float) -> None:
    """Assign the optimizer's (variable) learning rate; a schedule cannot be assigned."""
    try:
        optimizer.learning_rate = lr
    except TypeError as exc:
        raise ValueError("the range test needs an optimizer compiled at a constant learning "
                         "rate (a variable), not a schedule") from exc


def lr_range_test(trainable: keras.Model, train_input: object, start_lr: float = 1e-7,
                  end_lr: float = 10.0, steps: int = 100, beta: float = 0.98,
                  diverge: float = 4.0, class_weight: dict[int, float] | None = None
                  ) -> LRFindResult:
    """Train ``trainable`` (compiled at a constant rate) one batch of ``train_input`` (what
    ``fit`` takes: one epoch, cycled through as often as needed, or cached views' dataset
    without end) per step at rates growing exponentially from ``start_lr`` to ``end_lr``;
    stop early when the smoothed loss diverges.

    The weights and optimizer state are restored afterwards (the seed generators of dropout
    layers, if any, are not: they have advanced).
    """
    if not 0 < start_lr < end_lr or steps < 2 or not 0 <= beta < 1 or diverge <= 1:
        raise ValueError(f"lr_range_test: need 0 < start_lr < end_lr, steps >= 2, 0 <= beta "
                         f"< 1, diverge > 1; got {start_lr}, {end_lr}, {steps}, {beta}, "
                         f"{diverge}")
    sweep = RangeTest(sweep_rates(start_lr, end_lr, steps), beta, diverge)
    with restored(trainable):
        trainable.fit(train_input, epochs=steps, class_weight=class_weight, callbacks=[sweep],
                      shuffle=False, verbose=0)  # every epoch runs one batch at least
    return sweep.result()


@contextlib.contextmanager
def restored(model: keras.Model) -> Iterator[None]:
    """Put back ``model``'s weights and its optimizer's variables (built first) on exit."""
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    weights = model.get_weights()
    state = [keras.ops.convert_to_numpy(v) for v in optimizer.variables]
    try:
        yield
    finally:
        model.set_weights(weights)
        for variable, value in zip(optimizer.variables, state, strict=True):
            variable.assign(value)


def suggest(result: LRFindResult, skip_start: int | None = None, skip_end: int = 5
            ) -> dict[str, float]:
    """``{"steepest": lr, "minimum_div_10": lr}`` (rules in :data:`RULES`), as fastai's
    ``steep`` and ``minimum`` on its ``lr_find`` window: the smoothed losses up to the first
    non-finite one, less the first ``planned // 10`` and the last ``skip_end`` steps (all
    finite ones when that window holds fewer than two). Unlike fastai's ``steep``, the
    steepest descent is sought up to the minimum only: a dip past it is the smoothed loss
    recovering from a spike of the diverging phase, not a rate to train at."""
    lrs, losses = np.asarray(result.lrs), np.asarray(result.smoothed)
    finite = int(np.argmin(np.isfinite(losses))) if not np.isfinite(losses).all() else len(lrs)
    lrs, losses = lrs[:finite], losses[:finite]
    start = result.planned // 10 if skip_start is None else skip_start
    if finite - skip_end - start >= 2:
        lrs, losses = lrs[start:finite - skip_end], losses[start:finite - skip_end]
    lowest = int(np.argmin(losses)) if len(losses) else 0
    if lowest < 1:
        raise LRFindError(f"the range test ({len(result.lrs)} steps, {result.stopped}) found "
                          "no descent of the smoothed loss to suggest a rate from: start "
                          "lower (--start) or use more steps")
    slopes = np.diff(losses[:lowest + 1]) / np.diff(np.log(lrs[:lowest + 1]))
    return {"steepest": float(lrs[np.argmin(slopes)]),
            "minimum_div_10": float(lrs[lowest] / 10)}


def constant_rate(phase: PhaseParams) -> PhaseParams:
    """The phase's params at a constant learning rate (whatever its ``schedule``)."""
    names = {f.name for f in dataclasses.fields(phase)}
    return dataclasses.replace(phase, **{k: v for k, v in CONSTANT_RATE.items() if k in names})


def train_only(data: TrainingData, n: int) -> TrainingData:
    """``data`` with its val rows replaced by the first ``n`` train rows: ``fit.phase_inputs``
    builds a validation input that the range test never runs, so no val image is read."""
    train = data.train
    stand_in = Rows(train.paths[:n], train.labels[:n], train.keys[:n] if train.keys else None)
    return TrainingData(train=train, val=stand_in, classes=data.classes)


def find_for_phase(params: Params, data: TrainingData, phase: str,
                   head_model_path: Path | None = None, start_lr: float = 1e-7,
                   end_lr: float = 10.0, steps: int = 100) -> LRFindResult:
    """The range test of ``phase`` (``head`` or ``finetune``) on ``data.train``: what that
    phase trains (a new model, or the phase-one model at ``head_model_path`` unfrozen from
    ``finetune.unfreeze_from``), compiled with its params at a constant rate, fed as in
    training (cached views included). The model is a throwaway."""
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}: expected one of {', '.join(PHASES)}")
    if (phase == "finetune") != (head_model_path is not None):
        raise ValueError("the finetune range test (only) needs the phase-one model's path")
    loaded = recipe.load_for_training(params, head_model_path) if head_model_path else None
    with distribute.scope(params.train.strategy):
        settings = constant_rate(getattr(params, phase))
        model = recipe.phase_model(params, phase, data, loaded, settings)
        plan = fit.plan_phase(model, settings, data.train.labels, params.augment)
        distribute.prepare_fit(plan.trainable, model,
                               *([plan.extractor] if plan.extractor is not None else []))
        seed = params.seed if phase == "head" else params.seed + 1
        fed = fit.phase_inputs(
            plan, model, train_only(data, distribute.replicas()), settings, params.augment,
            model.input_shape[1], seed, 0, params.seed)
        return lr_range_test(plan.trainable, fed.train, start_lr, end_lr, steps,
                             class_weight=fed.class_weight)


def run(params_path: Path, splits: Path, phase: str, head_dir: Path, out_dir: Path,
        start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100) -> list[str]:
    """`unfreeze lr-find`: the range test of ``phase``, ``<out_dir>/<phase>.csv`` and
    ``.png`` written; returns the lines to print (suggestions and the ``dvc exp run``
    line). Missing splits or phase-one model: :class:`DataError` naming the command."""
    params = load_params(params_path)
    if not splits.is_file():
        raise DataError(f"{splits}: no such file; create the splits first with "
                        "`dvc repro split`")
    head_model = head_dir / MODEL_FILE if phase == "finetune" else None
    for needed in ([head_model, head_dir / META_FILE] if head_model else []):
        if not needed.is_file():
            raise DataError(f"{needed}: no such file; phase two's range test starts from the "
                            "phase-one model: train it first with `dvc repro head`")
    table, root, _ = load_splits(splits)
    data = training_rows(table, root)
    if head_model:
        check_classes_match(read_meta(head_dir)["classes"], data.classes, head_dir)
    result = find_for_phase(params, data, phase, head_model, start_lr, end_lr, steps)
    try:
        picks = suggest(result)
    except LRFindError as exc:  # the curve without suggestions still tells what went on
        raise LRFindError(f"{exc} (see {write_report(result, {}, out_dir, phase)[1]})") from None
    written = write_report(result, picks, out_dir, phase)
    current = getattr(params, phase).learning_rate
    return report_lines(result, picks, phase, current, params_path, written)


def write_report(result: LRFindResult, picks: dict[str, float], out_dir: Path, phase: str
                 ) -> list[Path]:
    """``<phase>.csv`` (step, lr, loss, smoothed_loss) and ``<phase>.png``, atomically."""
    rows = [dict(zip(COLUMNS, row, strict=True)) for row in zip(
        range(1, len(result.lrs) + 1), result.lrs, result.losses, result.smoothed, strict=True)]
    return [write_csv(out_dir / f"{phase}.csv", rows, COLUMNS),
            plot(result, picks, out_dir / f"{phase}.png", phase)]


def plot(result: LRFindResult, picks: dict[str, float], path: Path, phase: str) -> Path:
    """The raw and smoothed loss against the rate (log x), the suggestions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs, smoothed = np.asarray(result.lrs), np.asarray(result.smoothed)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, result.losses, color="0.75", lw=0.8, label="batch loss")
    ax.plot(lrs, smoothed, lw=1.8, label="smoothed loss")
    for (name, lr), marker in zip(picks.items(), ("o", "s"), strict=True):
        y = np.interp(np.log(lr), np.log(lrs), smoothed)
        ax.plot([lr], [y], marker, ms=8, label=f"{RULES[name]}: {lr:.1e}")
    finite = smoothed[np.isfinite(smoothed)]
    shown = finite[:-5] if finite.size > 10 else finite  # as fastai's plot: not the last 5
    if shown.size:  # the tail of a diverged sweep leaves the top of the frame
        pad = 0.15 * (shown.max() - shown.min()) or 0.05 * abs(shown.max()) or 0.1
        ax.set_ylim(shown.min() - pad, shown.max() + pad)
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
           title=f"LR range test: {phase} ({len(lrs)} of {result.planned} steps, "
                 f"{result.stopped})")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def report_lines(result: LRFindResult, picks: dict[str, float], phase: str, current: float,
                 params_path: Path, written: list[Path]) -> list[str]:
    """What `unfreeze lr-find` prints: the sweep, the files, the suggestions, the command."""
    rate = f"{phase}.learning_rate"
    value = np.format_float_positional(float(f"{picks['steepest']:.2g}"), trim="-")
    target = rate if Path(params_path) == Path("params.yaml") else f"{params_path}:{rate}"
    lines = [f"lr-find {phase}: {len(result.lrs)} of {result.planned} steps, "
             f"{result.lrs[0]:.1e} to {result.lrs[-1]:.1e} (stopped: {result.stopped})",
             "wrote " + ", ".join(str(p) for p in written),
             f"suggested {rate}: {picks['steepest']:.1e} ({RULES['steepest']}); "
             f"minimum/10: {picks['minimum_div_10']:.1e}",
             f"current {rate}: {current:g} ({params_path}, not changed)",
             f"to use it: dvc exp run -S {target}={value}"]
    if float(value) >= 1:
        lines.append(f"note: {rate} must lie in (0, 1): take minimum/10 or a lower value")
    return lines
