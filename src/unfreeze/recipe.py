"""The two-phase fine-tuning recipe, readable in a few lines.

Phase one (``head``): build InceptionV3 + new head, base frozen, train the head.
Phase two (``finetune``): unfreeze the top blocks (BatchNorm stays frozen and in inference
mode), recompile at the lower learning rate, train again.
Both the main stages and cross-validation folds call these functions.
"""

from __future__ import annotations

from pathlib import Path

import keras

from unfreeze import distribute, train
from unfreeze import model as model_lib
from unfreeze.checkpoint import Backup
from unfreeze.params import Params

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


def phase_one(params: Params, data: train.TrainingData, report_dir: Path,
              backup: Backup | None = None) -> tuple[keras.Model, dict]:
    """Train a new head on the frozen base; return the full model and the phase summary.

    Everything runs in the scope of ``train.strategy`` (:mod:`unfreeze.distribute`).
    """
    with distribute.scope(params.train.strategy):
        seed_everything(params.seed, params.deterministic)
        with model_lib.precision(model_lib.resolve_precision(params.train.precision)):
            model = model_lib.build(params.model, len(data.classes))
        model_lib.compile_for(model, params.head, params.train.xla)
        summary = train.fit_phase(model, data, params.head, params.augment,
                                  params.model.image_size, params.seed, report_dir, backup)
    return model, summary


def load_for_training(params: Params, path: Path) -> keras.Model:
    """Load a saved phase-one model in the scope of ``train.strategy``, ready for phase two."""
    with distribute.scope(params.train.strategy):
        return model_lib.load(path)


def phase_two(params: Params, model: keras.Model, data: train.TrainingData, report_dir: Path,
              backup: Backup | None = None) -> tuple[keras.Model, dict]:
    """Unfreeze from ``finetune.unfreeze_from`` and train at ``finetune.learning_rate``.

    ``model`` comes from :func:`phase_one` or :func:`load_for_training` (the same strategy).
    """
    with distribute.scope(params.train.strategy):
        seed_everything(params.seed + 1, params.deterministic)
        n_unfrozen = model_lib.unfreeze(model, params.finetune.unfreeze_from)
        model_lib.compile_for(model, params.finetune, params.train.xla)
        image_size = model.input_shape[1]
        summary = train.fit_phase(model, data, params.finetune, params.augment, image_size,
                                  params.seed + 1, report_dir, backup)
    summary["unfrozen_layers_with_weights"] = n_unfrozen
    return model, summary
