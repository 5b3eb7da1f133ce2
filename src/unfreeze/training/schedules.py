"""Learning-rate schedules per phase, per optimizer step (``<phase>.schedule``).

- ``constant``: the classic recipe, ``learning_rate`` at every step (a plain float, so the
  optimizer keeps a settable learning-rate variable and nothing changes for the classic run);
- ``cosine``: linear warm-up over ``warmup_epochs`` (step ``s`` at ``learning_rate * (s + 1) /
  warmup_steps``, so the first step already trains), then half a cosine from
  ``learning_rate`` towards 0, which it reaches one step after the last planned step;
- ``one_cycle``: fastai's ``fit_one_cycle``: cosine warm-up from ``learning_rate / 25`` to
  ``learning_rate`` over ``pct_start`` of the steps, then cosine down to
  ``learning_rate / 1e5`` (fastai's ``combined_cos``; its momentum cycling is not done).

A schedule is a function of the optimizer's step counter and of the phase's *planned* steps
(epochs × steps per epoch, the steps of the global batch under a distribution strategy).
So a phase resumed from its backup (which restores the optimizer's counter) continues where
it stopped, and early stopping only ends the curve early, never stretches it. Under
``mixed_float16`` the counter is the applied updates: a step skipped by loss scaling (an
overflow) does not advance the curve.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from unfreeze.config.params import PhaseParams

ONE_CYCLE_DIV, ONE_CYCLE_FINAL_DIV = 25.0, 1e5  # fastai's fit_one_cycle defaults


@keras.saving.register_keras_serializable(package="unfreeze")
class PhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``cosine`` or ``one_cycle`` over ``total_steps`` steps, peaking at ``peak``."""

    def __init__(self, kind: str, peak: float, total_steps: int, warmup_steps: int = 0,
                 pct_start: float = 0.25) -> None:
        if kind not in ("cosine", "one_cycle"):
            raise ValueError(f"unknown schedule {kind!r}")
        self.kind, self.peak, self.total_steps = kind, float(peak), max(1, int(total_steps))
        self.warmup_steps, self.pct_start = int(warmup_steps), float(pct_start)

    def __call__(self, step):
        s = ops.cast(step, "float32")
        if self.kind == "cosine":
            return cosine_lr(s, self.peak, self.total_steps, self.warmup_steps)
        return one_cycle_lr(s, self.peak, self.total_steps, self.pct_start)

    def get_config(self) -> dict:
        return {"kind": self.kind, "peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "pct_start": self.pct_start}


def _anneal(start, end, pos):
    """fastai's ``SchedCos``: from ``start`` (pos 0) to ``end`` (pos 1) along half a cosine."""
    return start + (1.0 + ops.cos(math.pi * (1.0 - pos))) * (end - start) / 2.0


def cosine_lr(step, peak: float, total: int, warmup: int):
    """``peak * (step + 1) / warmup`` while warming up, then ``peak`` down to 0 at ``total``."""
    warm = peak * (step + 1.0) / max(warmup, 1)
    pos = ops.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    return ops.where(step < warmup, warm, _anneal(peak, 0.0, pos))


def one_cycle_lr(step, peak: float, total: int, pct_start: float):
    """fastai's one cycle at position ``step / total``: up over ``pct_start``, then down."""
    pos = step / total
    up = _anneal(peak / ONE_CYCLE_DIV, peak, ops.clip(pos / pct_start, 0.0, 1.0))
    down = _anneal(peak, peak / ONE_CYCLE_FINAL_DIV,
                   ops.clip((pos - pct_start) / (1.0 - pct_start), 0.0, 1.0))
    return ops.where(pos < pct_start, up, down)


def for_phase(phase: PhaseParams, steps_per_epoch: int | None
              ) -> float | PhaseSchedule:
    """The optimizer's learning rate for ``phase``: a float for ``constant``, else a schedule
    over ``phase.epochs * steps_per_epoch`` steps (which must then be given)."""
    if phase.schedule == "constant":
        return float(phase.learning_rate)
    if not steps_per_epoch:
        raise ValueError(f"schedule {phase.schedule!r} needs the steps per epoch")
    total = phase.epochs * steps_per_epoch
    warmup = min(round(phase.warmup_epochs * steps_per_epoch), total - 1)  # leave a decay
    return PhaseSchedule(phase.schedule, phase.learning_rate, total, warmup_steps=warmup,
                         pct_start=phase.pct_start)


def rates(optimizer: keras.optimizers.Optimizer, steps: int) -> np.ndarray:
    """The base learning rate of each of the first ``steps`` optimizer steps (0-based)."""
    lr = getattr(optimizer, "inner_optimizer", optimizer)._learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return np.asarray(ops.convert_to_numpy(lr(np.arange(steps, dtype=np.float32))),
                          dtype=np.float64).reshape(-1)
    return np.full(steps, float(ops.convert_to_numpy(lr)), dtype=np.float64)
