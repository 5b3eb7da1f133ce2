"""Cross-validation folds: which train+val image is held out in which fold.

Folds are drawn from the non-test pool (train + val of the splits table), stratified by label
and grouped by the splits' ``group`` column (``split.group_by`` values, or the content hash), so
a group or two copies of one image never straddle a fold boundary. The test split is dropped
before anything else happens. Multi-label tables are folded by iterative stratification over
groups (:mod:`unfreeze.dataset.multisplit`), every label in every fold and inner val slice.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.model_selection import StratifiedGroupKFold

from unfreeze.config.errors import DataError
from unfreeze.dataset.multisplit import assign_label_folds, carve_labels, table_matrix
from unfreeze.dataset.rows import is_multilabel
from unfreeze.dataset.splits import carve


def non_test_pool(splits: pa.Table) -> pa.Table:
    """The train + val rows of a splits table: the only rows cross-validation may touch."""
    return splits.filter(pc.not_equal(splits["split"], "test"))


def check_fold_sizes(labels: list[str], groups: list[str], folds: int, grouped: bool) -> None:
    """Stop when a class has fewer images (or groups) than folds; name the largest k that works."""
    per_class: dict[str, set[str]] = {}
    for label, group in zip(labels, groups, strict=True):
        per_class.setdefault(label, set()).add(group)
    counts = {label: len(g) for label, g in per_class.items()}
    largest = min(counts.values())
    if largest >= folds:
        return
    label = min(counts, key=lambda k: (counts[k], k))
    unit = "groups" if grouped else "distinct images"
    raise DataError(
        f"cv.folds={folds} is too many: class {label!r} has only {counts[label]} {unit} in the "
        f"train+val pool ({dict(sorted(Counter(labels).items()))} images per class); "
        f"the largest cv.folds that works is {largest}"
        + ("" if largest >= 2 else " (cross-validation needs 2: add images)")
    )


def assign_folds(pool: pa.Table, folds: int, seed: int, grouped: bool) -> np.ndarray:
    """Fold id (0 … folds-1) for every pool row: stratified by label, groups kept whole."""
    labels = pool["label"].to_pylist()
    groups = pool["group"].to_pylist()
    if is_multilabel(pool):
        y, classes = table_matrix(pool)
        return assign_label_folds(y, np.asarray(groups, dtype=object), folds, seed, classes,
                                  grouped)
    check_fold_sizes(labels, groups, folds, grouped)
    out = np.full(len(labels), -1, dtype=np.int32)
    sgkf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(sgkf.split(np.zeros(len(labels)), labels, groups)):
        out[held] = k
    return out


def folds_table(splits: pa.Table, folds: int, seed: int, grouped: bool) -> pa.Table:
    """Non-test rows with their ``fold`` column filled in; keeps the splits' metadata."""
    pool = non_test_pool(splits)
    fold = assign_folds(pool, folds, seed, grouped)
    pool = pool.set_column(pool.schema.get_field_index("fold"), "fold", pa.array(fold, pa.int32()))
    return pool.replace_schema_metadata(splits.schema.metadata)


def fold_parts(table: pa.Table, k: int, val_fraction: float, seed: int
               ) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(train, inner val, held-out) rows for fold ``k``."""
    fold = np.asarray(table["fold"].to_pylist())
    held = table.take(np.flatnonzero(fold == k))
    rest = table.take(np.flatnonzero(fold != k))
    groups = np.asarray(rest["group"].to_pylist(), dtype=object)
    if is_multilabel(rest):
        y, classes = table_matrix(rest)
        train_idx, val_idx = carve_labels(y, groups, val_fraction, seed + k, classes=classes,
                                          setting=f"cv.val={val_fraction} (fold {k})")
    else:
        labels = np.asarray(rest["label"].to_pylist(), dtype=object)
        train_idx, val_idx = carve(labels, groups, val_fraction, seed + k)
    return rest.take(train_idx), rest.take(val_idx), held


def inactive_marker(k: int, folds: int) -> dict:
    """What a fold stage beyond ``cv.folds`` writes: it trains nothing (no TensorFlow)."""
    return {"fold": k, "folds": folds, "active": False}
