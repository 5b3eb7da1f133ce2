"""Label files: a CSV or Parquet table with one row per image (``data.source: labels.csv``).

Format (README, "Label files")::

    path,label,patient_id,site            # names set by data.path_column / data.label_column
    scans/p01/a.png,effusion,p01,north    # multilabel: `effusion;cardiomegaly`, "" = no label
    /abs/path/inside/root/b.png,normal,p02,south

Rules, each checked per row (``row`` = 1-based data row; a CSV's line is row + 1):
- paths are relative to ``data.root`` (default: the label file's folder) or absolute inside
  it; a path escaping the root, an empty path or a missing file rejects the row with the
  reason and its row number (reported, never a crash);
- the same path on two rows stops the stage, listing the rows;
- an empty label (multiclass) rejects the row; multilabel: labels are separator-joined
  (``data.label_separator``; empty = the image has no label) or one 0/1 column per label
  (``data.multilabel_columns``); any other value rejects the row;
- every other column is kept in the manifest (``split.group_by: patient_id`` works); a column
  named ``group`` becomes the manifest's group; one named like another manifest column stops
  the stage (rename it).
"""

from __future__ import annotations

import csv as stdlib_csv
import os
from pathlib import Path

import pyarrow as pa

from unfreeze.config.errors import DataError
from unfreeze.config.params import DataParams
from unfreeze.dataset.sources import Candidate

RESERVED = ("label", "labels", "sha256", "width", "height", "mode", "format", "status",
            "reason", "note", "row")
TRUE, FALSE = ("1", "1.0", "true", "yes"), ("0", "0.0", "false", "no")


def read_label_file(path: Path, params: DataParams) -> pa.Table:
    """The label file as a table (a CSV's columns all as text: ``007`` stays ``007``); errors
    name the file, the missing column or its wrong type, and the param that names it."""
    try:
        if path.suffix.lower() == ".csv":
            from pyarrow import csv

            with path.open(newline="", encoding="utf-8") as f:
                header = next(stdlib_csv.reader(f), [])
            table = csv.read_csv(path, convert_options=csv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False))
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
    except (OSError, UnicodeDecodeError, pa.ArrowInvalid) as exc:
        raise DataError(f"data.source: cannot read label file {path}: {exc}") from None
    wanted = [("path_column", params.path_column)]
    wanted += ([("multilabel_columns", c) for c in params.multilabel_columns]
               if params.multilabel_columns else [("label_column", params.label_column)])
    for key, column in wanted:
        if column not in table.column_names:
            raise DataError(f"{path}: no column {column!r} (data.{key}); the file has "
                            f"{', '.join(table.column_names)}: set data.{key} to one of them")
        kind = table.schema.field(column).type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        listed = pa.types.is_list(kind) and pa.types.is_string(kind.value_type)
        fine = {"path_column": text, "label_column": text or listed or pa.types.is_null(kind),
                "multilabel_columns": not (pa.types.is_floating(kind) or pa.types.is_nested(
                    kind))}[key]
        if not fine:
            raise DataError(f"{path}: column {column!r} (data.{key}) holds {kind} values; "
                            "paths and labels must be text (labels: a list of text too), "
                            "0/1 columns integers, booleans or text")
    return table


def label_file_candidates(path: Path, root: Path, params: DataParams, multilabel: bool
                          ) -> list[Candidate]:
    """One candidate per row of the label file; a bad row becomes a candidate with a problem."""
    table = read_label_file(path, params)
    used = {params.path_column, params.label_column, *(params.multilabel_columns or ())}
    if params.multilabel_columns:
        used.discard(params.label_column)
    extra_names = [c for c in table.column_names if c not in used]
    clash = [c for c in extra_names if c in RESERVED or c == "path"]
    if clash:
        raise DataError(f"{path}: column {clash[0]!r} has the name of a manifest column "
                        f"({', '.join(('path', *RESERVED))}); rename it in the label file")
    joined = [c for c in params.multilabel_columns or () if ";" in c]
    if joined:
        raise DataError(f"{path}: label column {joined[0]!r} (data.multilabel_columns) holds "
                        "`;`, which joins label sets in the reports and predictions; rename it")
    records = table.to_pylist()
    out = [_candidate(i + 1, rec, root, params, multilabel, extra_names)
           for i, rec in enumerate(records)]
    check_duplicate_paths(path, out)
    return out


def _candidate(row: int, rec: dict, root: Path, params: DataParams, multilabel: bool,
               extra_names: list[str]) -> Candidate:
    rel, problem = _relative(rec.get(params.path_column), root)
    labels, label_problem = _labels(rec, params, multilabel)
    problem = problem or label_problem
    extra = [("row", row), *((name, rec[name]) for name in extra_names if name != "group")]
    if multilabel:
        extra.append(("labels", labels))
    label = ";".join(labels) if multilabel else (labels[0] if labels else "")  # ";": as
    # every report and prediction joins a label set
    group = rec.get("group")
    return Candidate(path=rel, label=label, group=None if group is None else str(group),
                     extra=tuple(extra), problem=f"row {row}: {problem}" if problem else "")


def _relative(value: object, root: Path) -> tuple[str, str]:
    """(posix path relative to ``root``, problem or ""): :func:`_inside`, then the file must
    exist."""
    rel, problem = _inside(value, root)
    if not problem and not (root / rel).is_file() and not (root / rel).is_symlink():
        return rel, f"no such file: {root / rel}"
    return rel, problem


def _inside(value: object, root: Path) -> tuple[str, str]:
    """(posix path relative to ``root``, problem or "") of a path cell, without touching the
    file: empty, or outside the root (an absolute path through a symlinked folder, /data ->
    /mnt/data, counts as inside when it resolves there)."""
    text = "" if value is None else str(value).strip()
    if not text:
        return "", "empty path"
    full = Path(os.path.normpath(root / text))  # absolute `text` replaces root here
    for candidate in (full, Path(os.path.realpath(full))):
        try:
            return candidate.relative_to(root).as_posix(), ""
        except ValueError:
            continue
    return text, f"path {text!r} lies outside the data root {root} (data.root)"


def _labels(rec: dict, params: DataParams, multilabel: bool) -> tuple[list[str], str]:
    """The row's labels (sorted, distinct) and a problem or ""."""
    if params.multilabel_columns:
        labels = []
        for column in params.multilabel_columns:
            value = str(rec[column]).strip().lower() if rec[column] is not None else ""
            if value not in TRUE + FALSE:
                return [], f"column {column!r} holds {rec[column]!r}; expected 0 or 1"
            if value in TRUE:
                labels.append(column)
        return sorted(labels), ""
    value = rec.get(params.label_column)
    if isinstance(value, list):  # a Parquet list<string> column: the labels themselves
        value = params.label_separator.join(x for x in value if x)
    if multilabel and ";" in str(value or "") and params.label_separator != ";":
        return [], (f"a label in {value!r} holds `;`, which joins label sets in the reports "
                    "and predictions; rename the label")
    text = "" if value is None else str(value).strip()
    if not multilabel:
        return ([text], "") if text else ([], f"empty label in column {params.label_column!r}")
    return sorted({p.strip() for p in text.split(params.label_separator) if p.strip()}), ""


def listed_paths(path: Path, root: Path, params: DataParams) -> list[str]:
    """The image paths (relative to ``root``) a label file's rows name, bad rows left out:
    what the `source` stage fingerprints."""
    table = read_label_file(path, params)
    rels = (_inside(value, root) for value in table[params.path_column].to_pylist())
    return sorted({rel for rel, problem in rels if not problem})  # each stat'ed once, later


def check_duplicate_paths(path: Path, candidates: list[Candidate]) -> None:
    """Stop when two rows name the same image (each would count twice in training)."""
    rows: dict[str, list[int]] = {}
    for c in candidates:
        if c.path:
            rows.setdefault(c.path, []).append(dict(c.extra)["row"])
    dups = {p: r for p, r in rows.items() if len(r) > 1}
    if dups:
        shown = "; ".join(f"{p} (rows {', '.join(map(str, r))})"
                          for p, r in list(dups.items())[:10])
        raise DataError(f"{path}: {len(dups)} path(s) appear on more than one row: {shown}; "
                        "keep one row per image")
