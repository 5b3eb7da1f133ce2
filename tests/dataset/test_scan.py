
import numpy as np
import pytest
from PIL import Image

from unfreeze.config.errors import DataError
from unfreeze.config.params import DataParams
from unfreeze.dataset import scan as scan_lib
from unfreeze.dataset import sources
from unfreeze.dataset.rows import ok_rows
from unfreeze.dataset.scan import scan


def rows(table):
    return {r["path"]: r for r in table.to_pylist()}


def test_scan_lists_every_image_with_checked_columns(image_folder):
    table, report = scan(DataParams(source=str(image_folder)), progress=False)
    assert table.num_rows == 24
    assert set(table.column_names) >= set(scan_lib.MANIFEST_COLUMNS)
    row = rows(table)["cat/cat_000.png"]
    assert row["label"] == "cat" and row["status"] == "ok" and row["format"] == "PNG"
    assert (row["width"], row["height"], row["mode"]) == (40, 40, "RGB")
    assert len(row["sha256"]) == 64
    assert report["classes"] == {"cat": 12, "dog": 12} and report["n_rejected"] == 0
    assert table.schema.metadata[b"source"] == str(image_folder).encode()


def test_scan_is_repeatable(image_folder):
    first, report = scan(DataParams(source=str(image_folder)), progress=False)
    again, report_again = scan(DataParams(source=str(image_folder)), progress=False)
    assert first.equals(again) and report == report_again


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
    assert ok_rows(table).num_rows == 24


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
    root = sources.resolve_root("elpv")
    binary = sources.elpv_candidates(root, "binary")
    four = sources.elpv_candidates(root, "four_class")
    assert len(binary) == len(four) == 2624
    count = lambda cands: {c: sum(x.label == c for x in cands) for c in {x.label for x in cands}}  # noqa: E731
    assert count(binary) == {"defective": 106 + 715, "functional": 1508 + 295}
    assert count(four) == {"p0": 1508, "p33": 295, "p67": 106, "p100": 715}
    extra = dict(binary[0].extra)
    assert extra["module_type"] in {"mono", "poly"} and 0.0 <= extra["defect_probability"] <= 1
    assert (root / binary[0].path).is_file()


def test_elpv_records_check_real_files():
    root = sources.resolve_root("elpv")
    cands = sources.elpv_candidates(root, "binary")[:3]
    records = scan_lib.check_all(root, cands, progress=False)
    assert all(r.status == "ok" and (r.width, r.height, r.mode) == (300, 300, "L")
               for r in records)
    table = scan_lib.manifest_table(cands, records, DataParams())
    assert {"module_type", "defect_probability"} <= set(table.column_names)


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height pixels but carries almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_from_the_header(image_folder):
    (image_folder / "cat" / "bomb.png").write_bytes(_png_declaring(30000, 30000))
    _, report = scan(DataParams(source=str(image_folder)), progress=False)
    reasons = {r["path"]: r["reason"] for r in report["rejected"]}
    assert reasons["cat/bomb.png"].startswith("refused before decoding")
    Image.new("RGB", (200, 100)).save(image_folder / "cat" / "big.png")
    _, small = scan(DataParams(source=str(image_folder), max_pixels=10_000), progress=False)
    reasons = {r["path"]: r["reason"] for r in small["rejected"]}
    assert "cat/cat_000.png" not in reasons  # 40×40 = 1,600 pixels is under the limit
    assert reasons["cat/big.png"] == ("refused before decoding: 200×100 = 20000 pixels > "
                                      "data.max_pixels (10000)")


def test_unusual_and_non_utf8_names(image_folder):
    import os

    Image.new("RGB", (20, 20)).save(image_folder / "dog" / "é 猫 'quoted' (1).png")
    bad = os.path.join(os.fsencode(image_folder / "dog"), b"bad\xff.png")
    with open(bad, "wb") as fh:
        fh.write((image_folder / "dog" / "dog_000.png").read_bytes())
    table, _ = scan(DataParams(source=str(image_folder)), progress=False)
    statuses = {r["path"]: (r["status"], r["reason"]) for r in table.to_pylist()}
    assert statuses["dog/é 猫 'quoted' (1).png"] == ("ok", "")
    assert statuses["dog/bad\\xff.png"] == (
        "rejected", "file or folder name is not valid UTF-8; rename it")
    with pytest.raises(DataError, match=r"first: dog/bad\\xff\.png: file or folder name"):
        scan(DataParams(source=str(image_folder), on_bad_file="fail"), progress=False)


def test_empty_class_folders_are_listed_and_not_classes(image_folder):
    (image_folder / "empty").mkdir()
    (image_folder / "only_junk").mkdir()
    (image_folder / "only_junk" / ".DS_Store").write_bytes(b"x")
    _, report = scan(DataParams(source=str(image_folder)), progress=False)
    ignored = {i["path"]: i["reason"] for i in report["ignored"]}
    assert ignored["empty"] == ignored["only_junk"] == (
        "empty class folder (no image files): not a class")
    assert set(report["classes"]) == {"cat", "dog"}


def test_animated_gif_and_exif_rotation_are_noted(image_folder):
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "blue", "green")]
    frames[0].save(image_folder / "cat" / "anim.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 20)).save(image_folder / "cat" / "rotated.jpg", exif=exif)
    Image.new("I;16", (20, 20)).save(image_folder / "cat" / "deep.png")
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(image_folder / "cat" / "cmyk.jpg")
    table, report = scan(DataParams(source=str(image_folder)), progress=False)
    rows_ = rows(table)
    assert rows_["cat/anim.gif"]["note"] == "animated (3 frames): first frame used"
    assert rows_["cat/rotated.jpg"]["note"] == (
        "EXIF orientation 6 ignored: pixels used as stored")
    assert {n["path"] for n in report["notes"]} == {"cat/anim.gif", "cat/rotated.jpg"}
    assert rows_["cat/deep.png"]["status"] == rows_["cat/cmyk.jpg"]["status"] == "ok"
    assert rows_["cat/cmyk.jpg"]["mode"] == "CMYK"


def test_same_content_under_two_classes_stops_with_the_conflicts(image_folder):
    same = (image_folder / "cat" / "cat_003.png").read_bytes()
    (image_folder / "dog" / "copy.png").write_bytes(same)
    with pytest.raises(DataError, match=r"1 image\(s\) appear with identical content under "
                                        r"different classes: cat/cat_003.png \(cat\) vs "
                                        r"dog/copy.png \(dog\)"):
        scan(DataParams(source=str(image_folder)), progress=False)
    (image_folder / "dog" / "copy.png").unlink()
    (image_folder / "cat" / "twin.png").write_bytes(same)  # same class: allowed, split together
    table, _ = scan(DataParams(source=str(image_folder)), progress=False)
    assert rows(table)["cat/twin.png"]["status"] == "ok"
