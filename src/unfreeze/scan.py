"""Scanning a data source into the manifest: one checked row per candidate image (`prepare`).

Sources are either the ELPV demo (``elpv``, from the installed ``elpv-dataset`` package) or a
folder of class subfolders::

    root/<class>/<image>                 group = null
    root/<class>/<group>/.../<image>     group = first subfolder under the class (patient, device)

Rules (documented in the README):
- class folders are the root's immediate subfolders; hidden ones (``.x``) and ``__MACOSX`` are
  ignored; files directly in the root are ignored and listed;
- hidden and system files (``.DS_Store``, ``._x``, ``Thumbs.db``, ``desktop.ini``) are ignored
  and counted;
- every other file is opened and fully decoded with Pillow; accepted formats are those the
  training input pipeline decodes (JPEG, PNG, BMP, GIF — first frame); anything else is rejected
  with the reason;
- directory symlinks are not followed; file symlinks must point inside the root;
- an image whose header declares more than ``data.max_pixels`` pixels is refused before it is
  decoded (decompression bombs);
- file or folder names that are not valid UTF-8 are refused and reported (escaped);
- EXIF orientation is ignored: pixels are used as stored, in training and prediction alike,
  and the manifest's ``note`` says so; an animated GIF contributes its first frame (noted);
- a class folder without any image file is ignored and listed;
- the same content (sha256) under two classes stops the stage with the list of conflicts.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image

from unfreeze.data import ELPV, DataError, resolve_root
from unfreeze.params import DataParams

ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF")
SYSTEM_FILES = {".ds_store", "thumbs.db", "desktop.ini"}
IGNORED_DIRS = {"__macosx"}
MANIFEST_COLUMNS = ("path", "label", "group", "sha256", "width", "height", "mode", "format",
                    "status", "reason", "note")
EXIF_ORIENTATION = 0x0112


class _Refused(Exception):
    """A file that opens but is refused by a rule (format, size)."""


@dataclass(frozen=True)
class Candidate:
    """A file that should be an image of class ``label``."""

    path: str  # posix path relative to the data root
    label: str
    group: str | None = None
    extra: tuple[tuple[str, object], ...] = ()
    problem: str = ""  # a reason to reject found while listing (e.g. a non-UTF-8 name)


@dataclass(frozen=True)
class Record:
    """One manifest row: the candidate plus what checking the file found."""

    path: str
    label: str
    group: str | None
    sha256: str
    width: int
    height: int
    mode: str
    format: str
    status: str  # "ok" or "rejected"
    reason: str
    note: str = ""  # what was done to an accepted file (first GIF frame, EXIF ignored)


def check_image(root: Path, candidate: Candidate, max_pixels: int = 100_000_000) -> Record:
    """Open and fully decode one file; return its manifest record (``ok`` or ``rejected``).

    The pixel count is checked from the header, before decoding (decompression bombs).
    """
    path = root / candidate.path
    base = {"path": candidate.path, "label": candidate.label, "group": candidate.group}
    empty = {"sha256": "", "width": 0, "height": 0, "mode": "", "format": ""}
    reason = candidate.problem or _outside_root_reason(root, path)
    if reason:
        return Record(**base, **empty, status="rejected", reason=reason)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Record(**base, **empty, status="rejected", reason=f"unreadable: {exc.strerror}")
    digest = hashlib.sha256(data).hexdigest()
    hashed = {**empty, "sha256": digest}
    if not data:
        return Record(**base, **hashed, status="rejected", reason="empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            fmt, mode, (width, height) = im.format or "", im.mode, im.size
            if fmt not in ACCEPTED_FORMATS:
                raise _Refused(f"format {fmt or 'unknown'} is not supported; convert to "
                                f"one of {', '.join(ACCEPTED_FORMATS)}")
            if width * height > max_pixels:
                raise _Refused(f"refused before decoding: {width}×{height} = "
                                f"{width * height} pixels > data.max_pixels ({max_pixels})")
            note = _note(im)
            im.load()
    except Image.DecompressionBombError as exc:
        return Record(**base, **hashed, status="rejected",
                      reason=f"refused before decoding: {exc}")
    except _Refused as exc:
        return Record(**base, **hashed, status="rejected", reason=str(exc))
    except (OSError, SyntaxError, ValueError) as exc:
        return Record(**base, **hashed, status="rejected", reason=f"cannot decode image: {exc}")
    return Record(**base, sha256=digest, width=width, height=height, mode=mode, format=fmt,
                  status="ok", reason="", note=note)


def _note(im: Image.Image) -> str:
    """What the input pipeline will do differently from a photo viewer, if anything."""
    notes = []
    if getattr(im, "is_animated", False):
        notes.append(f"animated ({im.n_frames} frames): first frame used")
    orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        notes.append(f"EXIF orientation {orientation} ignored: pixels used as stored")
    return "; ".join(notes)


def _outside_root_reason(root: Path, path: Path) -> str:
    try:
        path.resolve(strict=True).relative_to(root.resolve())
    except (ValueError, RuntimeError):
        return "symlink points outside the data root"
    except OSError:
        return "file vanished or is a broken symlink"
    return ""


def check_all(root: Path, candidates: list[Candidate], progress: bool = True,
              max_pixels: int = 100_000_000) -> list[Record]:
    """Check every candidate, with a progress bar on stderr for long scans."""
    iterator: Iterable[Candidate] = candidates
    if progress and len(candidates) > 200:
        from tqdm import tqdm

        iterator = tqdm(candidates, desc="checking images", unit="img", mininterval=2.0,
                        file=sys.stderr)
    return [check_image(root, c, max_pixels) for c in iterator]


def is_ignored_name(name: str) -> bool:
    """Hidden and system files/folders that are never images of a class."""
    return name.startswith(".") or name.lower() in SYSTEM_FILES | IGNORED_DIRS


def elpv_candidates(root: Path, labels: str) -> list[Candidate]:
    """List the ELPV demo images with labels from the package's ``labels.csv``.

    ``binary``: ``defective`` when the defect probability is > 0.5, else ``functional``.
    ``four_class``: one class per probability 0, 1/3, 2/3, 1 (``p0``, ``p33``, ``p67``, ``p100``).
    """
    out = []
    for line in (root / "labels.csv").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rel, prob_text, module_type = line.split()
        prob = float(prob_text)
        if labels == "binary":
            label = "defective" if prob > 0.5 else "functional"
        else:
            label = f"p{round(prob * 100):d}"
        extra = (("defect_probability", prob), ("module_type", module_type))
        out.append(Candidate(path=rel, label=label, extra=extra))
    return out


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


def safe_name(name: str) -> str:
    """``name`` itself when it is valid UTF-8, else with the bad bytes escaped (\\xNN)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


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


def manifest_table(candidates: list[Candidate], records: list[Record], source: str) -> pa.Table:
    """Assemble the manifest: checked columns plus any extra columns the source provides."""
    rows = [asdict(r) for r in records]
    for row, cand in zip(rows, candidates, strict=True):
        row.update(dict(cand.extra))
    table = pa.Table.from_pylist(rows)
    return table.replace_schema_metadata({b"source": source.encode()})


def summarize(records: list[Record], ignored: list[dict[str, str]]) -> dict:
    """The data report: counts per class, rejected files with reasons, ignored entries."""
    ok = [r for r in records if r.status == "ok"]
    rejected = [{"path": r.path, "label": r.label, "reason": r.reason}
                for r in records if r.status != "ok"]
    return {
        "n_candidates": len(records),
        "n_ok": len(ok),
        "n_rejected": len(rejected),
        "n_ignored": len(ignored),
        "classes": dict(sorted(Counter(r.label for r in ok).items())),
        "rejected": rejected,
        "notes": [{"path": r.path, "note": r.note} for r in ok if r.note],
        "ignored": ignored,
    }


def check_label_conflicts(records: list[Record]) -> None:
    """Stop when the same image content appears under two classes (a labelling error)."""
    labels: dict[str, dict[str, str]] = {}
    for r in records:
        if r.status == "ok":
            labels.setdefault(r.sha256, {}).setdefault(r.label, r.path)
    conflicts = [paths for paths in labels.values() if len(paths) > 1]
    if conflicts:
        shown = "; ".join(" vs ".join(f"{p} ({label})" for label, p in sorted(c.items()))
                          for c in conflicts[:10])
        raise DataError(f"{len(conflicts)} image(s) appear with identical content under "
                        f"different classes: {shown}; remove or relabel them")


def check_classes(counts: dict[str, int], minimum: int = 3) -> None:
    """Stop when fewer than 2 classes remain or a class has fewer than ``minimum`` images."""
    if len(counts) < 2:
        raise DataError(
            f"need at least 2 classes with usable images, found {len(counts)}: "
            f"{counts or 'none'}; each class is a subfolder of data.source"
        )
    small = {k: v for k, v in counts.items() if v < minimum}
    if small:
        name, n = next(iter(small.items()))
        raise DataError(
            f"class {name!r} has {n} usable image(s); every class needs at least {minimum} "
            f"(one each for train, val and test); small classes: {small}"
        )


def scan(params: DataParams, cwd: str | Path = ".", progress: bool = True
         ) -> tuple[pa.Table, dict]:
    """Scan ``params.source``: return the manifest table and the data report."""
    root = resolve_root(params.source, cwd)
    if params.source == ELPV:
        candidates, ignored = elpv_candidates(root, params.elpv_labels), []
    else:
        candidates, ignored = folder_candidates(root)
    records = check_all(root, candidates, progress, params.max_pixels)
    check_label_conflicts(records)
    report = summarize(records, ignored)
    report["source"] = params.source
    if params.on_bad_file == "fail" and report["rejected"]:
        first = report["rejected"][0]
        raise DataError(
            f"{report['n_rejected']} bad file(s) and data.on_bad_file is `fail`; first: "
            f"{first['path']}: {first['reason']} (set data.on_bad_file: skip to skip and report)"
        )
    check_classes(report["classes"])
    return manifest_table(candidates, records, params.source), report
