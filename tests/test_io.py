import json

import pyarrow as pa
import pytest

from unfreeze.io import atomic_path, read_json, read_parquet, write_json, write_parquet


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("killed while saving")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_temp_name_keeps_the_suffix_and_lives_beside_the_target(tmp_path):
    with atomic_path(tmp_path / "sub" / "model.keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path / "sub"
        tmp.write_text("x")
    assert (tmp_path / "sub" / "model.keras").read_text() == "x"


def test_json_and_parquet_round_trip(tmp_path):
    import numpy as np

    write_json(tmp_path / "a.json", {"b": np.float32(0.5), "a": np.int64(3)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 3, "b": 0.5}
    write_parquet(tmp_path / "t.parquet", pa.table({"x": [1, 2]}))
    assert read_parquet(tmp_path / "t.parquet")["x"].to_pylist() == [1, 2]
