"""Multi-label splits by iterative stratification: every label in every split, groups whole,
per-label shares close to the whole table's, rare labels warned about, hopeless ones refused."""

import json

import numpy as np
import pyarrow as pa
import pytest

from unfreeze.config.errors import DataError
from unfreeze.config.params import SplitParams
from unfreeze.dataset.splits import (
    leakage_checks,
    split_fingerprint,
    split_table,
    summarize_splits,
)

FREQ = {"crack": 0.4, "finger": 0.2, "spot": 0.08}  # ~20 % of the rows have no label
SCHEMA = pa.schema([("path", pa.string()), ("label", pa.string()),
                    ("labels", pa.list_(pa.string())), ("sha256", pa.string()),
                    ("group", pa.string())])


def ml_manifest(labels: list[list[str]], groups: list[str] | None = None,
                classes: list[str] | None = None) -> pa.Table:
    """A multi-label manifest (usable rows) with the contract's columns and metadata."""
    rows = [{"path": f"img/{i}.png", "label": ";".join(sorted(ls)), "labels": sorted(ls),
             "sha256": f"h{i}", "group": groups[i] if groups else None}
            for i, ls in enumerate(labels)]
    vocab = classes or sorted({name for ls in labels for name in ls})
    return pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(
        {b"source": b"somewhere", b"task": b"multilabel", b"classes": json.dumps(vocab).encode()})


def random_labels(n: int = 120, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[name for name, p in FREQ.items() if rng.random() < p] for _ in range(n)]


def group_sizes(n: int, seed: int = 0) -> list[str]:
    """Group ids of 2 to 4 consecutive rows."""
    rng, out, g = np.random.default_rng(seed), [], 0
    while len(out) < n:
        out += [f"patient{g}"] * int(rng.integers(2, 5))
        g += 1
    return out[:n]


def positives(table: pa.Table, split: str | None = None) -> dict[str, int]:
    rows = [r for r in table.to_pylist() if split is None or r["split"] == split]
    return {name: sum(name in r["labels"] for r in rows) for name in FREQ}


def test_every_label_in_every_split_sized_stratified_and_kept_as_lists():
    m = ml_manifest(random_labels())
    t = split_table(m, SplitParams(test=0.2, val=0.1), seed=1)
    assert t.column_names == ["path", "label", "labels", "sha256", "group", "split", "fold"]
    assert t.schema.field("labels").type == pa.list_(pa.string())
    assert t["labels"].to_pylist() == m["labels"].to_pylist()
    assert t.schema.metadata[b"task"] == b"multilabel" and set(t["fold"].to_pylist()) == {-1}
    split = np.array(t["split"].to_pylist())
    assert abs((split == "test").mean() - 0.2) <= 0.02
    assert abs((split == "val").mean() - 0.1) <= 0.02
    overall = positives(t)
    for name in ("train", "val", "test"):
        n, got = (split == name).sum(), positives(t, name)
        for label, count in got.items():  # iterative stratification: off by about one image
            assert count >= 1 and abs(count - overall[label] * n / len(split)) <= 1.5, (name, label)
    summary = summarize_splits(t, SplitParams(test=0.2, val=0.1))
    assert summary["stratification"] == "iterative" and summary["warnings"] == []
    assert summary["splits"]["test"]["labels"] == positives(t, "test")
    empty = [not r["labels"] for r in t.to_pylist()]
    for name in ("train", "val", "test"):  # label-free rows are a stratum of their own
        assert summary["splits"][name]["no_label"] == sum(
            e for e, s in zip(empty, split, strict=True) if s == name) >= 1


def test_iterative_stratification_beats_a_random_split_of_the_same_sizes():
    def deviation(table, split):
        return sum(abs(positives(table, s)[label] / (split == s).sum() - total / len(split))
                   for s in ("train", "val", "test") for label, total in positives(table).items())

    ours, shuffled = [], []
    for seed in range(5):
        t = split_table(ml_manifest(random_labels(seed=seed)), SplitParams(), seed)
        split = np.array(t["split"].to_pylist())
        ours.append(deviation(t, split))
        random = np.random.default_rng(seed).permutation(split)
        shuffled.append(deviation(t.set_column(t.schema.get_field_index("split"), "split",
                                               pa.array(random)), random))
    assert np.mean(ours) < 0.5 * np.mean(shuffled), (ours, shuffled)


def test_groups_stay_whole_and_every_label_is_in_every_split():
    groups = group_sizes(120)
    m = ml_manifest(random_labels(seed=3), groups)
    for seed in range(3):
        t = split_table(m, SplitParams(test=0.2, val=0.1, group_by="group"), seed)
        where: dict[str, set[str]] = {}
        for r in t.to_pylist():
            where.setdefault(r["group"], set()).add(r["split"])
        assert all(len(s) == 1 for s in where.values())
        assert leakage_checks(t)["no_group_in_two_splits"]
        split = np.array(t["split"].to_pylist())
        assert abs((split == "test").mean() - 0.2) <= 0.06, seed  # whole groups: approximate
        assert abs((split == "val").mean() - 0.1) <= 0.05, seed
        assert all(min(positives(t, s).values()) >= 1 for s in ("train", "val", "test")), seed
        assert summarize_splits(t)["stratification"] == "iterative, grouped (approximate)"


def test_same_seed_same_split_other_seed_other_split():
    m = ml_manifest(random_labels(), group_sizes(120))
    params = SplitParams(group_by="group")
    first = split_table(m, params, seed=7)
    assert split_table(m, params, seed=7).equals(first)
    assert split_fingerprint(split_table(m, params, seed=7)) == split_fingerprint(first)
    assert split_table(m, params, seed=8)["split"].to_pylist() != first["split"].to_pylist()


def test_a_label_too_rare_for_the_fractions_is_warned_about_yet_in_every_split():
    labels = [["crack"] if i % 3 == 0 else [] for i in range(100)]
    for i in (5, 17, 40, 77):  # 4 × 10 % < 1 image expected in val
        labels[i] = [*labels[i], "spot"]
    m = ml_manifest(labels)
    params = SplitParams(test=0.2, val=0.1)
    for seed in range(10):
        t = split_table(m, params, seed)
        assert all(positives(t, s)["spot"] >= 1 for s in ("train", "val", "test")), seed
    warnings = summarize_splits(t, params)["warnings"]
    assert len(warnings) == 1
    assert "label 'spot' has 4 image(s), too rare for split.test=0.2 and split.val=0.1" in (
        warnings[0])


def test_labels_with_fewer_than_three_images_or_groups_are_refused():
    labels = [["crack"] if i % 2 else [] for i in range(60)]
    labels[3], labels[9] = ["crack", "spot"], ["spot"]
    with pytest.raises(DataError, match=r"label 'spot' has 2 usable image\(s\), too few for "
                                        r"split.test=0.2 and split.val=0.1.*at least 3"):
        split_table(ml_manifest(labels), SplitParams(), seed=0)
    labels[10] = ["spot"]
    groups = [f"g{i // 4}" for i in range(60)]  # rows 9 and 10 share a group: 2 groups
    with pytest.raises(DataError, match=r"label 'spot' has 3 usable image\(s\) but only 2 "
                                        r"group.*finer split.group_by than 'group'"):
        split_table(ml_manifest(labels, groups), SplitParams(group_by="group"), seed=0)
    with pytest.raises(DataError, match=r"label 'never' has 0 usable image"):
        split_table(ml_manifest(labels, classes=["crack", "never", "spot"]), SplitParams(), 0)


def test_a_split_no_grouping_can_give_every_label_is_refused_naming_the_label():
    """Labels a, b, c, d on 4 images, each label in 3 of them: the test part needs exactly
    one image of each label (train and val keep the other two), and no set of these images
    holds exactly one of each (one image lacks a label, two share one)."""
    labels = [["a", "b", "c"], ["a", "b", "d"], ["a", "c", "d"], ["b", "c", "d"]]
    m = ml_manifest(labels + [[] for _ in range(30)])
    with pytest.raises(DataError, match=r"split.test=0.2: no split found that gives label "
                                        r"'[abcd]' \(3 image\(s\) in 3 group\(s\)\) a positive "
                                        r"in the carved part and 2 in the rest"):
        split_table(m, SplitParams(test=0.2, val=0.1), seed=0)


def test_multiclass_tables_keep_their_columns_and_report():
    m = pa.table({"path": [f"{i}" for i in range(40)], "label": ["a", "b"] * 20,
                  "sha256": [f"h{i}" for i in range(40)]})
    t = split_table(m, SplitParams(), seed=0)
    assert t.column_names == ["path", "label", "sha256", "group", "split", "fold"]
    assert t.schema.metadata is None
    summary = summarize_splits(t, SplitParams())
    assert set(summary) == {"n_images", "splits"} and "classes" in summary["splits"]["test"]


def test_the_split_stage_keeps_labels_and_metadata_and_warns_on_rare_labels(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import pyarrow.parquet as pq

    root = Path(__file__).resolve().parents[2]
    labels = [["crack"] if i % 3 == 0 else [] for i in range(100)]
    for i in (5, 17, 40, 77):
        labels[i] = [*labels[i], "spot"]
    m = ml_manifest(labels)
    m = m.append_column("status", pa.array(["ok"] * 99 + ["unreadable"]))
    pq.write_table(m, tmp_path / "manifest.parquet")
    (tmp_path / "params.yaml").write_text("seed: 3\nsplit:\n  test: 0.2\n  val: 0.1\n")
    proc = subprocess.run([sys.executable, str(root / "stages/split.py"), "--manifest",
                           "manifest.parquet", "--splits", "splits.parquet", "--report",
                           "split.json"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    t = pq.read_table(tmp_path / "splits.parquet")
    assert t.num_rows == 99 and t.schema.field("labels").type == pa.list_(pa.string())
    assert t.schema.metadata[b"classes"] == b'["crack", "spot"]'
    report = json.loads((tmp_path / "split.json").read_text())
    assert report["stratification"] == "iterative" and report["labels"]["spot"] == 4
    assert len(report["warnings"]) == 1 and "split: warning: label 'spot'" in proc.stderr
