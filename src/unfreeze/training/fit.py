"""The fit loop shared by phase one (head) and phase two (finetune), logged with dvclive.

:func:`fit_phase` reads as its steps: choose what trains (the full model, or its trainable
part on cached features), resume a backup, build the inputs, train the epochs, summarise.
Only the ``train`` and ``val`` rows reach this module (:func:`unfreeze.dataset.rows.training_rows`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from unfreeze.config.errors import DataError
from unfreeze.config.params import AugmentParams, FinetuneParams, PhaseParams
from unfreeze.dataset.rows import TrainingData
from unfreeze.training import (
    activations,
    distribute,
    features,
    hardware,
    inputs,
    losses,
    mixing,
    schedules,
)
from unfreeze.training import model as model_lib
from unfreeze.training.backup import Backup, BackupCallback, Resumed, restore


@dataclass(frozen=True)
class PhasePlan:
    """What one phase trains and on what: the model that ``fit`` runs (the full model, or
    with cached views its trainable part) and the frozen extractor in front of it, if any."""

    trainable: keras.Model
    extractor: keras.Model | None
    batch: int  # global batch: batch_size per replica times the replicas


@dataclass(frozen=True)
class PhaseInputs:
    """What ``fit`` takes for one phase: the training and validation datasets, the class
    weights (None where the batches carry their weights), and the batches of an epoch when
    the training dataset runs on through every epoch (cached views: each batch is fixed by
    its epoch and index), None when it is one epoch, reshuffled at each pass."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    class_weight: dict[int, float] | None
    steps_per_epoch: int | None = None


def class_weights(labels: np.ndarray, n_classes: int, mode: str | None) -> dict[int, float] | None:
    """``balanced`` class weights (n_samples / (n_classes * count)) or None. Multi-label
    labels (multi-hot rows) have none: their weights are per label, in the loss
    (:func:`pos_weights`)."""
    if mode is None or labels.ndim == 2:
        return None
    weights = compute_class_weight("balanced", classes=np.arange(n_classes), y=labels)
    return {i: float(w) for i, w in enumerate(weights)}


def pos_weights(labels: np.ndarray, mode: str | None) -> list[float] | None:
    """Multi-label ``balanced``: each label's positives weighted by negatives / positives
    (:mod:`unfreeze.training.losses`); None otherwise."""
    if mode is None or labels.ndim != 2:
        return None
    return losses.balanced_pos_weights(labels)


def steps_per_epoch(n_train: int, batch: int, replicas: int) -> int:
    """Optimizer steps in one epoch of ``n_train`` images at global batch ``batch``."""
    return len(distribute.batch_sizes(n_train, batch, replicas))


def compile_phase(target: keras.Model, model: keras.Model, phase: PhaseParams,
                  augment: AugmentParams | None, labels: np.ndarray, use: str) -> None:
    """Compile ``target`` (``model`` itself, or its trainable part) for ``phase`` and the
    training rows' ``labels``: its schedule over the phase's planned steps, phase two's
    layer-wise rates (:func:`~unfreeze.training.model.layer_multipliers`), soft targets if
    the phase uses them (:func:`~unfreeze.training.mixing.soft`), multi-label positive
    weights (:func:`pos_weights`), XLA as decided for ``use``."""
    replicas = distribute.replicas_of(model)
    steps = steps_per_epoch(len(labels), distribute.global_batch(phase.batch_size), replicas)
    multipliers = (model_lib.layer_multipliers(model, phase)
                   if isinstance(phase, FinetuneParams) else None)
    model_lib.compile_for(target, phase, hardware.xla(
        use, replicas=replicas, image_size=model.input_shape[1]), steps, multipliers,
        soft=mixing.soft(phase, augment), pos_weight=pos_weights(labels, phase.class_weight))


def plan_phase(model: keras.Model, phase: PhaseParams, labels: np.ndarray,
               augment: AugmentParams | None = None) -> PhasePlan:
    """The full model, or with ``phase.cached_views`` its part above the frozen layers
    (phase one: the head; phase two: from ``finetune.unfreeze_from`` up), compiled like it
    (:func:`compile_phase`, for the training rows' ``labels``)."""
    batch = distribute.global_batch(phase.batch_size)
    if not phase.cached_views:
        return PhasePlan(model, None, batch)
    unfreeze_from = phase.unfreeze_from if isinstance(phase, FinetuneParams) else None
    extractor, trainable = features.split_model(model, unfreeze_from)
    compile_phase(trainable, model, phase, augment, labels,
                  "head" if unfreeze_from is None else "upper")
    return PhasePlan(trainable, extractor, batch)


def phase_inputs(plan: PhasePlan, model: keras.Model, data: TrainingData, phase: PhaseParams,
                 augment: AugmentParams, image_size: int, seed: int, first_epoch: int,
                 view_seed: int, share: features.Share | None = None) -> PhaseInputs:
    """What ``fit`` takes for the phase (:class:`PhaseInputs`).

    Cached views carry their sample weights themselves, and soft targets (label smoothing,
    MixUp, CutMix: :mod:`unfreeze.training.mixing`) carry theirs in every batch; plain image
    datasets leave them to ``fit``. Views are drawn from ``view_seed`` (the same in both
    phases, so they can share a pass).
    """
    weights = class_weights(data.train.labels, len(data.classes), phase.class_weight)
    replicas = distribute.replicas_of(plan.trainable)
    soft = mixing.soft(phase, augment)
    spec = mixing.Targets.of(len(data.classes), weights, augment) if soft else None
    plain = mixing.Targets.of(len(data.classes), None, None) if soft else None
    if plan.extractor is not None:
        drawn = activations.views_of(phase.cached_views, augment, view_seed)
        views, val = features.cached_features(model, plan.extractor, data, drawn, image_size,
                                              at_cut=isinstance(phase, FinetuneParams),
                                              share=share)
        train_views = features.CachedViews(
            views, data.train.labels, plan.batch, weights, seed, first_epoch=first_epoch,
            replicas=replicas, targets=view_targets(spec, data.train.labels, drawn, image_size))
        val_views = features.CachedViews(
            [val], data.val.labels, plan.batch, None, seed, shuffle=False, replicas=replicas,
            targets=view_targets(plain, data.val.labels, [None], image_size))
        return PhaseInputs(train_views.dataset(), val_views.dataset(epochs=1), None,
                           steps_per_epoch=len(train_views))
    train = inputs.make_dataset(data.train.paths, data.train.labels, image_size, plan.batch,
                                shuffle=True, seed=seed, augment=augment, keys=data.train.keys,
                                replicas=replicas, targets=spec)
    val = inputs.make_dataset(data.val.paths, data.val.labels, image_size, plan.batch,
                              keys=data.val.keys, replicas=replicas, targets=plain)
    return PhaseInputs(train, val, None if soft else weights)


def view_targets(spec: mixing.Targets | None, labels: np.ndarray, views: list,
                 image_size: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Soft targets of each cached view (mixed where the view mixes); None without ``spec``."""
    if spec is None:
        return None
    n = len(labels)
    return [mixing.view_targets(spec, labels, mixing.view_draws(n, view.seed, view.augment)
                                if view is not None and mixing.mixes(view.augment) else None,
                                image_size) for view in views]


def fit_phase(model: keras.Model, data: TrainingData, phase: PhaseParams,
              augment: AugmentParams, image_size: int, seed: int, report_dir: Path,
              backup: Backup | None = None, view_seed: int | None = None,
              share: features.Share | None = None) -> dict:
    """Train ``model`` (already compiled) for one phase; restore the best epoch by val_loss.

    With ``phase.cached_views`` > 0 the frozen part's features (pooled base output in phase
    one, activations below ``finetune.unfreeze_from`` in phase two) are computed once and the
    model's own trainable layers train on them (:mod:`unfreeze.training.features`). Per-epoch
    metrics go to ``report_dir`` through dvclive (metrics.json + plots/metrics/). With
    ``backup``, the phase is saved after every epoch and a matching backup left by an
    interrupted run is resumed: only the remaining epochs train, and early stopping keeps its
    best epoch across the interruption. The caller clears the backup once the model is saved.
    Cached views are drawn from ``view_seed`` (default ``seed``); ``share`` (phase one) also
    keeps phase two's views in the activation store (:func:`features.cached_features`).
    Returns a summary: best epoch, its validation metrics, epochs run, wall time.
    """
    started = time.perf_counter()
    plan = plan_phase(model, phase, data.train.labels, augment)
    resumed = restore(backup, plan.trainable) if backup else None
    distribute.prepare_fit(plan.trainable, model,
                           *([plan.extractor] if plan.extractor is not None else []))
    first_epoch = (phase.epochs if resumed.stopped else resumed.epochs_done) if resumed else 0
    fed = phase_inputs(plan, model, data, phase, augment, image_size, seed, first_epoch,
                       seed if view_seed is None else view_seed, share)
    feature_seconds = (round(time.perf_counter() - started, 2) if plan.extractor is not None
                       else 0.0)
    with open_live(report_dir) as live:
        history = train_epochs(plan, fed, phase, first_epoch, live, backup, resumed)
        log_rates(live, plan.trainable.optimizer)
        summary = phase_summary(history, phase, plan, model, resumed) | {
            "feature_seconds": feature_seconds,
            "seconds": round(time.perf_counter() - started, 2),
            "n_train": len(data.train.paths), "n_val": len(data.val.paths)}
        for key, value in summary.items():
            live.summary[key] = value
    return summary


def train_epochs(plan: PhasePlan, fed: PhaseInputs, phase: PhaseParams, first_epoch: int,
                 live, backup: Backup | None, resumed: Resumed | None) -> dict[str, list[float]]:
    """Run ``fit`` from ``first_epoch`` with logging, early stopping and backups; return the
    history of every epoch of the phase (those before a resume included)."""
    early = (keras.callbacks.EarlyStopping(monitor="val_loss", patience=phase.patience,
                                           restore_best_weights=True)
             if phase.patience else None)
    logger = LiveLogger(live)
    if resumed:
        logger.replay(resumed.history)
    callbacks: list[keras.callbacks.Callback] = [logger] + ([early] if early else [])
    keeper = BackupCallback(backup, resumed, early) if backup else None
    if keeper:
        callbacks.append(keeper)  # after EarlyStopping: it saves the updated counters
    history = plan.trainable.fit(fed.train, validation_data=fed.val, epochs=phase.epochs,
                                 steps_per_epoch=fed.steps_per_epoch,
                                 initial_epoch=first_epoch, class_weight=fed.class_weight,
                                 callbacks=callbacks,
                                 shuffle=False,  # each input orders its own batches
                                 verbose=2)
    return keeper.history if keeper else history.history


def phase_summary(history: dict[str, list[float]], phase: PhaseParams, plan: PhasePlan,
                  model: keras.Model, resumed: Resumed | None) -> dict:
    """What the phase did: best epoch and its metrics, whose weights were kept, how it ran."""
    summary = summarize_history(history)
    # early stopping restores the best epoch's weights; without it the last epoch's stay
    summary["weights_from_epoch"] = (summary["best_epoch"] if phase.patience
                                     else summary["epochs_run"])
    summary["resumed_after_epoch"] = resumed.epochs_done if resumed else 0
    summary["cached_views"] = phase.cached_views
    summary["precision"] = model.dtype_policy.name
    summary["xla"] = bool(plan.trainable.jit_compile)
    return summary | distribute.summary() | {"global_batch_size": plan.batch}


class LiveLogger(keras.callbacks.Callback):
    """Log each epoch's Keras metrics to a dvclive ``Live`` as train/… and val/… series."""

    def __init__(self, live) -> None:
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for name, value in (logs or {}).items():
            key = f"val/{name[4:]}" if name.startswith("val_") else f"train/{name}"
            self.live.log_metric(key, float(value))
        self.live.next_step()

    def replay(self, history: dict[str, list[float]]) -> None:
        """Log the epochs a resumed phase ran before it was interrupted."""
        n = len(next(iter(history.values()), []))
        for epoch in range(n):
            self.on_epoch_end(epoch, {name: values[epoch] for name, values in history.items()})


def log_rates(live, optimizer: keras.optimizers.Optimizer) -> None:
    """Log the learning rate of every step the optimizer took (those before a resume too:
    its step counter comes back with the backup) as the dvclive plot ``plots/custom/lr.json``
    (x: step, 1-based; y: lr). Layer-wise factors multiply it per variable."""
    steps = int(keras.ops.convert_to_numpy(optimizer.iterations))
    points = [{"step": i + 1, "lr": float(v)} for i, v in
              enumerate(schedules.rates(optimizer, steps))]
    live.log_plot("lr", points, x="step", y="lr", template="linear",
                  title="learning rate per step", x_label="step", y_label="learning rate")


def open_live(report_dir: Path):
    """A dvclive ``Live`` writing metrics.json and plots/metrics/ into ``report_dir``."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    try:
        return Live(dir=str(report_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    except SCMError as exc:  # dvclive cannot log inside a git repository without commits
        raise DataError(f"dvclive cannot start ({exc}): make a first commit in this git "
                        "repository (`git add -A && git commit -m init`), then rerun") from exc


def summarize_history(history: dict[str, list[float]]) -> dict:
    """Best epoch (lowest val_loss, 1-based) and its metrics, plus the number of epochs run."""
    val_loss = history["val_loss"]
    best = int(np.argmin(val_loss))
    out = {"epochs_run": len(val_loss), "best_epoch": best + 1}
    for name, values in history.items():
        key = f"best_val_{name[4:]}" if name.startswith("val_") else f"best_train_{name}"
        out[key] = float(values[best])
    return out
