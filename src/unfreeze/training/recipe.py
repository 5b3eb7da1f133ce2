"""The two-phase fine-tuning recipe, readable in a few lines.

Phase one (``head``): build InceptionV3 + new head, base frozen, train the head.
Phase two (``finetune``): unfreeze the top blocks (BatchNorm stays frozen and in inference
mode), recompile at the lower learning rate, train again.
Both the main stages (:func:`train_head`, :func:`train_finetune`) and cross-validation folds
call these functions.
"""

from __future__ import annotations

from pathlib import Path

import keras

from unfreeze.config.params import Params, PhaseParams
from unfreeze.dataset.rows import TrainingData, load_splits, training_rows
from unfreeze.training import distribute, hardware
from unfreeze.training import model as model_lib
from unfreeze.training.activations import views_of
from unfreeze.training.artifacts import (
    MODEL_FILE,
    check_classes_match,
    check_task_match,
    load_model,
    phase_meta,
    read_meta,
    save_model,
)
from unfreeze.training.backup import Backup
from unfreeze.training.features import Share
from unfreeze.training.fit import compile_phase, fit_phase

HEAD_SECTIONS = ("seed", "deterministic", "model", "augment", "head", "train")
FINETUNE_SECTIONS = (*HEAD_SECTIONS, "finetune")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with ``deterministic``, also make TF ops repeatable.

    Op determinism is process-wide and cannot be turned off again; it costs speed (some
    kernels run single-threaded) and is what makes two runs give bit-identical weights.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def phase_one(params: Params, data: TrainingData, report_dir: Path,
              backup: Backup | None = None, then_finetune: bool = True
              ) -> tuple[keras.Model, dict]:
    """Train a new head on the frozen base; return the full model and the phase summary.
    ``then_finetune``: phase two follows (so its cached views are worth computing here).

    Everything runs in the scope of ``train.strategy`` (:mod:`unfreeze.training.distribute`).
    """
    with distribute.scope(params.train.strategy):
        model = phase_model(params, "head", data)
        summary = fit_phase(model, data, params.head, params.augment, params.model.image_size,
                            params.seed, report_dir, backup,
                            share=shared_pass(params) if then_finetune else None)
    return model, summary


def shared_pass(params: Params) -> Share | None:
    """What phase one keeps for phase two: when both phases train on cached views, the
    activations at phase two's cut for its views (one lower-base pass serves both).
    ``finetune.cached_views`` and ``unfreeze_from`` are not among the head stage's DVC
    params: a change of them does not rerun phase one, and phase two then computes (and
    stores) its views itself, with the same result."""
    if not (params.head.cached_views and params.finetune.cached_views):
        return None
    return Share(params.finetune.unfreeze_from, tuple(views_of(
        params.finetune.cached_views, params.augment, params.seed)))


def load_for_training(params: Params, path: Path) -> keras.Model:
    """Load a saved phase-one model in the scope of ``train.strategy``, ready for phase two.

    Seeded first: loading creates the layers' random seed generators (dropout), which take
    their seeds from the global random state, so an unseeded load would make phase two differ
    from run to run even with ``deterministic: true``.
    """
    with distribute.scope(params.train.strategy):
        seed_everything(params.seed + 1, params.deterministic)
        return load_model(path)


def phase_two(params: Params, model: keras.Model, data: TrainingData, report_dir: Path,
              backup: Backup | None = None) -> tuple[keras.Model, dict]:
    """Unfreeze from ``finetune.unfreeze_from`` and train at ``finetune.learning_rate``.

    ``model`` comes from :func:`phase_one` or :func:`load_for_training` (the same strategy).
    """
    with distribute.scope(params.train.strategy):
        model = phase_model(params, "finetune", data, model)
        image_size = model.input_shape[1]
        summary = fit_phase(model, data, params.finetune, params.augment, image_size,
                            params.seed + 1, report_dir, backup, view_seed=params.seed)
    summary["unfrozen_layers_with_weights"] = model_lib.unfrozen_count(model)
    return model, summary


def phase_model(params: Params, phase: str, data: TrainingData,
                model: keras.Model | None = None, settings: PhaseParams | None = None
                ) -> keras.Model:
    """The model a phase trains, seeded and compiled for it (call in the strategy's scope):
    phase one (``head``) a new model built under the precision policy, phase two
    (``finetune``) ``model`` unfrozen from ``finetune.unfreeze_from``. ``settings``: the
    phase params to compile with (default the phase's own; the LR finder's differ)."""
    head = phase == "head"
    seed_everything(params.seed if head else params.seed + 1, params.deterministic)
    hardware.configure(params.train.xla, params.deterministic)
    if head:
        with model_lib.precision(hardware.precision(params.train.precision)):
            model = model_lib.build(params.model, len(data.classes),
                                    multilabel=data.train.labels.ndim == 2)
    else:
        model_lib.unfreeze(model, params.finetune.unfreeze_from)
    compile_phase(model, model, settings or getattr(params, phase), params.augment,
                  data.train.labels, "full")
    return model


def train_head(params: Params, splits: Path, model_dir: Path, report_dir: Path,
               backup_dir: Path | None = None) -> dict:
    """The `head` stage: phase one on a splits table's train/val rows, saved to
    ``model_dir``; a backup in ``backup_dir`` resumes a killed run. Returns the summary."""
    table, root, source = load_splits(splits)
    data = training_rows(table, root)
    backup = (Backup.for_phase(backup_dir, params, HEAD_SECTIONS, (splits,))
              if backup_dir else None)
    model, summary = phase_one(params, data, report_dir, backup)
    meta = phase_meta(data.classes, params.model.image_size, source, "head", params.head,
                      summary)
    _save(model, model_dir, meta, backup)
    return summary


def train_finetune(params: Params, splits: Path, head_dir: Path, model_dir: Path,
                   report_dir: Path, backup_dir: Path | None = None) -> dict:
    """The `finetune` stage: phase two from the saved phase-one model in ``head_dir``."""
    head_meta = read_meta(head_dir)
    table, root, source = load_splits(splits)
    data = training_rows(table, root)
    check_classes_match(head_meta["classes"], data.classes, head_dir)
    model = load_for_training(params, head_dir / MODEL_FILE)
    check_task_match(model, data.train.labels, head_dir)
    backup = (Backup.for_phase(backup_dir, params, FINETUNE_SECTIONS,
                               (splits, head_dir / MODEL_FILE)) if backup_dir else None)
    model, summary = phase_two(params, model, data, report_dir, backup)
    meta = phase_meta(data.classes, head_meta["image_size"], source, "finetune",
                      params.finetune, summary)
    _save(model, model_dir, meta, backup)
    return summary


def _save(model: keras.Model, model_dir: Path, meta: dict, backup: Backup | None) -> None:
    """Save the phase's model; only then clear its backup (a kill in between loses nothing)."""
    save_model(model, model_dir, meta)
    if backup:
        backup.clear()
