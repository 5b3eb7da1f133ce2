"""Stratified (and optionally grouped) train / val / test split.

The test split is carved out first, then validation from what remains. Rows are grouped so
that a group never spans two splits: by ``split.group_by`` when set, otherwise by content hash
(identical files always land in the same split). Deterministic for a given seed. Multi-label
tables are split by iterative stratification (:mod:`unfreeze.dataset.multisplit`).
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pyarrow as pa
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from unfreeze.config.errors import DataError
from unfreeze.config.params import SplitParams
from unfreeze.dataset.multisplit import (
    assign_label_splits,
    rare_label_warnings,
    table_matrix,
)
from unfreeze.dataset.rows import is_multilabel

SPLITS = ("train", "val", "test")
NO_FOLD = -1


def group_ids(table: pa.Table, group_by: str | None) -> np.ndarray:
    """One group id per row: the ``group_by`` column (nulls become their own group) or sha256."""
    if group_by is None:
        return np.asarray(table["sha256"].to_pylist(), dtype=object)
    if group_by not in table.column_names:
        raise DataError(
            f"split.group_by: column {group_by!r} is not in the manifest; "
            f"available columns: {', '.join(table.column_names)}"
        )
    values = table[group_by].to_pylist()
    paths = table["path"].to_pylist()
    return np.asarray([f"{v}" if v is not None else f"path:{p}" for v, p in
                       zip(values, paths, strict=True)], dtype=object)


def check_split_sizes(labels: list[str], params: SplitParams) -> None:
    """Stop when a class is too small for every split to get at least one of its images."""
    counts = Counter(labels)
    smallest = min(params.test, params.val, 1.0 - params.test - params.val)
    for label, n in sorted(counts.items()):
        if n * smallest < 1.0 or n < 3:
            need = int(np.ceil(1.0 / smallest))
            raise DataError(
                f"class {label!r} has {n} usable image(s), too few for split.test="
                f"{params.test} and split.val={params.val} (needs at least {max(need, 3)}); "
                "add images, merge classes or change the split fractions"
            )


def carve(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, carved) with ~``fraction`` carved, stratified and grouped
    (with groups, the carved part holds every class whenever some grouping allows it)."""
    idx = np.arange(len(labels))
    if len(set(groups)) == len(groups):  # every row its own group: exact stratified split
        rest, carved = train_test_split(idx, test_size=fraction, stratify=labels,
                                        random_state=seed)
        return np.sort(rest), np.sort(carved)
    n_splits = max(2, round(1.0 / fraction))
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise DataError(
            f"split: only {n_groups} distinct groups, too few to carve a {fraction:.0%} split "
            f"(needs at least {n_splits}); use a finer split.group_by or larger fractions"
        )
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    # the first fold that holds every class (a validation slice without one cannot fit a
    # threshold); the first fold when none does
    candidates = list(sgkf.split(idx, labels, groups))
    every = set(labels)
    rest, carved = next((c for c in candidates if set(labels[c[1]]) == every), candidates[0])
    return np.sort(rest), np.sort(carved)


def assign_splits(labels: list[str], groups: np.ndarray, params: SplitParams, seed: int
                  ) -> list[str]:
    """Return ``train``/``val``/``test`` per row: stratified by label, groups kept whole."""
    y = np.asarray(labels, dtype=object)
    check_split_sizes(labels, params)
    pool, test = carve(y, groups, params.test, seed)
    val_fraction = params.val / (1.0 - params.test)
    _, val_rel = carve(y[pool], groups[pool], val_fraction, seed + 1)
    out = np.full(len(y), "train", dtype=object)
    out[test] = "test"
    out[pool[val_rel]] = "val"
    for name in SPLITS:
        missing = sorted(set(labels) - set(y[out == name]))
        if missing:
            raise DataError(f"split {name!r} got no image of class(es) {missing}; "
                            "add images or change split fractions / split.group_by")
    return out.tolist()


def split_table(manifest_ok: pa.Table, params: SplitParams, seed: int) -> pa.Table:
    """The splits table: path, label, sha256, group id, split and the reserved ``fold`` column
    (multi-label: also ``labels``), with the manifest's metadata (the data source; multi-label:
    the task and its vocabulary).

    sha256 is kept so that a changed image content changes this file, and DVC reruns training.
    """
    labels = manifest_ok["label"].to_pylist()
    groups = group_ids(manifest_ok, params.group_by)
    if is_multilabel(manifest_ok):
        y, classes = table_matrix(manifest_ok)
        splits = assign_label_splits(y, groups, params, seed, classes)
        extra = {"labels": manifest_ok["labels"].cast(pa.list_(pa.string()))}
    else:
        splits, extra = assign_splits(labels, groups, params, seed), {}
    table = pa.table({
        "path": manifest_ok["path"],
        "label": manifest_ok["label"],
        **extra,
        "sha256": manifest_ok["sha256"],
        "group": pa.array(groups.tolist(), pa.string()),
        "split": pa.array(splits, pa.string()),
        "fold": pa.array([NO_FOLD] * len(labels), pa.int32()),
    })
    return table.replace_schema_metadata(manifest_ok.schema.metadata)


def summarize_splits(table: pa.Table, params: SplitParams | None = None) -> dict:
    """Counts per split and class, and the fraction of images in each split (multi-label:
    positives per label and split, warnings on labels too rare for the fractions)."""
    if is_multilabel(table):
        return summarize_label_splits(table, params)
    rows = list(zip(table["split"].to_pylist(), table["label"].to_pylist(), strict=True))
    total = len(rows)
    out: dict = {"n_images": total, "splits": {}}
    for name in SPLITS:
        counts = Counter(label for s, label in rows if s == name)
        n = sum(counts.values())
        out["splits"][name] = {"n": n, "fraction": round(n / total, 4) if total else 0.0,
                               "classes": dict(sorted(counts.items()))}
    return out


def summarize_label_splits(table: pa.Table, params: SplitParams | None = None) -> dict:
    """Multi-label split report: per split its size, positives per label and label-free
    images; the stratification used; a warning per label too rare for the fractions (the
    ``params`` fractions, else the observed ones)."""
    y, classes = table_matrix(table)
    split = np.asarray(table["split"].to_pylist(), dtype=object)
    total, groups = len(split), table["group"].to_pylist()
    out: dict = {"n_images": total, "stratification": "iterative" if len(set(groups)) == total
                 else "iterative, grouped (approximate)",
                 "labels": dict(zip(classes, y.sum(axis=0).astype(int).tolist(), strict=True)),
                 "warnings": [], "splits": {}}
    for name in SPLITS:
        part = y[split == name]
        out["splits"][name] = {
            "n": len(part), "fraction": round(len(part) / total, 4) if total else 0.0,
            "labels": dict(zip(classes, part.sum(axis=0).astype(int).tolist(), strict=True)),
            "no_label": int((~part.any(axis=1)).sum())}
    if params is not None:
        smallest = min(params.test, params.val, 1.0 - params.test - params.val)
        fractions = f"split.test={params.test} and split.val={params.val}"
    else:
        smallest = min(s["fraction"] for s in out["splits"].values())
        fractions = "the split fractions"
    out["warnings"] = rare_label_warnings(out["labels"], smallest, fractions)
    return out


def leakage_checks(table: pa.Table) -> dict[str, bool]:
    """Checks that no test information can have reached training, from the splits table."""
    rows = table.to_pylist()
    test = [r for r in rows if r["split"] == "test"]
    seen = [r for r in rows if r["split"] != "test"]
    splits_of_group: dict[str, set[str]] = {}
    for r in rows:
        splits_of_group.setdefault(r["group"], set()).add(r["split"])
    return {
        "test_paths_not_in_train_or_val": not {r["path"] for r in test} & {
            r["path"] for r in seen},
        "test_contents_not_in_train_or_val": not {r["sha256"] for r in test} & {
            r["sha256"] for r in seen},
        "no_group_in_two_splits": all(len(s) == 1 for s in splits_of_group.values()),
    }


def split_fingerprint(table: pa.Table, name: str = "test") -> str:
    """The sha256 of split ``name``'s (path, content hash, label) rows, sorted: two
    decisions made on the same fingerprint were made on the very same images."""
    rows = sorted((r["path"], r["sha256"], r["label"]) for r in table.to_pylist()
                  if r["split"] == name)
    return hashlib.sha256("".join(f"{p}\0{h}\0{label}\n" for p, h, label in rows)
                          .encode()).hexdigest()
