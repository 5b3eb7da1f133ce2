"""Data sources: where the images of a ``data.source`` live and which files are candidates.

A source is the ELPV demo (``elpv``, from the installed ``elpv-dataset`` package), a label
file (``.csv``/``.parquet``, :mod:`unfreeze.dataset.labelfile`) or a folder of class
subfolders::

    root/<class>/<image>                 group = null
    root/<class>/<group>/.../<image>     group = first subfolder under the class (patient, device)

Listing rules (checked and documented in the README):
- class folders are the root's immediate subfolders; hidden ones (``.x``) and ``__MACOSX`` are
  ignored; files directly in the root are ignored and listed;
- hidden and system files (``.DS_Store``, ``._x``, ``Thumbs.db``, ``desktop.ini``) are ignored
  and listed;
- directory symlinks are not followed;
- file or folder names that are not valid UTF-8 become candidates with a problem (rejected);
- a class folder without any image file is ignored and listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from unfreeze.config.errors import DataError
from unfreeze.config.params import LABEL_FILE_SUFFIXES
from unfreeze.io import sha256_file

ELPV = "elpv"
SYSTEM_FILES = {".ds_store", "thumbs.db", "desktop.ini"}
IGNORED_DIRS = {"__macosx"}


@dataclass(frozen=True)
class Candidate:
    """A file that should be an image of class ``label``."""

    path: str  # posix path relative to the data root
    label: str
    group: str | None = None
    extra: tuple[tuple[str, object], ...] = ()
    problem: str = ""  # a reason to reject found while listing (e.g. a non-UTF-8 name)


def resolve_root(source: str, cwd: str | Path = ".", root: str | None = None) -> Path:
    """Return the folder that manifest paths are relative to, for a ``data.source`` value
    (and ``data.root``, for a label file: default, the label file's folder)."""
    if source == ELPV:
        try:
            import elpv_dataset
        except ImportError:
            raise DataError(
                "data.source is `elpv` but the demo package is not installed: "
                "run `pip install -e .[demo]` (or `pip install elpv-dataset`)"
            ) from None
        return Path(elpv_dataset.__file__).resolve().parent / "data"
    if is_label_file(source):
        file = label_file(source, cwd)
        folder = (Path(cwd) / root).resolve() if root is not None else file.parent
        if not folder.is_dir():
            raise DataError(f"data.root: folder {root!r} does not exist (resolved to {folder}); "
                            "give the folder the label file's paths are relative to, or null")
        return folder
    folder = (Path(cwd) / source).resolve()
    if not folder.is_dir():
        raise DataError(
            f"data.source: folder {source!r} does not exist (resolved to {folder}); give `elpv`,"
            " a path to a folder of class subfolders, or a .csv / .parquet label file"
        )
    return folder


def is_label_file(source: str) -> bool:
    """Whether ``data.source`` names a label file (``.csv`` or ``.parquet``)."""
    return source.lower().endswith(LABEL_FILE_SUFFIXES)


def label_file(source: str, cwd: str | Path = ".") -> Path:
    """The label file ``source`` names, resolved; a missing one is a :class:`DataError`."""
    file = (Path(cwd) / source).resolve()
    if not file.is_file():
        raise DataError(f"data.source: label file {source!r} does not exist (resolved to "
                        f"{file}); give a .csv / .parquet file with one row per image")
    return file


def elpv_candidates(root: Path, labels: str) -> list[Candidate]:
    """List the ELPV demo images with labels from the package's ``labels.csv``.

    ``binary``: ``defective`` when the defect probability is > 0.5, else ``functional``.
    ``four_class``: one class per probability 0, 1/3, 2/3, 1 (``p0``, ``p33``, ``p67``, ``p100``).
    ``multilabel``: two labels per cell, ``defect`` (probability >= 1/3: any annotator doubt
    counts) and ``mono`` (a monocrystalline cell; polycrystalline cells lack it). The second
    label is a real property of each cell, not a defect.
    """
    out = []
    for line in (root / "labels.csv").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rel, prob_text, module_type = line.split()
        prob = float(prob_text)
        extra: tuple[tuple[str, object], ...] = (
            ("defect_probability", prob), ("module_type", module_type))
        if labels == "binary":
            label = "defective" if prob > 0.5 else "functional"
        elif labels == "four_class":
            label = f"p{round(prob * 100):d}"
        else:
            names = ["defect"] * (prob >= 1 / 3 - 1e-9) + ["mono"] * (module_type == "mono")
            label, extra = ";".join(names), (*extra, ("labels", names))
        out.append(Candidate(path=rel, label=label, extra=extra))
    return out


def is_ignored_name(name: str) -> bool:
    """Hidden and system files/folders that are never images of a class."""
    return name.startswith(".") or name.lower() in SYSTEM_FILES | IGNORED_DIRS


def safe_name(name: str) -> str:
    """``name`` itself when it is valid UTF-8, else with the bad bytes escaped (\\xNN)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def folder_candidates(root: Path) -> tuple[list[Candidate], list[dict[str, str]]]:
    """Walk class folders under ``root``; return candidates and ignored entries (path, reason)."""
    candidates: list[Candidate] = []
    ignored: list[dict[str, str]] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if is_ignored_name(entry.name):
            ignored.append({"path": entry.name, "reason": "hidden or system entry"})
        elif entry.is_symlink() and entry.is_dir():
            ignored.append({"path": entry.name, "reason": "symlinked class folder not followed"})
        elif not entry.is_dir():
            ignored.append({"path": safe_name(entry.name),
                            "reason": "file outside any class folder"})
        elif safe_name(entry.name) != entry.name:
            ignored.append({"path": safe_name(entry.name),
                            "reason": "class folder name is not valid UTF-8; rename it"})
        else:
            found = _walk_class(root, Path(entry.path), entry.name, ignored)
            if not found:
                ignored.append({"path": entry.name,
                                "reason": "empty class folder (no image files): not a class"})
            candidates.extend(found)
    return candidates, ignored


def _walk_class(root: Path, class_dir: Path, label: str, ignored: list[dict[str, str]]
                ) -> list[Candidate]:
    out = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            if is_ignored_name(d) or (here / d).is_symlink():
                ignored.append({"path": _rel(root, here / d), "reason": "hidden, system or "
                                "symlinked folder not followed"})
                dirnames.remove(d)
        dirnames.sort()
        for name in sorted(filenames):
            raw = _rel(root, here / name)
            rel = safe_name(raw)
            if is_ignored_name(name):
                ignored.append({"path": rel, "reason": "hidden or system file"})
                continue
            parts = Path(rel).parts
            group = parts[1] if len(parts) > 2 else None
            problem = "" if rel == raw else "file or folder name is not valid UTF-8; rename it"
            out.append(Candidate(path=rel, label=label, group=group, problem=problem))
    return out


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def listing(root: str | Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (folder symlinks not followed): relative posix path →
    (size, mtime in ns). A stat per file, no file is read; strings, not Path objects, because
    this runs on every `dvc repro` over every image."""
    out: dict[str, tuple[int, int]] = {}
    pending = [(os.fspath(root), "")]
    while pending:
        folder, prefix = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # removed while listing, or unreadable: absent (as os.walk)
            continue
        for entry in entries:
            rel = prefix + entry.name
            with contextlib.suppress(FileNotFoundError):
                if entry.is_dir():
                    if not entry.is_symlink():  # folder symlinks are not followed
                        pending.append((entry.path, rel + "/"))
                else:
                    st = entry.stat()  # follows a file symlink, as Path.stat did
                    out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def listed(root: str | Path, rel_paths: Iterable[str]) -> dict[str, tuple[int, int]]:
    """As :func:`listing`, for the files ``rel_paths`` only (a label file's rows): the ones
    that exist, each stat'ed once."""
    out: dict[str, tuple[int, int]] = {}
    for rel in rel_paths:
        with contextlib.suppress(OSError):
            st = os.stat(os.path.join(root, rel))
            if stat.S_ISREG(st.st_mode):
                out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def fingerprint(root: str | Path, known: dict[str, list] | None = None,
                only: Iterable[str] | None = None) -> tuple[dict, dict[str, list]]:
    """What the data under ``root`` is: the sha256 of every file's relative path and content
    hash, plus file count and bytes. ``known`` (path → [size, mtime_ns, sha256], from the
    previous call) spares reading a file whose size and mtime did not change; the second
    value is the table to keep for the next call. ``only``: those files (relative paths)
    instead of every file under ``root`` — a label file's images, not the folder it lies in
    (which may hold the pipeline's own outputs)."""
    known = known or {}
    table: dict[str, list] = {}
    digest = hashlib.sha256()
    files = listing(root) if only is None else listed(root, only)
    for rel, (size, mtime) in sorted(files.items()):
        old = known.get(rel)
        sha = old[2] if old and old[0] == size and old[1] == mtime else sha256_file(
            Path(root) / rel)
        table[rel] = [size, mtime, sha]
        digest.update(f"{rel}\0{sha}\n".encode("utf-8", "surrogateescape"))  # any name
    summary = {"files": len(table), "bytes": sum(v[0] for v in table.values()),
               "fingerprint": digest.hexdigest()}
    return summary, table
