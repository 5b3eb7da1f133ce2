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
