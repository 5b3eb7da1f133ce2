"""Label files (CSV / Parquet) scanned into the manifest, row by row."""

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_image_folder, make_multilabel_images, write_label_csv

from unfreeze.config.errors import DataError
from unfreeze.config.params import DataParams
from unfreeze.dataset.rows import class_names, is_multilabel, label_matrix, load_splits
from unfreeze.dataset.scan import scan
from unfreeze.dataset.sources import resolve_root


def folder_rows(root):
    """Label-file rows for a generated class-folder tree: path, label, a patient column."""
    return [{"path": p.relative_to(root).as_posix(), "label": p.parent.name,
             "patient": f"p{i % 4}", "site": "north" if i % 2 else "south"}
            for i, p in enumerate(sorted(root.glob("*/*.png")))]


@pytest.fixture
def labelled(tmp_path):
    make_image_folder(tmp_path / "imgs", {"cat": 6, "dog": 6})
    rows = folder_rows(tmp_path / "imgs")
    return tmp_path, rows


def test_csv_rows_become_the_manifest_with_every_other_column_kept(labelled):
    tmp, rows = labelled
    file = write_label_csv(tmp / "imgs" / "labels.csv", rows)
    table, report = scan(DataParams(source=str(file)), progress=False)
    got = {r["path"]: r for r in table.to_pylist()}
    assert len(got) == 12 and report["classes"] == {"cat": 6, "dog": 6}
    assert got["cat/cat_001.png"]["label"] == "cat" and got["cat/cat_001.png"]["status"] == "ok"
    assert got["dog/dog_000.png"]["patient"] == rows[6]["patient"]
    assert got["dog/dog_000.png"]["site"] == rows[6]["site"] and got["cat/cat_000.png"]["row"] == 1
    assert table.schema.metadata[b"source"] == str(file).encode()


def test_paths_are_relative_to_data_root_or_absolute_inside_it(labelled):
    tmp, rows = labelled
    rows[0]["path"] = str(tmp / "imgs" / rows[0]["path"])  # absolute, inside the root
    file = write_label_csv(tmp / "labels.csv", rows)  # the file lies outside the images
    params = DataParams(source=str(file), root=str(tmp / "imgs"))
    table, report = scan(params, progress=False)
    assert report["n_ok"] == 12 and table["path"][0].as_py() == "cat/cat_000.png"
    assert table.schema.metadata[b"root"] == str(tmp / "imgs").encode()
    # the later stages find the images through the recorded source and root
    pq.write_table(table, tmp / "m.parquet")
    assert load_splits(tmp / "m.parquet")[1] == (tmp / "imgs").resolve()


def test_bad_rows_are_rejected_with_their_row_number_and_reason(labelled):
    tmp, rows = labelled
    shutil.copy(tmp / "imgs/cat/cat_000.png", tmp / "outside.png")
    (tmp / "imgs/cat/broken.png").write_bytes(b"not a png")
    rows.pop(11)  # dog_005 is listed below, with an empty label
    rows[6]["path"] = "dog/../dog/dog_000.png"  # normalised to dog/dog_000.png
    rows += [
        {"path": "cat/missing.png", "label": "cat", "patient": "p9", "site": "x"},  # row 12
        {"path": "../outside.png", "label": "cat", "patient": "p9", "site": "x"},  # row 13
        {"path": str(tmp / "outside.png"), "label": "dog", "patient": "p9", "site": "x"},  # 14
        {"path": "", "label": "dog", "patient": "p9", "site": "x"},  # row 15
        {"path": " dog/dog_005.png ", "label": "", "patient": "p9", "site": "x"},  # row 16
        {"path": "cat/broken.png", "label": "cat", "patient": "p9", "site": "x"},  # row 17
    ]
    file = write_label_csv(tmp / "imgs" / "labels.csv", rows)
    table, report = scan(DataParams(source=str(file)), progress=False)
    reasons = {r["row"]: r["reason"] for r in report["rejected"]}
    assert reasons[12].startswith("row 12: no such file")
    assert "lies outside the data root" in reasons[13] and "lies outside" in reasons[14]
    assert reasons[15] == "row 15: empty path"
    assert reasons[16] == "row 16: empty label in column 'label'"
    assert reasons[17].startswith("cannot decode image")
    assert report["n_ok"] == 11 and report["classes"] == {"cat": 6, "dog": 5}
    assert "dog/dog_000.png" in table["path"].to_pylist()  # the normalised path


def test_duplicate_paths_and_conflicting_labels_stop_the_stage(labelled):
    tmp, rows = labelled
    file = write_label_csv(tmp / "imgs" / "labels.csv", [*rows, dict(rows[0])])
    with pytest.raises(DataError, match=r"cat/cat_000.png \(rows 1, 13\).*one row per image"):
        scan(DataParams(source=str(file)), progress=False)
    shutil.copy(tmp / "imgs/cat/cat_000.png", tmp / "imgs/dog/copy.png")
    extra = {"path": "dog/copy.png", "label": "dog", "patient": "p1", "site": "x"}
    file = write_label_csv(tmp / "imgs" / "labels.csv", [*rows, extra])
    with pytest.raises(DataError, match="identical content under different classes"):
        scan(DataParams(source=str(file)), progress=False)


def test_missing_columns_files_and_clashing_names_are_named(labelled, tmp_path):
    tmp, rows = labelled
    file = write_label_csv(tmp / "imgs" / "labels.csv", rows)
    with pytest.raises(DataError, match=r"no column 'file' \(data.path_column\).*path, label"):
        scan(DataParams(source=str(file), path_column="file"), progress=False)
    with pytest.raises(DataError, match=r"label file 'nope\.csv' does not exist"):
        scan(DataParams(source="nope.csv"), cwd=tmp_path, progress=False)
    clash = write_label_csv(tmp / "imgs" / "clash.csv", [r | {"status": "x"} for r in rows])
    with pytest.raises(DataError, match="column 'status' has the name of a manifest column"):
        scan(DataParams(source=str(clash)), progress=False)
    with pytest.raises(DataError, match=r"data\.root: folder"):
        resolve_root(str(file), root=str(tmp / "nowhere"))


def test_parquet_with_other_column_names_and_a_group_column(labelled):
    tmp, rows = labelled
    renamed = [{"file": r["path"], "cls": r["label"], "group": r["patient"]} for r in rows]
    file = tmp / "imgs" / "labels.parquet"
    pq.write_table(pa.Table.from_pylist(renamed), file)
    table, _ = scan(DataParams(source=str(file), path_column="file", label_column="cls"),
                    progress=False)
    assert table["group"].to_pylist() == [r["patient"] for r in rows]
    assert table["label"].to_pylist() == [r["label"] for r in rows]


def test_multilabel_separator_strings_and_empty_label_sets(tmp_path):
    rows = make_multilabel_images(tmp_path, n=16)
    rows[3]["label"] = " red ;blue;; red"  # spaces, repeats and empty pieces are tidied
    file = write_label_csv(tmp_path / "labels.csv", rows)
    table, report = scan(DataParams(source=str(file)), progress=False, task="multilabel")
    assert is_multilabel(table) and class_names(table) == ["blue", "red"]
    assert table["labels"].type == pa.list_(pa.string())
    got = table.to_pylist()
    assert got[0]["labels"] == [] and got[0]["label"] == ""
    assert got[3]["labels"] == ["blue", "red"] and got[3]["label"] == "blue;red"
    assert report["classes"] == {"blue": 8, "red": 8} and report["no_label"] == 4
    matrix = label_matrix(table["labels"].to_pylist(), class_names(table))
    assert matrix.shape == (16, 2) and matrix[3].tolist() == [1, 1] and matrix[0].sum() == 0


def test_multilabel_zero_one_columns(tmp_path):
    rows = make_multilabel_images(tmp_path, n=12)
    wide = [{"path": r["path"], "red": int("red" in r["label"]),
             "blue": "true" if "blue" in r["label"] else "0"} for r in rows]
    wide[5]["red"] = 2
    file = write_label_csv(tmp_path / "labels.csv", wide)
    params = DataParams(source=str(file), multilabel_columns=("red", "blue"))
    table, report = scan(params, progress=False, task="multilabel")
    assert report["rejected"][0]["reason"] == "row 6: column 'red' holds '2'; expected 0 or 1"
    ok = [r for r in table.to_pylist() if r["status"] == "ok"]
    assert [r["labels"] for r in ok[:4]] == [[], ["blue"], ["red"], ["blue", "red"]]
    assert "red" not in table.column_names  # the label columns became `labels`


def test_multilabel_refuses_rare_labels_and_class_folders(tmp_path):
    rows = make_multilabel_images(tmp_path, n=12)
    rows[0]["label"] = "rare"
    file = write_label_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(DataError, match=r"label .rare. has 1 usable image\(s\)"):
        scan(DataParams(source=str(file)), progress=False, task="multilabel")
    make_image_folder(tmp_path / "folders", {"cat": 3, "dog": 3})
    with pytest.raises(DataError, match="multilabel needs a label file"):
        scan(DataParams(source=str(tmp_path / "folders")), progress=False, task="multilabel")


def test_elpv_two_label_demo():
    from unfreeze.dataset.sources import elpv_candidates

    cands = elpv_candidates(resolve_root("elpv"), "multilabel")
    labels = [dict(c.extra)["labels"] for c in cands]
    probs = [dict(c.extra)["defect_probability"] for c in cands]
    kinds = [dict(c.extra)["module_type"] for c in cands]
    assert len(cands) == 2624
    assert sum("defect" in x for x in labels) == sum(p > 0.3 for p in probs) == 1116
    assert all(("mono" in x) == (k == "mono") for x, k in zip(labels, kinds, strict=True))


def test_the_fingerprint_covers_the_listed_images_only(labelled):
    from unfreeze.dataset.labelfile import listed_paths
    from unfreeze.dataset.sources import fingerprint

    tmp, rows = labelled
    rows.append({"path": "../escape.png", "label": "cat", "patient": "p", "site": "x"})
    file = write_label_csv(tmp / "imgs" / "labels.csv", rows)
    params = DataParams(source=str(file))
    root = resolve_root(str(file))
    only = listed_paths(file, root, params)
    assert len(only) == 12 and "cat/cat_000.png" in only  # the escaping row left out
    first, _ = fingerprint(root, None, only)
    (tmp / "imgs" / "source.json").write_text("an output beside the label file")
    assert fingerprint(root, None, listed_paths(file, root, params))[0] == first
    shutil.copy(tmp / "imgs/dog/dog_000.png", tmp / "imgs/cat/cat_000.png")
    assert fingerprint(root, None, only)[0]["fingerprint"] != first["fingerprint"]


def test_another_label_separator_and_labels_that_would_break_the_join(tmp_path):
    rows = make_multilabel_images(tmp_path, n=12)
    for r in rows:
        r["label"] = r["label"].replace(";", "|")
    rows[0]["label"] = "red;ish"  # `;` joins label sets in every report: refused
    file = write_label_csv(tmp_path / "labels.csv", rows)
    table, report = scan(DataParams(source=str(file), label_separator="|"), progress=False,
                         task="multilabel")
    got = table.to_pylist()
    assert got[3]["labels"] == ["blue", "red"] and got[3]["label"] == "blue;red"
    assert "holds `;`" in report["rejected"][0]["reason"] and report["rejected"][0]["row"] == 1
    bad = write_label_csv(tmp_path / "wide.csv", [{"path": r["path"], "a;b": 1} for r in rows])
    with pytest.raises(DataError, match="label column 'a;b'"):
        scan(DataParams(source=str(bad), multilabel_columns=("a;b",)), progress=False,
             task="multilabel")


def test_text_columns_keep_their_text_and_typed_columns_are_checked(tmp_path):
    rows = make_multilabel_images(tmp_path, n=12)
    for i, r in enumerate(rows):
        r["patient"] = f"{i // 3:03d}"  # 000, 001: leading zeros kept, not read as ints
    file = write_label_csv(tmp_path / "labels.csv", rows)
    table, _ = scan(DataParams(source=str(file)), progress=False, task="multilabel")
    assert table["patient"].to_pylist()[:4] == ["000", "000", "000", "001"]
    lists = [{"path": r["path"], "label": r["label"].split(";") if r["label"] else []}
             for r in rows]  # a Parquet list<string> column of labels
    pq.write_table(pa.Table.from_pylist(lists), tmp_path / "lists.parquet")
    table, _ = scan(DataParams(source=str(tmp_path / "lists.parquet")), progress=False,
                    task="multilabel")
    assert table["labels"].to_pylist()[3] == ["blue", "red"]
    floats = [{"path": r["path"], "label": 0.5} for r in rows]
    pq.write_table(pa.Table.from_pylist(floats), tmp_path / "floats.parquet")
    with pytest.raises(DataError, match=r"column 'label' \(data.label_column\) holds double"):
        scan(DataParams(source=str(tmp_path / "floats.parquet")), progress=False)


def test_an_absolute_path_through_a_symlinked_folder_is_inside_the_root(labelled):
    tmp, rows = labelled
    (tmp / "mount").symlink_to(tmp / "imgs")
    rows[0]["path"] = str(tmp / "mount" / rows[0]["path"])
    file = write_label_csv(tmp / "imgs" / "labels.csv", rows)
    table, report = scan(DataParams(source=str(file)), progress=False)
    assert report["n_ok"] == 12 and table["path"][0].as_py() == "cat/cat_000.png"
