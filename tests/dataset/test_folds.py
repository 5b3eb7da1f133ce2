import pyarrow as pa
import pytest

from unfreeze.config.errors import DataError
from unfreeze.dataset import folds


def splits(n_per_class: dict[str, int], group_every: int = 1, test_every: int = 5) -> pa.Table:
    rows = []
    for label, n in n_per_class.items():
        for i in range(n):
            rows.append({"path": f"{label}/{i}.png", "label": label,
                         "group": f"{label}-g{i // group_every}",
                         "split": "test" if i % test_every == 0 else ("val" if i % 7 == 0
                                                                      else "train"),
                         "fold": -1})
    table = pa.Table.from_pylist(rows)
    return table.replace_schema_metadata({b"source": b"somewhere"})


def test_folds_partition_the_non_test_pool_stratified_and_deterministic():
    s = splits({"a": 60, "b": 30})
    t = folds.folds_table(s, 3, seed=0, grouped=False)
    pool = {r["path"] for r in s.to_pylist() if r["split"] != "test"}
    assert {r["path"] for r in t.to_pylist()} == pool and t.num_rows == len(pool)
    assert "test" not in set(t["split"].to_pylist())
    held = [{r["path"] for r in t.to_pylist() if r["fold"] == k} for k in range(3)]
    assert set.union(*held) == pool and sum(map(len, held)) == len(pool)  # disjoint
    for k in range(3):
        labels = [r["label"] for r in t.to_pylist() if r["fold"] == k]
        assert abs(labels.count("a") / len(labels) - 2 / 3) < 0.1
    again = folds.folds_table(s, 3, seed=0, grouped=False)
    assert again["fold"].to_pylist() == t["fold"].to_pylist()
    assert t.schema.metadata[b"source"] == b"somewhere"


def test_groups_are_never_split_across_folds():
    t = folds.folds_table(splits({"a": 60, "b": 60}, group_every=4), 3, seed=1, grouped=True)
    where = {}
    for r in t.to_pylist():
        where.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(v) == 1 for v in where.values())


def test_fold_parts_hold_out_one_fold_and_carve_an_inner_val_slice():
    t = folds.folds_table(splits({"a": 60, "b": 40}), 4, seed=0, grouped=False)
    train, val, held = folds.fold_parts(t, 2, 0.2, seed=0)
    assert set(held["fold"].to_pylist()) == {2}
    assert 2 not in set(train["fold"].to_pylist()) | set(val["fold"].to_pylist())
    assert train.num_rows + val.num_rows + held.num_rows == t.num_rows
    assert not set(train["path"].to_pylist()) & set(val["path"].to_pylist())
    assert set(val["label"].to_pylist()) == {"a", "b"}


def test_too_many_folds_names_the_class_its_count_and_the_largest_k():
    small = splits({"a": 40, "b": 5}, test_every=100)
    with pytest.raises(DataError, match=r"cv.folds=6.*class 'b' has only 4 distinct.*largest "
                                        r"cv.folds that works is 4"):
        folds.folds_table(small, 6, seed=0, grouped=False)
    grouped = splits({"a": 40, "b": 40}, group_every=20, test_every=100)
    with pytest.raises(DataError, match=r"only 2 groups.*largest cv.folds that works is 2"):
        folds.folds_table(grouped, 3, seed=0, grouped=True)


def test_a_fold_beyond_cv_folds_is_an_inactive_marker():
    assert folds.inactive_marker(7, 3) == {"fold": 7, "folds": 3, "active": False}


def label_splits(n: int = 120, group_every: int = 1, seed: int = 0,
                 freq: dict[str, float] | None = None) -> pa.Table:
    """A multi-label splits table: random labels (~20 % of rows none), every 5th row test."""
    import json

    import numpy as np

    freq = freq or {"crack": 0.4, "finger": 0.2, "spot": 0.1}
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        labels = [name for name, p in freq.items() if rng.random() < p]
        rows.append({"path": f"img/{i}.png", "label": ";".join(labels), "labels": labels,
                     "group": f"g{i // group_every}", "split": "test" if i % 5 == 0 else "train",
                     "fold": -1})
    schema = pa.schema([("path", pa.string()), ("label", pa.string()),
                        ("labels", pa.list_(pa.string())), ("group", pa.string()),
                        ("split", pa.string()), ("fold", pa.int32())])
    return pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(
        {b"source": b"somewhere", b"task": b"multilabel",
         b"classes": json.dumps(sorted(freq)).encode()})


def test_multilabel_folds_cover_the_pool_once_every_label_in_every_fold_groups_whole():
    for group_every, grouped in ((1, False), (3, True)):
        s = label_splits(group_every=group_every)
        t = folds.folds_table(s, 4, seed=0, grouped=grouped)
        rows = t.to_pylist()
        pool = {r["path"] for r in s.to_pylist() if r["split"] != "test"}
        assert sorted(r["path"] for r in rows) == sorted(pool)  # each pool row exactly once
        assert set(t["fold"].to_pylist()) == {0, 1, 2, 3}
        assert t.schema.field("labels").type == pa.list_(pa.string())
        assert t.schema.metadata[b"task"] == b"multilabel"
        for k in range(4):
            held = [r for r in rows if r["fold"] == k]
            assert {name for r in held for name in r["labels"]} == {"crack", "finger", "spot"}
            assert any(not r["labels"] for r in held)
        where: dict[str, set[int]] = {}
        for r in rows:
            where.setdefault(r["group"], set()).add(r["fold"])
        assert all(len(v) == 1 for v in where.values())
        again = folds.folds_table(s, 4, seed=0, grouped=grouped)
        assert again["fold"].to_pylist() == t["fold"].to_pylist()


def test_multilabel_folds_are_stratified_per_label():
    t = folds.folds_table(label_splits(n=200, seed=4), 4, seed=2, grouped=False)
    rows = t.to_pylist()
    for name in ("crack", "finger", "spot"):
        total = sum(name in r["labels"] for r in rows)
        for k in range(4):  # each fold holds a quarter of the label's positives, give or take 1
            held = sum(name in r["labels"] for r in rows if r["fold"] == k)
            assert abs(held - total / 4) <= 1.5, (name, k, held, total)


def test_too_many_folds_names_the_label_its_positive_groups_and_the_largest_k():
    s = label_splits(group_every=3, freq={"crack": 0.4, "spot": 0.0})
    rows = s.to_pylist()
    for i in (1, 2, 7):  # 3 train images of `spot`, in groups g0, g0 and g2
        rows[i]["labels"] = [*rows[i]["labels"], "spot"]
    s = pa.Table.from_pylist(rows, schema=s.schema)
    with pytest.raises(DataError, match=r"cv.folds=3 is too many: label 'spot' has only 2 "
                                        r"positive groups.*largest cv.folds that works is 2"):
        folds.folds_table(s, 3, seed=0, grouped=True)
    with pytest.raises(DataError, match=r"cv.folds=4 is too many: label 'spot' has only 3 "
                                        r"positive distinct images.*largest cv.folds that "
                                        r"works is 3"):
        folds.folds_table(s.set_column(s.schema.get_field_index("group"), "group",
                                       s["path"]), 4, seed=0, grouped=False)
    assert set(folds.folds_table(s, 2, seed=0, grouped=True)["fold"].to_pylist()) == {0, 1}


def test_multilabel_fold_parts_carve_an_inner_val_slice_holding_every_label():
    """`spot` is rare (a handful of groups per fold's training part): a class-stratified carve
    of the joined label strings often leaves it out of the inner val slice."""
    for seed in range(6):
        t = folds.folds_table(label_splits(group_every=2, seed=seed, freq={
            "crack": 0.4, "finger": 0.2, "spot": 0.06}), 3, seed=0, grouped=True)
        for k in range(3):
            train, val, held = folds.fold_parts(t, k, 0.2, seed=0)
            assert set(held["fold"].to_pylist()) == {k}
            assert train.num_rows + val.num_rows + held.num_rows == t.num_rows
            assert not set(train["group"].to_pylist()) & set(val["group"].to_pylist())
            for part in (train, val):
                assert {n for ls in part["labels"].to_pylist() for n in ls} == {
                    "crack", "finger", "spot"}, (seed, k)
            assert 0.1 <= val.num_rows / (train.num_rows + val.num_rows) <= 0.3
