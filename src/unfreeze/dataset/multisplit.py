"""Multi-label splits and folds by iterative stratification (Sechidis, Tsoumakas & Vlahavas,
2011; the ``iterative-stratification`` package).

A multi-label table (metadata task ``multilabel``, a ``labels`` list column) cannot be
stratified by class: each image holds any set of labels, possibly none. Iterative
stratification spreads every label's positives over the parts in proportion to their sizes,
rarest label first; the rows with no label are one more stratum (an implicit ``none`` column),
so they spread evenly too.

Grouping, and its approximation: rows are stratified as *units* that never straddle two
parts. A unit is a group (``split.group_by``, else the content hash, so identical files stay
together); its label vector is the union (any positive) of its rows' labels, and it counts as
one, whatever its size. Fractions and per-label shares are therefore exact in groups but
approximate in images when groups differ in size or labels; the split report says
``"iterative, grouped (approximate)"``. When every group is a single image they are exact up to
rounding (``"iterative"``).

Every label in every part: a carve tries candidates in a fixed order (shuffle-split draws, then
the folds of a k-fold over units, then the same for further seeds) and keeps the first in which
every label that can be in both parts is; when none does it stops with a DataError naming the
label. Deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

from unfreeze.config.errors import DataError
from unfreeze.config.params import SplitParams
from unfreeze.dataset.rows import class_names, label_matrix

SEED_TRIES = 5  # seed variations a carve or a fold assignment tries before giving up
SHUFFLE_DRAWS = 4  # shuffle-split draws per seed, tried before the k-fold candidates
MIN_UNITS = 3  # every label needs a positive group in train, val and test


def table_matrix(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """The (n, L) boolean multi-hot matrix of a multi-label table, and its label names."""
    classes = class_names(table)
    return label_matrix(table["labels"].to_pylist(), classes).astype(bool), classes


def label_units(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the unit of every row, the (units, L) matrix of each unit's labels: their union)."""
    _, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    units = np.zeros((int(inverse.max(initial=-1)) + 1, y.shape[1]), dtype=bool)
    np.logical_or.at(units, inverse, y.astype(bool))
    return inverse, units


def _target(units: np.ndarray) -> np.ndarray:
    """The stratification target: the labels plus a ``none`` column for label-free units."""
    return np.column_stack([units, ~units.any(axis=1)])


def _candidates(target: np.ndarray, fraction: float, seed: int
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rest, carved) unit indices: best stratified first, then ever more varied ones."""
    x, k = np.zeros(len(target)), max(2, round(1.0 / fraction))
    for s in range(seed, seed + SEED_TRIES):
        yield from MultilabelStratifiedShuffleSplit(
            n_splits=SHUFFLE_DRAWS, test_size=fraction, random_state=s).split(x, target)
        yield from MultilabelStratifiedKFold(
            n_splits=k, shuffle=True, random_state=s).split(x, target)


def _lacking(units: np.ndarray, rest: np.ndarray, carved: np.ndarray, need_rest: int
             ) -> int | None:
    """The first label that could be in both parts but is not (a column), or None."""
    able = units.sum(axis=0) >= 1 + need_rest
    bad = able & ((units[carved].sum(axis=0) < 1) | (units[rest].sum(axis=0) < need_rest))
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def carve_labels(y: np.ndarray, groups: np.ndarray, fraction: float, seed: int, *,
                 classes: list[str], setting: str, need_rest: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (rest, carved), ~``fraction`` of the units carved, stratified
    iteratively and grouped; every label with enough units lands in the carved part and
    ``need_rest`` times in the rest. ``setting`` (``split.test=0.2``) names the fraction in errors.
    """
    inverse, units = label_units(y, groups)
    n_splits = max(2, round(1.0 / fraction))
    if len(units) < n_splits:
        raise DataError(
            f"{setting}: only {len(units)} distinct groups, too few to carve a {fraction:.0%} part "
            f"(needs at least {n_splits}); use a finer split.group_by or larger fractions")
    first = None
    for rest, carved in _candidates(_target(units), fraction, seed):
        lacking = _lacking(units, rest, carved, need_rest)
        if lacking is None:
            return (np.flatnonzero(np.isin(inverse, rest)),
                    np.flatnonzero(np.isin(inverse, carved)))
        first = lacking if first is None else first
    name, n = classes[first], int(units[:, first].sum())
    raise DataError(
        f"{setting}: no split found that gives label {name!r} ({int(y[:, first].sum())} "
        f"image(s) in {n} group(s)) a positive in the carved part and {need_rest} in the rest "
        f"(its labels overlap others'); add images of {name!r}, change the fractions or use a "
        "finer split.group_by")


def check_label_counts(y: np.ndarray, groups: np.ndarray, classes: list[str],
                       params: SplitParams) -> None:
    """Stop when a label has fewer than 3 positive images (or groups): each split needs one."""
    _, units = label_units(y, groups)
    for j, name in enumerate(classes):
        images, n = int(y[:, j].sum()), int(units[:, j].sum())
        if n >= MIN_UNITS:
            continue
        where = (f"{images} usable image(s)" if n == images
                 else f"{images} usable image(s) but only {n} group(s) or distinct content(s)")
        raise DataError(
            f"label {name!r} has {where}, too few for split.test={params.test} and "
            f"split.val={params.val}: train, val and test each need one (at least "
            f"{MIN_UNITS}); add images of it, drop the label"
            + (f" or use a finer split.group_by than {params.group_by!r}"
               if params.group_by and n < images else ""))


def assign_label_splits(y: np.ndarray, groups: np.ndarray, params: SplitParams, seed: int,
                        classes: list[str]) -> list[str]:
    """``train``/``val``/``test`` per row: test carved first, then val, stratified iteratively,
    groups kept whole, every label in every split."""
    check_label_counts(y, groups, classes, params)
    pool, test = carve_labels(y, groups, params.test, seed, classes=classes,
                              setting=f"split.test={params.test}", need_rest=2)
    val_fraction = params.val / (1.0 - params.test)
    _, val_rel = carve_labels(y[pool], groups[pool], val_fraction, seed + 1, classes=classes,
                              setting=f"split.val={params.val}")
    out = np.full(len(y), "train", dtype=object)
    out[test] = "test"
    out[pool[val_rel]] = "val"
    return out.tolist()


def rare_label_warnings(positives: dict[str, int], smallest: float, fractions: str
                        ) -> list[str]:
    """A warning per label too rare for the smallest split (``smallest`` × positives < 1)."""
    return [f"label {name!r} has {n} image(s), too rare for {fractions}: the smallest split "
            f"({smallest:.0%}) expects {n * smallest:.2f} of them, so its share per split is not "
            "stratified and its metrics are noisy; add images of it"
            for name, n in sorted(positives.items()) if n * smallest < 1.0]


def check_label_folds(y: np.ndarray, groups: np.ndarray, classes: list[str], folds: int,
                      grouped: bool) -> None:
    """Stop when a label has fewer positive groups than folds; name the largest k that works."""
    _, units = label_units(y, groups)
    counts = units.sum(axis=0).astype(int)
    largest = int(counts.min(initial=folds))
    if largest >= folds:
        return
    j = min(range(len(classes)), key=lambda i: (counts[i], classes[i]))
    unit = "groups" if grouped else "distinct images"
    images = dict(zip(classes, y.sum(axis=0).astype(int).tolist(), strict=True))
    raise DataError(
        f"cv.folds={folds} is too many: label {classes[j]!r} has only {counts[j]} positive "
        f"{unit} in the train+val pool ({images} positive images per label); "
        f"the largest cv.folds that works is {largest}"
        + ("" if largest >= 2 else " (cross-validation needs 2: add images)"))


def assign_label_folds(y: np.ndarray, groups: np.ndarray, folds: int, seed: int,
                       classes: list[str], grouped: bool) -> np.ndarray:
    """Fold id (0 … folds-1) per row by iterative stratification over units (groups whole),
    every label in every fold."""
    check_label_folds(y, groups, classes, folds, grouped)
    inverse, units = label_units(y, groups)
    target, x = _target(units), np.zeros(len(units))
    for s in range(seed, seed + SEED_TRIES):
        fold_of = np.full(len(units), -1, dtype=np.int32)
        splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=s)
        for k, (_, held) in enumerate(splitter.split(x, target)):
            fold_of[held] = k
        if all(units[fold_of == k].any(axis=0).all() for k in range(folds)):
            return fold_of[inverse]
    raise DataError(
        f"cv.folds={folds}: no assignment found that puts every label in every fold "
        f"({SEED_TRIES} tries); lower cv.folds or add images of the rarest labels")
