"""Cross-validation of the whole recipe: one fold trained and tested (the `cv@k` stage body).

Each fold runs the very functions of the main stages (:mod:`unfreeze.training.recipe`), on
every fold but ``k``, with an inner stratified validation slice for early stopping, then
predicts fold ``k``. The test split never reaches this module: the folds table holds
train + val rows only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unfreeze.config.params import Params
from unfreeze.dataset.folds import fold_parts
from unfreeze.dataset.rows import (
    TrainingData,
    class_names,
    is_multilabel,
    load_splits,
    rows_of,
)
from unfreeze.evaluation.cv_report import VIEWS_FILE, views_table
from unfreeze.evaluation.inference import predict_views
from unfreeze.io import write_json, write_parquet
from unfreeze.training import recipe
from unfreeze.training.backup import Backup


def cross_validate_fold(params: Params, folds_path: Path, k: int, out_dir: Path,
                        backup_dir: Path | None = None) -> dict:
    """Fold ``k`` of cross-validation: the phases in ``cv.phases`` on every other fold (with an
    inner validation slice for early stopping), then predictions for the held-out fold ``k``.

    Writes ``out_dir/metrics.json`` (fold, sizes), ``views.parquet`` (the probabilities of
    the inner validation and the held-out images for each ``evaluate.tta`` view: the CV
    report fits each fold's operating point from them, as evaluate does for the main model,
    so a threshold or calibration change reruns the report only) and each phase's dvclive
    log under ``out_dir/<phase>``. With
    ``backup_dir``, each phase keeps a per-epoch backup there (resumed after a kill, cleared
    once the fold's results are written).
    """
    backups = {phase: Backup.for_phase(backup_dir / phase, params, (*sections, "cv"),
                                       (folds_path,))
               for phase, sections in (("head", recipe.HEAD_SECTIONS),
                                       ("finetune", recipe.FINETUNE_SECTIONS))
               } if backup_dir else {}
    table, root, _ = load_splits(folds_path)
    train_rows, val_rows, held = fold_parts(table, k, params.cv.val, params.seed)
    classes = class_names(table)
    data = TrainingData(train=rows_of(train_rows, root, classes),
                        val=rows_of(val_rows, root, classes), classes=classes)
    model, _ = recipe.phase_one(params, data, out_dir / "head", backups.get("head"),
                                then_finetune="finetune" in params.cv.phases)
    if "finetune" in params.cv.phases:
        model, _ = recipe.phase_two(params, model, data, out_dir / "finetune",
                                    backups.get("finetune"))
    size, batch, tta = params.model.image_size, params.evaluate.batch_size, params.evaluate.tta
    inner, rows = data.val, rows_of(held, root, classes)
    val_views = predict_views(model, inner.paths, size, batch, inner.keys, tta)
    held_views = predict_views(model, rows.paths, size, batch, rows.keys, tta)
    multilabel = is_multilabel(table)
    write_parquet(out_dir / VIEWS_FILE, views_table(
        [*val_rows["path"].to_pylist(), *held["path"].to_pylist()],
        [*val_rows["label"].to_pylist(), *held["label"].to_pylist()],
        ["val"] * len(inner.paths) + ["heldout"] * len(rows.paths),
        [np.concatenate([v, h]) for v, h in zip(val_views, held_views, strict=True)], classes,
        [*val_rows["labels"].to_pylist(), *held["labels"].to_pylist()] if multilabel
        else None))
    mean = np.mean(held_views, axis=0)  # a quick look: arg-max (multi-label: 0.5, exact sets)
    accuracy = float(((mean >= 0.5) == (rows.labels > 0)).all(axis=1).mean() if multilabel
                     else (mean.argmax(axis=1) == rows.labels).mean())
    result = {"fold": k, "folds": params.cv.folds, "active": True,
              "phases": list(params.cv.phases), "classes": classes, "tta": tta,
              "n_train": len(train_rows), "n_val": len(val_rows), "n_heldout": len(held),
              "heldout_accuracy_argmax": accuracy}
    write_json(out_dir / "metrics.json", result)
    for backup in backups.values():
        backup.clear()
    return result

