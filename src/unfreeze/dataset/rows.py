"""Rows of the manifest and splits tables as the later stages use them: usable rows only,
absolute paths checked to lie under the data root, integer labels, content-hash keys.

Training takes the ``train`` and ``val`` rows only: :func:`training_rows` drops the ``test``
rows before any path is resolved.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unfreeze.config.errors import DataError
from unfreeze.dataset.sources import resolve_root


@dataclass(frozen=True)
class Rows:
    """Absolute image paths, labels (integers; multi-label: an (n, L) multi-hot matrix) and
    content hashes (decoded-cache keys)."""

    paths: list[str]
    labels: np.ndarray
    keys: list[str] | None = None


@dataclass(frozen=True)
class TrainingData:
    """What one training run sees: train and val rows and the class names, in label order."""

    train: Rows
    val: Rows
    classes: list[str]


def ok_rows(table: pa.Table) -> pa.Table:
    """Only the usable images of a manifest."""
    return table.filter(pc.equal(table["status"], "ok"))


def is_split(table: pa.Table, name: str) -> pa.ChunkedArray:
    """A filter mask of the rows of split ``name`` (``train``, ``val`` or ``test``)."""
    return pc.equal(table["split"], name)


def iter_paths(root: Path, rel_paths: Iterable[str]) -> Iterator[str]:
    """Absolute paths for manifest paths, refusing any that escape the data root."""
    root = root.resolve()
    for rel in rel_paths:
        full = (root / rel).resolve()
        if not full.is_relative_to(root):
            raise DataError(f"manifest path {rel!r} lies outside the data root {root}")
        yield str(full)


def load_splits(path: str | Path, cwd: str | Path = ".") -> tuple[pa.Table, Path, str]:
    """Read a splits (or folds) table and resolve the data root recorded in its metadata
    (a relative source against ``cwd``, the project root)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    source = meta.get(b"source", b"").decode()
    if not source:
        raise DataError(f"{path}: no data source recorded in its metadata; rerun `dvc repro split`")
    root = meta[b"root"].decode() if b"root" in meta else None
    return table, resolve_root(source, cwd, root), source


def is_multilabel(table: pa.Table) -> bool:
    """Whether a manifest, splits, folds or views table is of a multi-label task: its
    metadata says so, or it has the ``labels`` (label set) column."""
    return ((table.schema.metadata or {}).get(b"task", b"") == b"multilabel"
            or "labels" in table.column_names)


def class_names(table: pa.Table) -> list[str]:
    """The classes (multi-label: the label vocabulary) of a table, sorted: the model's output
    order. A multi-label table records its vocabulary in its metadata (labels may be absent
    from a part of it)."""
    stored = (table.schema.metadata or {}).get(b"classes")
    if stored:
        return list(json.loads(stored))
    if "labels" in table.column_names:  # multi-label without metadata: the labels present
        return sorted({name for names in table["labels"].to_pylist() for name in names})
    return sorted(set(table["label"].to_pylist()))


def label_matrix(labels: Sequence[Sequence[str]], classes: list[str]) -> np.ndarray:
    """Multi-hot (n, len(classes)) float32 targets of multi-label rows' label lists."""
    index = {name: i for i, name in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), np.float32)
    for row, names in enumerate(labels):
        for name in names:
            out[row, index[name]] = 1.0
    return out


def training_labels(table: pa.Table) -> list[str]:
    """The labels of every row training may see (train and val, never test): what the
    positive class of a binary task is chosen from, for the test report and CV alike."""
    return table.filter(pc.invert(is_split(table, "test")))["label"].to_pylist()


def rows_of(table: pa.Table, root: Path, classes: list[str]) -> Rows:
    """Paths (checked to lie under ``root``), label indices into ``classes`` (multi-label: the
    multi-hot matrix) and sha256 keys."""
    paths = list(iter_paths(root, table["path"].to_pylist()))
    if is_multilabel(table):
        labels = label_matrix(table["labels"].to_pylist(), classes)
    else:
        index = {name: i for i, name in enumerate(classes)}
        labels = np.asarray([index[label] for label in table["label"].to_pylist()],
                            dtype=np.int32)
    keys = table["sha256"].to_pylist() if "sha256" in table.column_names else None
    return Rows(paths, labels, keys)


def training_rows(splits: pa.Table, root: Path) -> TrainingData:
    """Train and val rows of a splits table; the test rows are discarded here."""
    classes = class_names(splits)
    return TrainingData(train=rows_of(splits.filter(is_split(splits, "train")), root, classes),
                        val=rows_of(splits.filter(is_split(splits, "val")), root, classes),
                        classes=classes)
