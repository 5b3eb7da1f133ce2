import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unfreeze.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_check_prints_resolved_params(capsys, tmp_path, image_folder):
    p = tmp_path / "params.yaml"
    p.write_text(f"data:\n  source: {image_folder}\nmodel:\n  weights: null\n")
    assert main(["check", "--params", str(p)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["model"]["weights"] is None
    assert out["params"]["model"]["image_size"] == 299
    assert out["data_root"] == str(image_folder.resolve())


def test_check_names_the_bad_key(capsys, tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("head:\n  batch_size: -4\n")
    assert main(["check", "--params", str(p)]) == 2
    assert "head.batch_size" in capsys.readouterr().err


def test_stage_script_exits_2_with_a_one_line_error(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  source: no/such/folder\n")
    proc = subprocess.run([sys.executable, str(ROOT / "stages/prepare.py"), "--manifest",
                           "m.parquet", "--report", "r.json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("prepare: error: data.source: folder 'no/such/folder'")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m.parquet").exists()


def test_unreachable_server_is_named_with_what_to_do(monkeypatch, capsys):
    from unfreeze.cli import check_server

    assert check_server(None) is None
    msg = check_server("http://127.0.0.1:9/api", timeout=2)
    assert "PREFECT_API_URL is set to http://127.0.0.1:9/api" in msg
    assert "prefect server start --host 127.0.0.1" in msg
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert main(["retrain", "--project", str(ROOT)]) == 2
    assert "no Prefect server answers there" in capsys.readouterr().err
    monkeypatch.delenv("PREFECT_API_URL")
    assert main(["serve", "--cron", "0 3 * * *"]) == 2
    assert "serving needs a Prefect server" in capsys.readouterr().err


def test_summary_lists_each_stage_and_the_decision():
    from unfreeze.cli import format_summary

    text = format_summary({"project": "/p", "source_changed": True, "stages": [
        {"stage": "prepare", "ran": True, "seconds": 1.25},
        {"stage": "split", "ran": False, "seconds": 0.5}],
        "promotion": {"decision": "promoted", "reason": "no model was promoted before"}})
    assert text.splitlines() == [
        "retrain of /p (data source changed)",
        "  prepare      ran              1.2 s",
        "  split        up to date       0.5 s",
        "promotion: promoted — no model was promoted before"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny model folder as unfreeze saves it (model.keras + meta.json, no operating point)."""
    from unfreeze.config.params import HeadParams, ModelParams
    from unfreeze.training.artifacts import phase_meta, save_model
    from unfreeze.training.model import build

    folder = tmp_path_factory.mktemp("model")
    model = build(ModelParams(image_size=75, weights=None, hidden_units=4), 2)
    save_model(model, folder, phase_meta(["cat", "dog"], 75, "x", "head", HeadParams(), {}))
    return folder


def test_predict_and_explain_name_bad_outputs_unusable_files_and_bad_models(
        saved_model, image_folder, tmp_path, capsys, eager):
    good = str(image_folder / "cat/cat_000.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    model = str(saved_model)
    assert main(["predict", "--model", model, good, "--out", str(tmp_path / "p.txt")]) == 2
    assert "must end in .parquet or .csv" in capsys.readouterr().err
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", model, good, str(broken), "--out", str(out),
                 "--no-progress"]) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert rows["broken.png"]["error"].startswith("cannot decode image")
    assert float(rows["cat_000.png"]["prob_cat"]) + float(rows["cat_000.png"]["prob_dog"]) \
        == pytest.approx(1.0, abs=1e-5)
    assert "no operating point" in capsys.readouterr().err

    assert main(["explain", "--model", model, str(broken), "--out", str(tmp_path / "e.png")]) == 2
    err = capsys.readouterr().err
    assert "no readable image to explain" in err and "broken.png: cannot decode" in err
    assert main(["explain", "--model", model, good, str(broken), "--out",
                 str(tmp_path / "e.png")]) == 0
    assert f"skipped {broken}: cannot decode" in capsys.readouterr().err
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"

    bad = tmp_path / "bad_model"
    shutil.copytree(saved_model, bad)
    (bad / "meta.json").write_text("{")
    assert main(["predict", "--model", str(bad), good, "--out", str(out)]) == 2
    assert "is not a meta.json written by unfreeze" in capsys.readouterr().err
