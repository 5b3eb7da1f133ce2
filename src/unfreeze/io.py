"""Atomic file writes (temp file in the same folder, then rename), small format helpers and the
sha256 of a file. The floor every layer stands on: imports no other unfreeze module."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pyarrow is imported where a table is written or read: the
    import pyarrow as pa  # light stages (`source`) start without it


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    The temporary name keeps the suffixes (Keras insists on ``.keras`` and ``.weights.h5``).
    On error the temporary file is removed and the previous ``path`` is left untouched. The
    file gets the permissions of a normally created one (the umask's, typically 0644).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.",
                                    suffix=f".tmp{''.join(path.suffixes)}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, permissions())  # mkstemp's 0600 would hide the file from a teammate
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (else set back)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def permissions(directory: bool = False) -> int:
    """The mode a new file (0666) or folder (0777) gets under the umask, e.g. 0644 / 0755."""
    return (0o777 if directory else 0o666) & ~current_umask()


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new temporary folder in ``parent`` with the umask's permissions (mkdtemp's are 0700),
    to be filled and then renamed into place."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, permissions(directory=True))
    return folder


def write_atomic(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | Path) -> Any:
    """Parse a JSON file (UTF-8)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(path: str | Path, table: pa.Table) -> Path:
    """Write an Arrow table to Parquet, atomically."""
    import pyarrow.parquet as pq

    return write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_parquet(path: str | Path) -> pa.Table:
    """Read a Parquet file into an Arrow table."""
    import pyarrow.parquet as pq

    return pq.read_table(path)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """Write dict rows as CSV with a header, atomically."""
    import csv

    def writer(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)

    return write_atomic(path, writer)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(value: Any) -> Any:
    """Make numpy scalars and paths JSON-serialisable."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
