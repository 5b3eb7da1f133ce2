from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unfreeze import data
from unfreeze.data import DataError, scan
from unfreeze.params import DataParams


def rows(table):
    return {r["path"]: r for r in table.to_pylist()}


def test_scan_lists_every_image_with_checked_columns(image_folder):
    table, report = scan(DataParams(source=str(image_folder)), progress=False)
    assert table.num_rows == 24
    assert set(table.column_names) >= set(data.MANIFEST_COLUMNS)
    row = rows(table)["cat/cat_000.png"]
    assert row["label"] == "cat" and row["status"] == "ok" and row["format"] == "PNG"
    assert (row["width"], row["height"], row["mode"]) == (40, 40, "RGB")
    assert len(row["sha256"]) == 64
    assert report["classes"] == {"cat": 12, "dog": 12} and report["n_rejected"] == 0
    assert table.schema.metadata[b"source"] == str(image_folder).encode()


def test_bad_files_are_rejected_with_reasons_and_system_files_ignored(image_folder):
    cat = image_folder / "cat"
    (cat / "empty.png").write_bytes(b"")
    (cat / "random.jpg").write_bytes(np.random.default_rng(1).bytes(500))
    good = (cat / "cat_000.png").read_bytes()
    (cat / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (30, 30)).save(cat / "scan.tiff")
    (cat / ".DS_Store").write_bytes(b"junk")
    (cat / "._cat_000.png").write_bytes(b"junk")
    (cat / "Thumbs.db").write_bytes(b"junk")
    (image_folder / "notes.txt").write_text("not a class")
    (image_folder / ".hidden_class").mkdir()

    table, report = scan(DataParams(source=str(image_folder)), progress=False)
    reasons = {r["path"]: r["reason"] for r in report["rejected"]}
    assert reasons["cat/empty.png"] == "empty file (0 bytes)"
    assert reasons["cat/random.jpg"].startswith("cannot decode image")
    assert reasons["cat/truncated.png"].startswith("cannot decode image")
    assert "TIFF is not supported" in reasons["cat/scan.tiff"]
    ignored = {i["path"] for i in report["ignored"]}
    assert ignored == {"cat/.DS_Store", "cat/._cat_000.png", "cat/Thumbs.db", "notes.txt",
                       ".hidden_class"}
    assert report["classes"] == {"cat": 12, "dog": 12}
    statuses = {r["path"]: r["status"] for r in table.to_pylist()}
    assert statuses["cat/empty.png"] == "rejected" and statuses["cat/cat_001.png"] == "ok"
    assert data.ok_rows(table).num_rows == 24


def test_on_bad_file_fail_stops_and_names_the_file(image_folder):
    (image_folder / "dog" / "broken.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"dog/broken.jpg.*on_bad_file"):
        scan(DataParams(source=str(image_folder), on_bad_file="fail"), progress=False)


def test_grayscale_palette_and_alpha_images_are_accepted(image_folder):
    cat = image_folder / "cat"
    Image.new("L", (20, 20), 100).save(cat / "gray.png")
    Image.new("RGBA", (20, 20), (1, 2, 3, 4)).save(cat / "alpha.png")
    Image.new("P", (20, 20)).save(cat / "palette.gif")
    Image.new("RGB", (20, 20)).save(cat / "photo.jpg")
    Image.new("RGB", (20, 20)).save(cat / "png_named.jpg", format="PNG")
    table, _ = scan(DataParams(source=str(image_folder)), progress=False)
    got = rows(table)
    assert {got[p]["mode"] for p in ("cat/gray.png", "cat/alpha.png", "cat/palette.gif")} == {
        "L", "RGBA", "P"}
    assert got["cat/png_named.jpg"]["format"] == "PNG"  # accepted by content
    assert all(got[p]["status"] == "ok" for p in got)


def test_group_is_the_first_subfolder_of_a_class(tmp_path):
    from conftest import make_image_folder

    root = make_image_folder(tmp_path / "imgs", {"cat": 3, "dog": 3})
    patient = root / "cat" / "patient_7" / "visit1"
    patient.mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(patient / "a.png")
    table, _ = scan(DataParams(source=str(root)), progress=False)
    got = rows(table)
    assert got["cat/patient_7/visit1/a.png"]["group"] == "patient_7"
    assert got["cat/cat_000.png"]["group"] is None


def test_symlink_escaping_the_root_is_rejected(image_folder, tmp_path):
    outside = tmp_path / "outside.png"
    Image.new("RGB", (20, 20)).save(outside)
    (image_folder / "cat" / "link.png").symlink_to(outside)
    (image_folder / "dog" / "loop").symlink_to(image_folder / "dog")
    _, report = scan(DataParams(source=str(image_folder)), progress=False)
    reasons = {r["path"]: r["reason"] for r in report["rejected"]}
    assert reasons["cat/link.png"] == "symlink points outside the data root"
    assert "dog/loop" in {i["path"] for i in report["ignored"]}


def test_too_few_classes_or_images_stop_with_the_class_and_count(tmp_path):
    from conftest import make_image_folder

    one = make_image_folder(tmp_path / "one", {"cat": 5})
    with pytest.raises(DataError, match=r"at least 2 classes.*found 1.*'cat': 5"):
        scan(DataParams(source=str(one)), progress=False)
    small = make_image_folder(tmp_path / "small", {"cat": 5, "dog": 2})
    with pytest.raises(DataError, match=r"class 'dog' has 2 usable image"):
        scan(DataParams(source=str(small)), progress=False)


def test_missing_source_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=r"data.source.*'nowhere'"):
        scan(DataParams(source="nowhere"), cwd=tmp_path, progress=False)


def test_elpv_labels_come_from_the_package():
    root = data.resolve_root("elpv")
    binary = data.elpv_candidates(root, "binary")
    four = data.elpv_candidates(root, "four_class")
    assert len(binary) == len(four) == 2624
    count = lambda cands: {c: sum(x.label == c for x in cands) for c in {x.label for x in cands}}  # noqa: E731
    assert count(binary) == {"defective": 106 + 715, "functional": 1508 + 295}
    assert count(four) == {"p0": 1508, "p33": 295, "p67": 106, "p100": 715}
    extra = dict(binary[0].extra)
    assert extra["module_type"] in {"mono", "poly"} and 0.0 <= extra["defect_probability"] <= 1
    assert (root / binary[0].path).is_file()


def test_elpv_records_check_real_files():
    root = data.resolve_root("elpv")
    cands = data.elpv_candidates(root, "binary")[:3]
    records = data.check_all(root, cands, progress=False)
    assert all(r.status == "ok" and (r.width, r.height, r.mode) == (300, 300, "L")
               for r in records)
    table = data.manifest_table(cands, records, "elpv")
    assert {"module_type", "defect_probability"} <= set(table.column_names)


def test_iter_paths_refuses_paths_outside_the_root(tmp_path):
    assert list(data.iter_paths(tmp_path, ["a/b.png"])) == [str(tmp_path.resolve() / "a/b.png")]
    for bad in ("../x.png", "/etc/passwd"):
        with pytest.raises(DataError, match="outside the data root"):
            list(data.iter_paths(tmp_path, [bad]))


def test_load_splits_needs_a_recorded_source(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["a"]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match="no data source recorded"):
        data.load_splits(tmp_path / "s.parquet")
    assert Path(tmp_path / "s.parquet").exists()
