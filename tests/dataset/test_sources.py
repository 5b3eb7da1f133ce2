"""Data-source fingerprints: content decides, a touch does not; hashes are reused."""

from __future__ import annotations

import json
import os
import sys

import yaml
from conftest import ROOT, run_in

from unfreeze.dataset import sources


def touch(path, seconds: int = 1) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_fingerprint_follows_content_not_mtime(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/x.png").write_bytes(b"one")
    summary, _ = sources.fingerprint(tmp_path)
    assert summary["files"] == 1 and summary["bytes"] == 3
    touch(tmp_path / "a/x.png")
    assert sources.fingerprint(tmp_path)[0] == summary  # touched: same content
    (tmp_path / "a/x.png").write_bytes(b"two")
    assert sources.fingerprint(tmp_path)[0]["fingerprint"] != summary["fingerprint"]
    (tmp_path / "a/x.png").write_bytes(b"one")
    (tmp_path / "a/y.png").write_bytes(b"new")
    added = sources.fingerprint(tmp_path)[0]
    assert added["files"] == 2 and added["fingerprint"] != summary["fingerprint"]
    (tmp_path / "a/y.png").unlink()
    assert sources.fingerprint(tmp_path)[0]["fingerprint"] == summary["fingerprint"]


def test_fingerprint_reads_only_files_whose_size_or_mtime_changed(tmp_path, monkeypatch):
    for name in ("x", "y", "z"):
        (tmp_path / f"{name}.png").write_bytes(name.encode())
    summary, table = sources.fingerprint(tmp_path)
    read = []
    real = sources.sha256_file
    monkeypatch.setattr(sources, "sha256_file", lambda p: read.append(p.name) or real(p))
    assert sources.fingerprint(tmp_path, table) == (summary, table)
    assert read == []
    touch(tmp_path / "y.png")
    again, _ = sources.fingerprint(tmp_path, table)
    assert read == ["y.png"] and again == summary


def test_source_stage_writes_the_fingerprint_of_an_outside_folder(tmp_path):
    def main(args: list[str]) -> int:
        return run_in(project, sys.executable, str(ROOT / "stages/source.py"), *args,
                      check=False).returncode

    outside = tmp_path / "outside"
    (outside / "cat").mkdir(parents=True)
    (outside / "cat/1.png").write_bytes(b"pixels")
    project = tmp_path / "project"
    project.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = "../outside"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--out", "data/source.json", "--hashes", ".unfreeze/hashes.json"]
    assert main(args) == 0
    first = (project / "data/source.json").read_text()
    assert json.loads(first)["files"] == 1 and json.loads(first)["source"] == "../outside"
    kept = json.loads((project / ".unfreeze/hashes.json").read_text())
    assert kept["root"] == str(outside) and list(kept["files"]) == ["cat/1.png"]
    touch(outside / "cat/1.png")
    assert main(args) == 0 and (project / "data/source.json").read_text() == first
    (outside / "cat/2.png").write_bytes(b"more pixels")
    assert main(args) == 0 and json.loads((project / "data/source.json").read_text())[
        "files"] == 2


def test_fingerprint_takes_file_names_that_are_not_utf8(tmp_path):
    """prepare rejects such files with a reason; the fingerprint must not crash first."""
    folder = os.fsencode(tmp_path / "cat")
    os.mkdir(folder)
    with open(folder + b"/bad\xff.png", "wb") as fh:
        fh.write(b"pixels")
    summary, table = sources.fingerprint(tmp_path)
    assert summary["files"] == 1 and len(table) == 1
    assert sources.fingerprint(tmp_path, table)[0] == summary


def test_listing_walks_nested_folders_without_following_folder_links(tmp_path):
    (tmp_path / "cat/site1").mkdir(parents=True)
    (tmp_path / "cat/site1/a.png").write_bytes(b"abc")
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog/b.png").write_bytes(b"de")
    (tmp_path / "dog/link.png").symlink_to(tmp_path / "dog/b.png")  # a file link: followed
    (tmp_path / "dog/gone.png").symlink_to(tmp_path / "nowhere.png")  # broken: absent
    (tmp_path / "mirror").symlink_to(tmp_path / "cat")  # a folder link: not followed
    found = sources.listing(tmp_path)
    assert sorted(found) == ["cat/site1/a.png", "dog/b.png", "dog/link.png"]
    assert found["cat/site1/a.png"][0] == 3 and found["dog/link.png"][0] == 2
    assert found["dog/b.png"][1] == (tmp_path / "dog/b.png").stat().st_mtime_ns
    assert sources.listing(tmp_path / "missing") == {}
