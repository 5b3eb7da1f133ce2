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
