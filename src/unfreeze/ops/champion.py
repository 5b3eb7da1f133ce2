"""Champion against challenger on the same images, before any promotion.

The promoted model (``production/current``, the champion) predicts the new run's test
split through `unfreeze predict`, in a subprocess (ops never imports TensorFlow), with its
own stored operating point (temperature, threshold, TTA). The new model's predictions of
those images are the evaluate stage's. :func:`compare_on_test` pairs the two per image and
returns :func:`unfreeze.evaluation.compare.paired_comparison` with ``comparable`` and the test
split's fingerprint, or ``comparable: False`` and why (another class set, a champion that
cannot be loaded). Test images the champion trained on are left out of the pairing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from unfreeze.config.errors import DataError
from unfreeze.config.params import RetrainParams
from unfreeze.dataset.rows import (
    is_multilabel,
    is_split,
    iter_paths,
    label_matrix,
    load_splits,
    training_labels,
)
from unfreeze.dataset.splits import split_fingerprint
from unfreeze.evaluation.compare import paired_comparison
from unfreeze.evaluation.metrics import positive_class
from unfreeze.io import read_json, read_parquet
from unfreeze.ops.promote import TRAINED_ON
from unfreeze.ops.snapshot import TEST_METRICS
from unfreeze.runtime import child_env

SPLITS = Path("data/splits.parquet")
PREDICTIONS = Path("reports/evaluate/predictions.parquet")
WORK_DIR = Path(".unfreeze/champion")
SEED = 0  # fixed: the same predictions always give the same interval


def compare_on_test(root: Path, challenger: Path, champion: Path, retrain: RetrainParams
                    ) -> dict:
    """Score ``champion`` (a release folder) on the test split of the project at ``root``
    and compare it with ``challenger`` (the bundle about to be promoted) image by image.

    Test images the champion trained or validated on (its release's ``trained_on.parquet``:
    a new split after new data may hold them) are left out of the comparison, so neither
    model is scored on an image it has seen; ``excluded_seen_by_champion`` counts them.
    """
    root = Path(root).resolve()
    missing = [str(f) for f in (SPLITS, PREDICTIONS) if not (root / f).is_file()]
    if missing:
        return {"comparable": False, "reason": f"the new run has no {' or '.join(missing)} "
                "to score it on (a pipeline without the split or evaluate stage)"}
    table, data_root, _ = load_splits(root / SPLITS, cwd=root)
    base = {"test_fingerprint": split_fingerprint(table)}
    classes = read_json(challenger / "meta.json")["classes"]
    theirs = _classes(champion)
    if theirs != classes:
        return base | {"comparable": False, "reason": f"its classes {theirs} are not the new "
                       f"model's {classes}"}
    seen = _trained_on(champion)
    test = [r for r in table.filter(is_split(table, "test")).to_pylist()
            if seen is None or r["sha256"] not in seen]
    excluded = int(table.filter(is_split(table, "test")).num_rows - len(test))
    base |= {"excluded_seen_by_champion": excluded, "champion_training_known": seen is not None}
    if not test:
        return base | {"comparable": False, "reason": "the promoted model trained on every "
                       "image of the new test split"}
    rel = [r["path"] for r in test]
    multilabel = is_multilabel(table)
    new = _by_path(read_parquet(root / PREDICTIONS), rel, classes, "the new model", multilabel)
    scored, error = score(champion, list(iter_paths(data_root, rel)), root)
    if scored is None:
        return base | {"comparable": False, "reason": error}
    old = _by_path(scored.set_column(0, "path", pa.array(rel)), rel, classes, "the champion",
                   multilabel)
    usable = ~np.isnan(old[1]).any(axis=1)  # rows the champion could not read are left out
    if not usable.any():
        return base | {"comparable": False, "reason": "it could read none of the test images"}
    positive = None if multilabel else read_json(root / TEST_METRICS).get(
        "positive_class") or positive_class(training_labels(table), classes, None)
    pos = classes.index(positive) if positive in classes else None
    y = new[0][usable]
    comparison = paired_comparison(
        retrain.metric, y, (new[1][usable], new[2][usable]),
        (old[1][usable], old[2][usable]), pos, retrain.bootstrap, SEED)
    return base | {"comparable": True, "unreadable_by_champion": int((~usable).sum())
                   } | comparison


def _trained_on(release: Path) -> set[str] | None:
    """Content hashes of the images ``release`` trained and validated on (None: unknown, a
    release promoted before releases recorded them)."""
    path = release / TRAINED_ON
    return set(read_parquet(path)["sha256"].to_pylist()) if path.is_file() else None


def score(release: Path, paths: list[str], root: Path) -> tuple[pa.Table | None, str]:
    """`unfreeze predict` of ``paths`` with the release's model and operating point: the
    table (rows in ``paths`` order), or None and the reason it failed."""
    work = root / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    listing, out = work / "inputs.txt", work / "predictions.parquet"
    listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "unfreeze.cli", "predict", "--model", str(release),
         "--inputs-from", str(listing), "--out", str(out), "--no-progress"],
        cwd=root, env=child_env(), capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return None, (f"`unfreeze predict --model {release}` failed (exit {proc.returncode}): "
                      + " | ".join(lines[-3:]))
    table = read_parquet(out)
    if table["path"].to_pylist() != paths:
        return None, f"`unfreeze predict` answered other rows than the {len(paths)} asked for"
    return table, ""


def _classes(release: Path) -> list[str] | None:
    meta = release / "meta.json"
    return read_json(meta).get("classes") if meta.is_file() else None


def _by_path(table: pa.Table, rel: list[str], classes: list[str], who: str,
             multilabel: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true label indices, probabilities, decided class indices) in the order of ``rel``;
    a missing image is an error; an unreadable one (no probabilities) gets NaN and -1.
    Multi-label: (true multi-hot rows — from a table with ``labels`` —, probabilities,
    decided 0/1 rows parsed from ``predicted``, the labels joined by ``;``)."""
    rows = {r["path"]: r for r in table.to_pylist()}
    missing = [p for p in rel if p not in rows]
    if missing:
        raise DataError(f"{who}'s predictions lack {len(missing)} test image(s), e.g. "
                        f"{missing[0]}; rerun `dvc repro evaluate`")
    index = {c: i for i, c in enumerate(classes)}
    probs = np.array([[np.nan if rows[p].get(f"prob_{c}") is None else rows[p][f"prob_{c}"]
                       for c in classes] for p in rel], dtype=np.float64)
    if multilabel:
        said = [[x for x in (rows[p].get("predicted") or "").split(";") if x in index]
                for p in rel]
        return (label_matrix([rows[p].get("labels") or [] for p in rel], classes), probs,
                label_matrix(said, classes).astype(int))
    decided = np.array([index.get(rows[p]["predicted"], -1) for p in rel])
    labels = np.array([index.get(rows[p].get("label"), -1) for p in rel])
    return labels, probs, decided
