import json
import subprocess
import sys
from pathlib import Path

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
