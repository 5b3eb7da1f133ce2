import numpy as np
import pyarrow as pa
import pytest

from unfreeze.config.errors import DataError
from unfreeze.config.params import SplitParams
from unfreeze.dataset.splits import split_table, summarize_splits


def manifest(n_per_class: dict[str, int], groups=None, dup_every: int = 0) -> pa.Table:
    paths, labels, shas = [], [], []
    for label, n in n_per_class.items():
        for i in range(n):
            paths.append(f"{label}/{i}.png")
            labels.append(label)
            shas.append(f"{label}-{i // dup_every if dup_every else i}")
    cols = {"path": paths, "label": labels, "sha256": shas}
    if groups is not None:
        cols["group"] = groups(paths)
    return pa.table(cols)


def by_split(table):
    out = {}
    for row in table.to_pylist():
        out.setdefault(row["split"], []).append(row)
    return out


def test_splits_are_disjoint_complete_stratified_and_sized():
    m = manifest({"a": 70, "b": 30})
    t = split_table(m, SplitParams(test=0.2, val=0.1), seed=1)
    parts = by_split(t)
    paths = [set(r["path"] for r in parts[s]) for s in ("train", "val", "test")]
    assert sum(len(p) for p in paths) == 100 and set.union(*paths) == set(m["path"].to_pylist())
    assert len(parts["test"]) == 20 and len(parts["val"]) == 10
    for s in ("train", "val", "test"):  # stratified: class ratio kept in every split
        frac_a = np.mean([r["label"] == "a" for r in parts[s]])
        assert abs(frac_a - 0.7) <= 0.1, s
    assert set(t["fold"].to_pylist()) == {-1}
    summary = summarize_splits(t)
    assert summary["splits"]["test"] == {"n": 20, "fraction": 0.2, "classes": {"a": 14, "b": 6}}


def test_same_seed_same_split_other_seed_other_split():
    m = manifest({"a": 40, "b": 40})
    first = split_table(m, SplitParams(), seed=7)["split"].to_pylist()
    assert split_table(m, SplitParams(), seed=7)["split"].to_pylist() == first
    assert split_table(m, SplitParams(), seed=8)["split"].to_pylist() != first


def test_groups_never_span_two_splits():
    m = manifest({"a": 60, "b": 60}, groups=lambda ps: [f"patient{i % 20}" for i in range(len(ps))])
    t = split_table(m, SplitParams(group_by="group"), seed=3)
    where = {}
    for row in t.to_pylist():
        where.setdefault(row["group"], set()).add(row["split"])
    assert all(len(s) == 1 for s in where.values())
    assert set(t["split"].to_pylist()) == {"train", "val", "test"}


def test_identical_files_stay_in_one_split_without_group_by():
    m = manifest({"a": 40, "b": 40}, dup_every=2)  # pairs of identical content
    t = split_table(m, SplitParams(), seed=0)
    where = {}
    for row in t.to_pylist():
        where.setdefault(row["sha256"], set()).add(row["split"])
    assert all(len(s) == 1 for s in where.values())


def test_unknown_group_column_and_too_few_groups_are_explained():
    m = manifest({"a": 20, "b": 20}, groups=lambda ps: ["g1" if i % 2 else "g2"
                                                         for i in range(len(ps))])
    with pytest.raises(DataError, match=r"group_by.*'site'.*available columns"):
        split_table(m, SplitParams(group_by="site"), seed=0)
    with pytest.raises(DataError, match=r"only 2 distinct groups"):
        split_table(m, SplitParams(group_by="group"), seed=0)


def test_class_too_small_for_the_fractions_names_class_and_count():
    m = manifest({"a": 50, "b": 6})
    with pytest.raises(DataError, match=r"class 'b' has 6 usable image.*needs at least 10"):
        split_table(m, SplitParams(test=0.2, val=0.1), seed=0)


def test_leakage_checks_pass_on_a_real_split_and_catch_a_leak():
    from unfreeze.dataset.splits import leakage_checks

    m = manifest({"a": 40, "b": 40}, dup_every=2)
    t = split_table(m, SplitParams(), seed=0)
    assert leakage_checks(t) == {"test_paths_not_in_train_or_val": True,
                                 "test_contents_not_in_train_or_val": True,
                                 "no_group_in_two_splits": True}
    rows = t.to_pylist()
    test_row = next(r for r in rows if r["split"] == "test")
    leaked = pa.Table.from_pylist([*rows, {**test_row, "split": "train"}])
    assert leakage_checks(leaked) == {"test_paths_not_in_train_or_val": False,
                                      "test_contents_not_in_train_or_val": False,
                                      "no_group_in_two_splits": False}


def test_a_grouped_carve_holds_every_class_when_a_grouping_allows_it():
    """8 single-class groups of 2 images, 15 % carved: the first fold of
    StratifiedGroupKFold lacks a class for most seeds; the carve takes one that has both
    (a validation slice with one class cannot fit a threshold rule)."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    from unfreeze.dataset.splits import carve

    labels = np.array(["cat"] * 8 + ["dog"] * 8, dtype=object)
    groups = np.array([f"g{i // 2}" for i in range(16)], dtype=object)
    first_lacks = 0
    for seed in range(30):
        first = next(StratifiedGroupKFold(n_splits=7, shuffle=True, random_state=seed).split(
            np.arange(16), labels, groups))[1]
        first_lacks += len(set(labels[first])) < 2
        rest, carved = carve(labels, groups, 0.15, seed)
        assert set(labels[carved]) == {"cat", "dog"}, seed
        assert not set(groups[rest]) & set(groups[carved])
    assert first_lacks > 10  # the case this guards against is common at this size
