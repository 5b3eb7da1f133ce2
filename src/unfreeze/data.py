"""Data helpers every stage shares: the data root of a source, usable manifest rows, safe
absolute paths, and reading a splits table with its recorded source."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa

ELPV = "elpv"


class DataError(ValueError):
    """The data source cannot be used; the message names the file, class or count."""


def resolve_root(source: str, cwd: str | Path = ".") -> Path:
    """Return the folder that manifest paths are relative to, for a ``data.source`` value."""
    if source == ELPV:
        try:
            import elpv_dataset
        except ImportError:
            raise DataError(
                "data.source is `elpv` but the demo package is not installed: "
                "run `pip install -e .[demo]` (or `pip install elpv-dataset`)"
            ) from None
        return Path(elpv_dataset.__file__).resolve().parent / "data"
    root = (Path(cwd) / source).resolve()
    if not root.is_dir():
        raise DataError(
            f"data.source: folder {source!r} does not exist (resolved to {root}); "
            "give `elpv` or a path to a folder of class subfolders"
        )
    return root


def ok_rows(table: pa.Table) -> pa.Table:
    """Only the usable images of a manifest."""
    import pyarrow.compute as pc

    return table.filter(pc.equal(table["status"], "ok"))


def iter_paths(root: Path, rel_paths: Iterable[str]) -> Iterator[str]:
    """Absolute paths for manifest paths, refusing any that escape the data root."""
    root = root.resolve()
    for rel in rel_paths:
        full = (root / rel).resolve()
        if not full.is_relative_to(root):
            raise DataError(f"manifest path {rel!r} lies outside the data root {root}")
        yield str(full)


def load_splits(path: str | Path) -> tuple[pa.Table, Path, str]:
    """Read a splits table and resolve the data root recorded in its metadata."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    source = (table.schema.metadata or {}).get(b"source", b"").decode()
    if not source:
        raise DataError(f"{path}: no data source recorded in its metadata; rerun `dvc repro split`")
    return table, resolve_root(source), source
