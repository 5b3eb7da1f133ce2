"""DVC sees the data wherever it lives: the real `source` and `prepare` stages, real DVC, a
folder of images outside the project (no TensorFlow: fast tier)."""

from __future__ import annotations

import re
import sys

from conftest import SOURCE, make_image_folder, make_project, run_in, set_params


def repro(project, *targets: str) -> list[str]:
    out = run_in(project, sys.executable, "-m", "dvc", "repro", *targets).stdout
    return re.findall(r"Running stage '([^']+)'", out)


def test_images_added_to_an_outside_folder_rerun_prepare_and_nothing_else(tmp_path):
    outside = make_image_folder(tmp_path / "outside", {"cat": 3, "dog": 3}, size=16)
    project = make_project(tmp_path / "project", {}, {"cat": 1, "dog": 1})
    set_params(project, data={"source": str(outside)})
    assert repro(project, "prepare") == [SOURCE, "prepare"]
    assert repro(project, "prepare") == [SOURCE]  # nothing changed: prepare is not rerun

    make_image_folder(outside, {"eel": 4}, size=16, seed=1)
    assert repro(project, "prepare") == [SOURCE, "prepare"]
    report = (project / "reports/prepare/data.json").read_text()
    assert '"eel": 4' in report
    assert repro(project, "prepare") == [SOURCE]

    (outside / "eel/eel_001.png").unlink()  # a removal counts as a change too
    assert repro(project, "prepare") == [SOURCE, "prepare"]
    assert '"eel": 3' in (project / "reports/prepare/data.json").read_text()
