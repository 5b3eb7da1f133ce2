"""Predict inputs: files, folders and globs; each file checked by header, then decoded once."""

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from unfreeze.config.errors import PredictError
from unfreeze.deploy.predict import UNDECODABLE, decode_inputs, expand_inputs, write_table
from unfreeze.training.inputs import load_images


def test_inputs_are_files_folders_and_globs_each_once(image_folder):
    files = expand_inputs([str(image_folder / "cat"), str(image_folder / "dog/dog_00*.png"),
                           str(image_folder / "cat/cat_000.png")])
    assert len(files) == 12 + 10 and len(set(files)) == len(files)  # the repeat counted once
    with pytest.raises(PredictError, match="'missing/'"):
        expand_inputs(["missing/"])


def test_unusable_files_get_the_reason_and_the_rest_the_training_pixels(tmp_path,
                                                                       image_folder):
    good = sorted((image_folder / "cat").glob("*.png"))[:2]
    (tmp_path / "bad.png").write_bytes(b"nope")
    png = good[0].read_bytes()
    (tmp_path / "truncated.png").write_bytes(png[: len(png) // 2])  # header fine, data cut
    Image.new("RGB", (8, 8)).save(tmp_path / "image.tiff")
    files = [good[0], tmp_path / "bad.png", tmp_path / "truncated.png",
             tmp_path / "image.tiff", good[1]]
    images, errors = decode_inputs(files, 16)
    assert errors[0] == errors[4] == ""
    assert "cannot decode" in errors[1]
    assert errors[2] == UNDECODABLE
    assert "format TIFF is not supported" in errors[3]
    assert images.dtype == np.uint8 and images.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(images, load_images([str(good[0]), str(good[1])], 16))


def test_output_table_format_is_named_by_the_suffix(tmp_path):
    with pytest.raises(PredictError, match=r"\.parquet or \.csv"):
        write_table(pa.table({"a": [1]}), tmp_path / "out.txt")
    assert write_table(pa.table({"a": [1]}), tmp_path / "out.csv").read_text() == "a\n1\n"
