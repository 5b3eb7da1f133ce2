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


def test_sigkill_while_saving_leaves_the_previous_file_intact(tmp_path):
    """A real SIGKILL halfway through a write: the target keeps its previous content."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "predictions.parquet"
    write_parquet(target, pa.table({"x": [1, 2, 3]}))
    script = (
        "import os, signal, sys\n"
        "from unfreeze.io import write_atomic\n"
        "def writer(tmp):\n"
        "    with open(tmp, 'wb') as fh:\n"
        "        fh.write(b'PAR1 half of a new file')\n"
        "        fh.flush()\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "write_atomic(sys.argv[1], writer)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert read_parquet(target)["x"].to_pylist() == [1, 2, 3]
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".predictions.")  # never the target


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755),
                                                              (0o077, 0o600, 0o700)])
def test_outputs_get_the_permissions_of_the_umask(tmp_path, umask, file_mode, dir_mode):
    import os
    import stat

    from unfreeze.io import temp_dir, write_atomic

    previous = os.umask(umask)
    try:
        written = [write_json(tmp_path / "a.json", {"a": 1}),
                   write_parquet(tmp_path / "t.parquet", pa.table({"x": [1]})),
                   write_atomic(tmp_path / "m.keras", lambda tmp: tmp.write_bytes(b"zip"))]
        folder = temp_dir(tmp_path / "out", ".bundle.")
    finally:
        os.umask(previous)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path
    assert stat.S_IMODE(folder.stat().st_mode) == dir_mode
