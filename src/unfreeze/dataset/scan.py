"""Scanning a data source into the manifest: one checked row per candidate image (`prepare`).

Which files are candidates is the source's business (:mod:`unfreeze.dataset.sources`). Here
every candidate is checked (rules documented in the README):
- every file is opened and fully decoded with Pillow; accepted formats are those the training
  input pipeline decodes (JPEG, PNG, BMP, GIF — first frame); anything else is rejected with
  the reason;
- file symlinks must point inside the root;
- an image whose header declares more than ``data.max_pixels`` pixels is refused before it is
  decoded (decompression bombs);
- EXIF orientation is ignored: pixels are used as stored, in training and prediction alike,
  and the manifest's ``note`` says so; an animated GIF contributes its first frame (noted);
- the same content (sha256) under two classes (multi-label: two label sets) stops the stage
  with the list of conflicts;
- multi-label: every label needs at least 3 usable images; an image may have no label.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
from PIL import Image

from unfreeze.config.errors import DataError
from unfreeze.config.params import MAX_PIXELS, DataParams
from unfreeze.dataset.labelfile import label_file_candidates
from unfreeze.dataset.sources import (
    ELPV,
    Candidate,
    elpv_candidates,
    folder_candidates,
    label_file,
    resolve_root,
)

ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF")
MANIFEST_COLUMNS = ("path", "label", "group", "sha256", "width", "height", "mode", "format",
                    "status", "reason", "note")
EXIF_ORIENTATION = 0x0112


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


def check_header(im: Image.Image, max_pixels: int) -> str:
    """Why an opened (not yet decoded) image is refused by its header, or "" if it is not."""
    fmt, (width, height) = im.format or "", im.size
    if fmt not in ACCEPTED_FORMATS:
        return (f"format {fmt or 'unknown'} is not supported; convert to one of "
                f"{', '.join(ACCEPTED_FORMATS)}")
    if width * height > max_pixels:
        return (f"refused before decoding: {width}×{height} = {width * height} pixels > "
                f"data.max_pixels ({max_pixels})")
    return ""


def inspect_image(path: str | Path | BinaryIO, max_pixels: int, decode: bool
                  ) -> tuple[str, dict]:
    """Open ``path`` (or an open binary file: an upload) with Pillow: ``("", facts)`` when
    its header passes the rules (and, with ``decode``, every pixel decodes), else
    ``(reason, facts known so far)``."""
    facts: dict = {}
    try:
        with Image.open(path) as im:
            facts = {"format": im.format or "", "mode": im.mode, "width": im.size[0],
                     "height": im.size[1]}
            refused = check_header(im, max_pixels)
            if refused:
                return refused, facts
            if decode:  # the notes read metadata that may lie past the header
                facts["note"] = _note(im)
                im.load()
    except Image.DecompressionBombError as exc:
        return f"refused before decoding: {exc}", facts
    except FileNotFoundError:
        return "no such file", facts
    except (OSError, SyntaxError, ValueError) as exc:
        return f"cannot decode image: {exc}", facts
    return "", facts


def header_problem(path: str | Path | BinaryIO, max_pixels: int = MAX_PIXELS) -> str:
    """Why a file is refused from its header alone (no pixel decoded), or "" if it is not."""
    return inspect_image(path, max_pixels, decode=False)[0]


def check_image(root: Path, candidate: Candidate, max_pixels: int = MAX_PIXELS) -> Record:
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
    reason, facts = inspect_image(path, max_pixels, decode=True)
    if reason:
        return Record(**base, **hashed, status="rejected", reason=reason)
    return Record(**base, sha256=digest, status="ok", reason="", **facts)


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
              max_pixels: int = MAX_PIXELS) -> list[Record]:
    """Check every candidate, with a progress bar on stderr for long scans."""
    iterator: Iterable[Candidate] = candidates
    if progress and len(candidates) > 200:
        from tqdm import tqdm

        iterator = tqdm(candidates, desc="checking images", unit="img", mininterval=2.0,
                        file=sys.stderr)
    return [check_image(root, c, max_pixels) for c in iterator]


def manifest_table(candidates: list[Candidate], records: list[Record], params: DataParams,
                   classes: list[str] | None = None) -> pa.Table:
    """Assemble the manifest: checked columns plus any extra columns the source provides.

    Metadata: ``source`` (and ``root``, when set) for the later stages to find the images;
    multi-label: ``task`` and ``classes``, the label vocabulary (model output order)."""
    rows = [asdict(r) for r in records]
    for row, cand in zip(rows, candidates, strict=True):
        row.update(dict(cand.extra))
    table = pa.Table.from_pylist(rows)
    meta = {b"source": params.source.encode()}
    if params.root is not None:
        meta[b"root"] = params.root.encode()
    if classes is not None:
        index = table.schema.get_field_index("labels")
        table = table.set_column(index, "labels", table["labels"].cast(pa.list_(pa.string())))
        meta |= {b"task": b"multilabel", b"classes": json.dumps(classes).encode()}
    return table.replace_schema_metadata(meta)


def summarize(records: list[Record], ignored: list[dict[str, str]],
              candidates: list[Candidate] | None = None) -> dict:
    """The data report: counts per class, rejected files with reasons (and label-file row
    numbers), ignored entries."""
    ok = [r for r in records if r.status == "ok"]
    rows = [dict(c.extra).get("row") for c in candidates] if candidates else [None] * len(records)
    rejected = [{"path": r.path, "label": r.label, "reason": r.reason} | (
                {"row": row} if row is not None else {})
                for r, row in zip(records, rows, strict=True) if r.status != "ok"]
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


def label_counts(candidates: list[Candidate], records: list[Record]) -> dict[str, int]:
    """Multi-label: usable images per label (an image counts once for each of its labels)."""
    counts: Counter[str] = Counter()
    for cand, rec in zip(candidates, records, strict=True):
        if rec.status == "ok":
            counts.update(dict(cand.extra)["labels"])
    return dict(sorted(counts.items()))


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


def check_classes(counts: dict[str, int], minimum: int = 3,
                  where: str = "each class is a subfolder of data.source") -> None:
    """Stop when fewer than 2 classes remain or a class has fewer than ``minimum`` images;
    ``where`` says where classes come from."""
    if len(counts) < 2:
        raise DataError(
            f"need at least 2 classes with usable images, found {len(counts)}: "
            f"{counts or 'none'}; {where}"
        )
    check_minimum(counts, minimum, "class", "small classes")


def check_labels(counts: dict[str, int], no_label: int, minimum: int = 3) -> None:
    """Multi-label: stop when no label is left or a label has fewer than ``minimum`` images."""
    if not counts:
        raise DataError(f"multilabel task without any label: all {no_label} usable image(s) "
                        "have none; check data.label_column / data.multilabel_columns")
    check_minimum(counts, minimum, "label", "rare labels")


def check_minimum(counts: dict[str, int], minimum: int, kind: str, plural: str) -> None:
    """Stop when a class (or label) has fewer than ``minimum`` usable images."""
    small = {k: v for k, v in counts.items() if v < minimum}
    if small:
        name, n = next(iter(small.items()))
        raise DataError(
            f"{kind} {name!r} has {n} usable image(s); every {kind} needs at least {minimum} "
            f"(one each for train, val and test); {plural}: {small}"
            + (" — drop or merge them" if kind == "label" else "")
        )


def list_candidates(params: DataParams, root: Path, cwd: str | Path, multilabel: bool
                    ) -> tuple[list[Candidate], list[dict[str, str]]]:
    """The source's candidates and ignored entries (demo, label file or class folders)."""
    if params.source == ELPV:
        return elpv_candidates(root, params.elpv_labels), []
    if params.is_label_file:
        file = label_file(params.source, cwd)
        return label_file_candidates(file, root, params, multilabel), []
    if multilabel:
        raise DataError(f"task: multilabel needs a label file as data.source (got the folder "
                        f"{params.source!r}: class folders hold one class per image); see the "
                        "README, 'Multi-label'")
    return folder_candidates(root)


def scan(params: DataParams, cwd: str | Path = ".", progress: bool = True,
         task: str = "multiclass") -> tuple[pa.Table, dict]:
    """Scan ``params.source``: return the manifest table and the data report."""
    multilabel = task == "multilabel"
    root = resolve_root(params.source, cwd, params.root)
    candidates, ignored = list_candidates(params, root, cwd, multilabel)
    records = check_all(root, candidates, progress, params.max_pixels)
    check_label_conflicts(records)
    report = summarize(records, ignored, candidates)
    report["source"] = params.source
    if params.on_bad_file == "fail" and report["rejected"]:
        first = report["rejected"][0]
        raise DataError(
            f"{report['n_rejected']} bad file(s) and data.on_bad_file is `fail`; first: "
            f"{first['path']}: {first['reason']} (set data.on_bad_file: skip to skip and report)"
        )
    if not multilabel:
        check_classes(report["classes"], where=(
            f"classes are the values of column {params.label_column!r} (data.label_column) "
            f"of {params.source}" if params.is_label_file
            else "each class is a subfolder of data.source"))
        return manifest_table(candidates, records, params), report
    counts = label_counts(candidates, records)
    report |= {"task": "multilabel", "label_sets": report["classes"], "classes": counts,
               "no_label": report["classes"].get("", 0)}
    check_labels(counts, report["n_ok"])
    return manifest_table(candidates, records, params, sorted(counts)), report
