"""Cross-validation of the whole recipe: one fold trained and tested (the `cv@k` stage body).

Each fold runs the very functions of the main stages (:mod:`unfreeze.training.recipe`), on
every fold but ``k``, with an inner stratified validation slice for early stopping, then
predicts fold ``k``. The test split never reaches this module: the folds table holds
train + val rows only.
"""

from __future__ import annotations

from pathlib import Path

from unfreeze.config.params import Params
from unfreeze.dataset.folds import fold_parts
from unfreeze.dataset.rows import TrainingData, class_names, load_splits, rows_of
from unfreeze.evaluation.inference import predict
from unfreeze.evaluation.metrics import compute_metrics, positive_class, predictions_table
from unfreeze.io import write_json, write_parquet
from unfreeze.training import recipe
from unfreeze.training.backup import Backup


def cross_validate_fold(params: Params, folds_path: Path, k: int, out_dir: Path,
                        backup_dir: Path | None = None) -> dict:
    """Fold ``k`` of cross-validation: the phases in ``cv.phases`` on every other fold (with an
    inner validation slice for early stopping), then predictions for the held-out fold ``k``.

    Writes ``out_dir/metrics.json`` (fold, sizes, metrics), ``predictions.parquet`` (the
    out-of-fold predictions) and each phase's dvclive log under ``out_dir/<phase>``. With
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
    model, _ = recipe.phase_one(params, data, out_dir / "head", backups.get("head"))
    if "finetune" in params.cv.phases:
        model, _ = recipe.phase_two(params, model, data, out_dir / "finetune",
                                    backups.get("finetune"))
    rows = rows_of(held, root, classes)
    probs = predict(model, rows.paths, params.model.image_size, params.evaluate.batch_size,
                    rows.keys)
    positive = positive_class(table["label"].to_pylist(), classes,
                              params.evaluate.positive_class)
    write_parquet(out_dir / "predictions.parquet",
                  predictions_table(held["path"].to_pylist(), rows.labels, probs, classes))
    result = {"fold": k, "folds": params.cv.folds, "active": True,
              "phases": list(params.cv.phases), "classes": classes,
              "n_train": len(train_rows), "n_val": len(val_rows), "n_heldout": len(held),
              "metrics": compute_metrics(rows.labels, probs, classes, positive)}
    write_json(out_dir / "metrics.json", result)
    for backup in backups.values():
        backup.clear()
    return result
