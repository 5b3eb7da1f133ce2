"""Export's parity rules and its all-or-nothing folder swap (the real export runs in
tests/test_pipeline.py through `dvc repro export`)."""

import numpy as np

from unfreeze.config.params import ExportParams
from unfreeze.deploy.export import _replace_folder, check_parity, parity
from unfreeze.evaluation.calibrate import OperatingPoint

POINT = OperatingPoint(["ok", "defect"], "defect", 0.3, "f1", 1.0, "none")


def test_parity_measures_difference_and_accuracy_drop_at_the_operating_point():
    reference = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9], [0.75, 0.25]])
    other = reference + np.array([[0, 0], [0.15, -0.15], [0, 0], [0, 0]])
    y = np.array([0, 1, 1, 1])  # threshold 0.3 on "defect": reference gets rows 0-2 right
    diff, drop = parity(reference, other, y, POINT)
    assert abs(diff - 0.15) < 1e-12
    assert drop == 0.25  # row 1 falls to 0.25 < 0.3: 3 of 4 right become 2 of 4
    assert parity(reference, reference, y, POINT) == (0.0, 0.0)


def test_tolerances_name_the_param_and_the_number():
    params = ExportParams(max_abs_diff=1e-4, max_accuracy_drop=0.01)
    ok = {"savedmodel_max_abs_diff": 2e-7, "tflite_max_abs_diff": 3e-7,
          "tflite_quant_accuracy_drop": 0.0}
    assert check_parity(ok, params) == []
    bad = ok | {"tflite_max_abs_diff": 3e-3, "tflite_quant_accuracy_drop": 0.05}
    problems = check_parity(bad, params)
    assert len(problems) == 2
    assert "export.max_abs_diff" in problems[0] and "0.003" in problems[0]
    assert "export.quantize: false" in problems[1]


def test_folder_swap_replaces_the_old_bundle_only_at_the_end(tmp_path):
    target, new = tmp_path / "export", tmp_path / ".export.tmp"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "model.tflite").write_text("new")
    _replace_folder(new, target)
    assert sorted(p.name for p in target.iterdir()) == ["model.tflite"]
    assert not new.exists() and not (tmp_path / ".export.old").exists()


def test_multilabel_parity_counts_an_image_right_only_with_its_whole_label_set():
    point = OperatingPoint(["a", "b"], None, None, "0.5 (per label)", 1.0, "none",
                           thresholds=[0.5, 0.5], temperatures=[1.0, 1.0])
    reference = np.array([[0.9, 0.8], [0.2, 0.7], [0.1, 0.1], [0.6, 0.4]])
    other = reference.copy()
    other[1, 1] = 0.45  # image 1 loses label b: one of its two cells flips
    y = np.array([[1, 1], [0, 1], [0, 0], [1, 0]])
    diff, drop = parity(reference, other, y, point)
    assert abs(diff - 0.25) < 1e-12
    assert drop == 0.25  # 4 of 4 label sets right, then 3 of 4 (cells: only 1 of 8)
