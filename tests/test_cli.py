import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
    from unfreeze.cli.flows import check_server

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
    from unfreeze.cli.flows import format_summary

    text = format_summary({"project": "/p", "source_changed": True, "stages": [
        {"stage": "prepare", "ran": True, "seconds": 1.25},
        {"stage": "split", "ran": False, "seconds": 0.5}],
        "warnings": ["cross-validation fold(s) 1 of 3 name one class for every held-out "
                     "image (degenerate)"],
        "promotion": {"decision": "promoted", "reason": "no model was promoted before"}})
    assert text.splitlines() == [
        "retrain of /p (data source changed)",
        "  prepare      ran              1.2 s",
        "  split        up to date       0.5 s",
        "warning: cross-validation fold(s) 1 of 3 name one class for every held-out image "
        "(degenerate)",
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


def test_cache_command_shows_the_size_and_prunes_older_decoders(tmp_path, monkeypatch, capsys,
                                                                 image_folder):
    from unfreeze.training.cache import CACHE_ENV, DecodedCache, decoder
    from unfreeze.training.inputs import decode_all

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    paths = [str(p) for p in sorted((image_folder / "cat").glob("*.png"))[:2]]
    DecodedCache(tmp_path / "cache").fill(paths, ["aa01", "bb02"], 8, decode_all)
    old = tmp_path / "cache/8px/cc/cc03.u8"  # the 0.1 layout: no decoder folder
    old.parent.mkdir(parents=True)
    old.write_bytes(bytes(64))
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))  # idle: an automatic or plain prune takes it
    capsys.readouterr()
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "3 files" in out and f"{decoder()}/8px" in out and "other decoder: never read" in out
    assert main(["cache", "--prune"]) == 0
    out = capsys.readouterr().out
    assert "pruned 1 files" in out and "2 files" in out and not old.exists()
    monkeypatch.setenv("UNFREEZE_CACHE_MAX", "many")
    assert main(["cache"]) == 2
    assert "UNFREEZE_CACHE_MAX='many'" in capsys.readouterr().err


def test_explain_names_the_class_predict_names_at_the_stored_operating_point(
        saved_model, image_folder, tmp_path, capsys, eager):
    """A threshold far from 0.5 (and a temperature) decide otherwise than the arg-max: explain
    must follow the stored operating point exactly as predict does."""
    from unfreeze.deploy.predict import load_saved

    files = sorted(str(p) for p in (image_folder / "dog").glob("*.png"))[:4]
    probs = load_saved(saved_model).model.predict(
        np.stack([np.asarray(Image.open(f).convert("RGB").resize((75, 75))) for f in files]
                 ).astype("float32"), verbose=0)
    positive = ["cat", "dog"][int(probs[0].argmax())]  # the arg-max of the first image …
    bundle = tmp_path / "bundle"
    shutil.copytree(saved_model, bundle)
    meta = json.loads((bundle / "meta.json").read_text())
    meta["operating_point"] = {"classes": ["cat", "dog"], "positive_class": positive,
                               "threshold": 0.999, "threshold_rule": "recall>=0.1",
                               "temperature": 0.5, "tta": "hflip"}  # … is not chosen here
    (bundle / "meta.json").write_text(json.dumps(meta))
    assert main(["predict", "--model", str(bundle), *files, "--out",
                 str(tmp_path / "p.csv"), "--no-progress"]) == 0
    predicted = [r["predicted"] for r in csv.DictReader((tmp_path / "p.csv").open())]
    capsys.readouterr()
    assert main(["explain", "--model", str(bundle), *files, "--out",
                 str(tmp_path / "e.png")]) == 0
    named = [line.rsplit(": ", 1)[1] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert named == predicted
    assert predicted[0] != positive  # the threshold, not the arg-max, decided


def test_release_list_and_use_then_predict_on_current(saved_model, image_folder, tmp_path,
                                                      capsys, eager):
    from unfreeze.ops import promote
    from unfreeze.training.artifacts import load_model

    (tmp_path / "params.yaml").write_text("retrain:\n  metric: roc_auc\n")
    production = tmp_path / "production"
    for value in (0.7, 0.8):
        bundle = tmp_path / f"bundle{value}"
        shutil.copytree(saved_model, bundle)
        if value > 0.7:  # another model: the same file would be "unchanged", not promoted
            model = load_model(bundle / "model.keras")
            model.get_layer("predictions").bias.assign([0.1, -0.1])
            model.save(bundle / "model.keras")
        (bundle / "m.json").write_text(json.dumps({"roc_auc": value}))
        (bundle / "salt").write_text(str(value))  # each release its own files
        promote.promote(bundle, bundle / "m.json", production,
                        promote.Rule("roc_auc", 0.0, "point"))
    first, second = (r["name"] for r in promote.list_releases(production))
    capsys.readouterr()
    assert main(["release", "list", "--project", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"* {second}  roc_auc 0.8000" in out and f"  {first}  roc_auc 0.7000" in out
    assert main(["release", "use", first, "--project", str(tmp_path)]) == 0
    assert (production / "current/salt").read_text() == "0.7"
    assert main(["release", "use", "nope", "--project", str(tmp_path)]) == 2
    assert "release 'nope' is not in" in capsys.readouterr().err
    out_file = tmp_path / "p.csv"
    assert main(["predict", "--model", str(production / "current"),
                 str(image_folder / "cat/cat_000.png"), "--out", str(out_file),
                 "--no-progress"]) == 0
    assert next(csv.DictReader(out_file.open()))["predicted"] in ("cat", "dog")


def test_api_refuses_a_missing_model_or_a_bad_limit_before_serving(capsys, tmp_path):
    assert main(["api", "--model", str(tmp_path / "nothing")]) == 2
    assert "--model" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    (tmp_path / "m/model.keras").write_bytes(b"x")
    (tmp_path / "m/meta.json").write_text("{}")
    assert main(["api", "--model", str(tmp_path / "m"), "--max-wait-ms", "-1"]) == 2
    assert "--max-wait-ms -1.0: must be at least 0" in capsys.readouterr().err


def test_api_flag_defaults_are_the_settings_defaults():
    """`unfreeze api`'s flags (cli) and ApiSettings (deploy) state each default once each: the
    two must agree, or the command and the library would serve with different limits."""
    import dataclasses

    from unfreeze.cli.api import API_LIMITS
    from unfreeze.config.params import MAX_PIXELS
    from unfreeze.deploy.api_limits import ApiSettings

    settings = {f.name: f.default for f in dataclasses.fields(ApiSettings)}
    for flag, kind, default, _ in API_LIMITS:
        name = flag[2:].replace("-", "_")
        assert name in settings, flag
        expected = settings[name]
        assert (MAX_PIXELS if default is None else default) == expected, (flag, default)
        assert isinstance(expected, kind), (flag, kind)
