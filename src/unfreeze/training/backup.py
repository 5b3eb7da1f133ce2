"""Per-phase backups: a killed training phase resumes from its last finished epoch.

A backup lives in its own folder outside every DVC output (DVC deletes a stage's outputs
before it reruns it), by convention ``.unfreeze/backup/<stage>``. After each epoch it holds:

- ``epoch-<n>.weights.h5``: model weights *and* optimizer state after epoch ``n``;
- ``best-<n>.npz``: the early-stopping candidate (the weights of the best epoch so far);
- ``state.json``: what the phase depends on (params sections, input file hashes), the
  per-epoch history, the early-stopping counters and the names of the two files above.

Every file is written atomically and ``state.json`` is written last, so whatever moment the
process is killed at, ``state.json`` names files that exist and belong together. A backup
made for other inputs (params or data changed since) or that cannot be read is discarded
with a logged reason; the phase then starts from epoch 0.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from unfreeze.config.params import Params
from unfreeze.io import atomic_path, read_json, sha256_file, write_json

STATE_FILE = "state.json"
# What a damaged, truncated or incompatible backup raises while it is read (JSON, HDF5 via
# h5py, NumPy archives, Keras' weight loading): the backup is discarded. Anything else is a bug.
UNUSABLE_BACKUP = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


@dataclass(frozen=True)
class Backup:
    """Where a phase keeps its backup and what the backup must have been made from."""

    folder: Path
    inputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_phase(cls, folder: str | Path, params: Params, sections: tuple[str, ...],
                  files: tuple[str | Path, ...] = ()) -> Backup:
        """A backup keyed on the given params sections and on the content of ``files``."""
        values = asdict(params)
        inputs = {f"params.{name}": values[name] for name in sections}
        inputs.update({f"file {Path(p).as_posix()}": sha256_file(p) for p in files})
        # JSON round trip so tuples compare equal to what state.json gives back
        return cls(Path(folder), json.loads(json.dumps(inputs, sort_keys=True)))

    def clear(self) -> None:
        """Delete the backup (once the phase's model is saved, or when it is unusable)."""
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Resumed:
    """What a valid backup restores: epochs done, their history and early-stopping state."""

    epochs_done: int
    stopped: bool
    history: dict[str, list[float]]
    early_stopping: dict[str, Any]
    best_weights: list[np.ndarray] | None


def changed_inputs(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of the inputs whose recorded value differs (or that appear on one side only)."""
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


STATE_TYPES = {"inputs": dict, "epochs_done": int, "stopped": bool, "history": dict,
               "weights": str, "best": str, "early_stopping": dict}


def read_state(path: Path) -> dict[str, Any]:
    """``state.json`` checked against the fields this version writes; ValueError otherwise
    (a backup of another version, or hand-edited, is discarded, not half-trusted)."""
    state = read_json(path)
    wrong = ([k for k, tp in STATE_TYPES.items() if not isinstance(state.get(k), tp)]
             if isinstance(state, dict) else list(STATE_TYPES))
    if wrong:
        raise ValueError(f"{path} is not a backup state of this version (fields {wrong})")
    return state


def restore(backup: Backup, model: keras.Model, log: Callable[[str], None] = print
            ) -> Resumed | None:
    """Load a matching backup into ``model`` (weights + optimizer); None when there is none.

    ``model`` must be built and compiled for the phase. A backup of other inputs, or one that
    cannot be read, is deleted and the reason is logged.
    """
    state_path = backup.folder / STATE_FILE
    if not state_path.exists():
        return None
    try:
        state = read_state(state_path)
        changed = changed_inputs(state["inputs"], backup.inputs)
        if changed:
            reason = f"made with other inputs (changed: {', '.join(changed)})"
        else:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.load_weights(backup.folder / state["weights"])
            best = None
            if state.get("best"):
                with np.load(backup.folder / state["best"]) as npz:
                    best = [npz[f"w{i}"] for i in range(len(npz.files))]
            resumed = Resumed(state["epochs_done"], state["stopped"], state["history"],
                              state["early_stopping"], best)
            log(f"resuming from backup {backup.folder}: {resumed.epochs_done} epoch(s) done"
                + (", early stopping had ended the phase" if resumed.stopped else ""))
            return resumed
    except UNUSABLE_BACKUP as exc:  # unreadable, truncated or incompatible: never trust it
        reason = f"cannot be used ({type(exc).__name__}: {exc})"
    log(f"discarding backup {backup.folder}: {reason}; training this phase from epoch 1")
    backup.clear()
    return None


class BackupCallback(keras.callbacks.Callback):
    """Write the backup after every epoch; on resume, hand early stopping its saved state.

    Put it *after* ``EarlyStopping`` in the callback list: at the end of an epoch early
    stopping updates its counters first, and this callback saves them.
    """

    def __init__(self, backup: Backup, resumed: Resumed | None,
                 early_stopping: keras.callbacks.EarlyStopping | None) -> None:
        super().__init__()
        self.backup = backup
        self.resumed = resumed
        self.early_stopping = early_stopping
        self.history: dict[str, list[float]] = dict(resumed.history) if resumed else {}
        self._best_file = ""
        self._best_epoch = -1

    def on_train_begin(self, logs: dict | None = None) -> None:
        es, resumed = self.early_stopping, self.resumed
        if es is not None and resumed is not None:  # runs after EarlyStopping reset itself
            for name in ("best", "wait", "best_epoch", "stopped_epoch"):
                setattr(es, name, resumed.early_stopping[name])
            es.best_weights = resumed.best_weights
            self._best_epoch = es.best_epoch
            self._best_file = resumed.early_stopping.get("file", "")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        folder = self.backup.folder
        folder.mkdir(parents=True, exist_ok=True)
        weights = f"epoch-{epoch + 1}.weights.h5"
        with atomic_path(folder / weights) as tmp:
            self.model.save_weights(tmp)
        es_state: dict[str, Any] = {"best": None, "wait": 0, "best_epoch": 0,
                                    "stopped_epoch": 0}
        es = self.early_stopping
        if es is not None:
            es_state = {"best": None if es.best is None else float(es.best), "wait": es.wait,
                        "best_epoch": es.best_epoch, "stopped_epoch": es.stopped_epoch}
            if es.best_weights is not None and es.best_epoch != self._best_epoch:
                self._best_file, self._best_epoch = f"best-{es.best_epoch + 1}.npz", es.best_epoch
                with atomic_path(folder / self._best_file) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, **{f"w{i}": w for i, w in enumerate(es.best_weights)})
        es_state["file"] = self._best_file
        write_json(folder / STATE_FILE, {
            "inputs": self.backup.inputs, "epochs_done": epoch + 1,
            "stopped": bool(self.model.stop_training), "history": self.history,
            "weights": weights, "best": self._best_file, "early_stopping": es_state})
        keep = {STATE_FILE, weights, self._best_file}
        for old in folder.iterdir():  # earlier epochs' files and temporaries of a killed run
            if old.name not in keep:
                old.unlink(missing_ok=True)
