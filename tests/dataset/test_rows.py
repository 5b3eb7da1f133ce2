import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import splits_for

from unfreeze.config.errors import DataError
from unfreeze.dataset import rows as data
from unfreeze.dataset.rows import training_rows
from unfreeze.dataset.sources import resolve_root


def test_resolve_root_finds_the_demo_package_and_names_a_missing_folder(tmp_path):
    assert (resolve_root("elpv") / "labels.csv").is_file()
    assert resolve_root(".", cwd=tmp_path) == tmp_path.resolve()
    with pytest.raises(DataError, match=r"data.source: folder 'nowhere' does not exist"):
        resolve_root("nowhere", cwd=tmp_path)


def test_ok_rows_keeps_usable_images_only():
    t = pa.table({"path": ["a", "b"], "status": ["ok", "rejected"]})
    assert data.ok_rows(t)["path"].to_pylist() == ["a"]


def test_iter_paths_refuses_paths_outside_the_root(tmp_path):
    assert list(data.iter_paths(tmp_path, ["a/b.png"])) == [str(tmp_path.resolve() / "a/b.png")]
    for bad in ("../x.png", "/etc/passwd"):
        with pytest.raises(DataError, match="outside the data root"):
            list(data.iter_paths(tmp_path, [bad]))


def test_load_splits_needs_a_recorded_source(tmp_path):
    pq.write_table(pa.table({"path": ["a"]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match="no data source recorded"):
        data.load_splits(tmp_path / "s.parquet")


def test_training_rows_drop_the_test_split(image_folder):
    table = splits_for(image_folder, test_paths=["cat/never_read.png"])
    data = training_rows(table, image_folder)
    assert data.classes == ["cat", "dog"]
    assert len(data.train.paths) == 18 and len(data.val.paths) == 6
    assert not any("never_read" in p for p in data.train.paths + data.val.paths)
    assert sorted(set(data.train.labels.tolist())) == [0, 1]


def test_training_labels_are_train_and_val_never_test():
    import pyarrow as pa

    from unfreeze.dataset.rows import training_labels

    table = pa.table({"label": ["a", "b", "b", "a"], "split": ["train", "test", "val", "test"]})
    assert training_labels(table) == ["a", "b"]
