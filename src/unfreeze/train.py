"""The two training phases: one fit loop shared by phase one (head) and phase two (finetune).

Only the ``train`` and ``val`` rows of the splits table are ever handed to this module; the
``test`` rows are dropped by :func:`training_rows` before any path is turned into a dataset.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
from sklearn.utils.class_weight import compute_class_weight

from unfreeze import distribute, features, inputs
from unfreeze.checkpoint import Backup, BackupCallback, restore
from unfreeze.data import DataError, iter_paths
from unfreeze.io import atomic_path, read_json, write_json
from unfreeze.model import compile_for
from unfreeze.params import AugmentParams, PhaseParams

MODEL_FILE = "model.keras"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Rows:
    """Absolute image paths, integer labels and content hashes (decoded-cache keys)."""

    paths: list[str]
    labels: np.ndarray
    keys: list[str] | None = None


@dataclass(frozen=True)
class TrainingData:
    train: Rows
    val: Rows
    classes: list[str]


def rows_of(table: pa.Table, root: Path, classes: list[str]) -> Rows:
    index = {name: i for i, name in enumerate(classes)}
    paths = list(iter_paths(root, table["path"].to_pylist()))
    labels = np.asarray([index[label] for label in table["label"].to_pylist()], dtype=np.int32)
    keys = table["sha256"].to_pylist() if "sha256" in table.column_names else None
    return Rows(paths, labels, keys)


def training_rows(splits: pa.Table, root: Path) -> TrainingData:
    """Train and val rows of a splits table; the test rows are discarded here."""
    split = splits["split"].to_pylist()
    classes = sorted(set(splits["label"].to_pylist()))
    keep = {name: [i for i, s in enumerate(split) if s == name] for name in ("train", "val")}
    return TrainingData(train=rows_of(splits.take(keep["train"]), root, classes),
                        val=rows_of(splits.take(keep["val"]), root, classes),
                        classes=classes)


def class_weights(labels: np.ndarray, n_classes: int, mode: str | None) -> dict[int, float] | None:
    """``balanced`` class weights (n_samples / (n_classes * count)) or None."""
    if mode is None:
        return None
    weights = compute_class_weight("balanced", classes=np.arange(n_classes), y=labels)
    return {i: float(w) for i, w in enumerate(weights)}


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


def fit_phase(model: keras.Model, data: TrainingData, phase: PhaseParams,
              augment: AugmentParams, image_size: int, seed: int, report_dir: Path,
              backup: Backup | None = None) -> dict:
    """Train ``model`` (already compiled) for one phase; restore the best epoch by val_loss.

    With ``<phase>.cached_views`` > 0, the frozen part's features (pooled base output in phase
    one, activations below ``unfreeze_from`` in phase two) are computed once and the model's own
    trainable layers train on them (:mod:`unfreeze.features`).
    Per-epoch metrics go to ``report_dir`` through dvclive (metrics.json + plots/metrics/).
    With ``backup``, the phase is saved after every epoch and a matching backup left by an
    interrupted run is resumed: only the remaining epochs train, and early stopping keeps
    its best epoch across the interruption. The caller clears the backup once the model is
    saved. Returns a summary: best epoch, its validation metrics, epochs run, wall time.
    """
    started = time.perf_counter()
    batch = distribute.global_batch(phase.batch_size)  # batch_size per replica
    weights = class_weights(data.train.labels, len(data.classes),
                            getattr(phase, "class_weight", None))
    views = phase.cached_views
    trainable = model
    if views:
        extractor, trainable = features.split(model, getattr(phase, "unfreeze_from", None))
        compile_for(trainable, phase, model.jit_compile)
    resumed = restore(backup, trainable) if backup else None
    distribute.prepare_fit(trainable, model, *([extractor] if views else []))
    initial_epoch = 0
    if resumed:
        initial_epoch = phase.epochs if resumed.stopped else resumed.epochs_done
    fit_weights: dict[int, float] | None = weights
    if views:
        train_in = features.CachedViews(
            features.training_views(extractor, data.train.paths, image_size, batch, augment,
                                    views, seed, keys=data.train.keys),
            data.train.labels, batch, weights, seed, first_epoch=initial_epoch)
        val_in = (features.extract(extractor, data.val.paths, image_size, batch,
                                   keys=data.val.keys),
                  data.val.labels)
        fit_weights = None  # CachedViews yields per-sample weights itself
    else:
        train_in = inputs.make_dataset(data.train.paths, data.train.labels, image_size, batch,
                                       shuffle=True, seed=seed, augment=augment,
                                       keys=data.train.keys)
        val_in = inputs.make_dataset(data.val.paths, data.val.labels, image_size, batch,
                                     keys=data.val.keys)
    feature_seconds = round(time.perf_counter() - started, 2)
    early = (keras.callbacks.EarlyStopping(monitor="val_loss", patience=phase.patience,
                                           restore_best_weights=True)
             if phase.patience else None)
    with open_live(report_dir) as live:
        logger = LiveLogger(live)
        if resumed:
            logger.replay(resumed.history)
        callbacks: list[keras.callbacks.Callback] = [logger] + ([early] if early else [])
        keeper = BackupCallback(backup, resumed, early) if backup else None
        if keeper:
            callbacks.append(keeper)  # after EarlyStopping: it saves the updated counters
        history = trainable.fit(train_in, validation_data=val_in, epochs=phase.epochs,
                                initial_epoch=initial_epoch, class_weight=fit_weights,
                                validation_batch_size=batch, callbacks=callbacks,
                                shuffle=False,  # both inputs reshuffle themselves every epoch
                                verbose=2)
        summary = summarize_history(keeper.history if keeper else history.history)
        # early stopping restores the best epoch's weights; without it the last epoch's stay
        summary["weights_from_epoch"] = (summary["best_epoch"] if phase.patience
                                         else summary["epochs_run"])
        summary["resumed_after_epoch"] = resumed.epochs_done if resumed else 0
        summary["cached_views"] = views
        summary["precision"] = model.dtype_policy.name
        summary["xla"] = bool(trainable.jit_compile)
        summary.update(distribute.summary(), global_batch_size=batch)
        summary["feature_seconds"] = feature_seconds if views else 0.0
        summary["seconds"] = round(time.perf_counter() - started, 2)
        summary["n_train"], summary["n_val"] = len(data.train.paths), len(data.val.paths)
        for key, value in summary.items():
            live.summary[key] = value
    return summary


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


def check_classes_match(model_classes: list[str], data_classes: list[str], where: Path) -> None:
    """Stop when a saved model predicts other classes than the data has."""
    if list(model_classes) != list(data_classes):
        raise DataError(f"{where}: the model predicts classes {model_classes} but the splits "
                        f"have {data_classes}; rerun the earlier stages (`dvc repro`)")


def save_model(model: keras.Model, out_dir: Path, meta: dict) -> Path:
    """Save ``model.keras`` and ``meta.json`` into ``out_dir``, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        model.save(tmp)
    write_json(out_dir / META_FILE, meta)
    return out_dir / MODEL_FILE


def read_meta(model_dir: Path) -> dict:
    return read_json(model_dir / META_FILE)


def phase_meta(classes: list[str], image_size: int, source: str, phase: str,
               phase_params: PhaseParams, summary: dict) -> dict:
    """Metadata saved beside the model: what it predicts and how it was trained."""
    return {"classes": classes, "image_size": image_size, "source": source, "phase": phase,
            "phase_params": asdict(phase_params), "training": summary}
