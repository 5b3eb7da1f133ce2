"""End to end: the real `dvc repro` in a temporary copy of the project on a tiny config.

Each test builds what it needs from the module's `built` project (or a copy of it), so the
tests pass in any order and alone.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import (
    SOURCE,
    chromium,
    make_image_folder,
    make_project,
    one_cycle,
    run_in,
    set_params,
)
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "data": {"source": "data/images"},
    "split": {"test": 0.25, "val": 0.25, "group_by": "group"},
    "model": {"image_size": 75, "weights": None, "hidden_units": 8},
    "head": {"epochs": 1, "batch_size": 8},
    # phase two beyond the classic recipe: a per-step schedule, layer-wise learning rates
    # (mixed9 at half mixed10's rate) and label smoothing, through every stage that trains
    "finetune": {"epochs": 1, "batch_size": 8, "schedule": "one_cycle",
                 "layer_lr_decay": 0.5, "label_smoothing": 0.1},
    "train": {"xla": False},  # XLA compiles ~23 s a phase; e2e kill tests train with it
    "evaluate": {"tta": "hflip", "threshold": "f1"},
    "export": {"quantize": True},
    "cv": {"folds": 3},  # both phases: the shipped cv.phases
}
K = TINY["cv"]["folds"]
MAIN = ["prepare", "split", "head", "finetune", "evaluate"]
FOLD_STAGES = [f"cv@{k}" for k in range(10)]


def run(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_in(project, *args, check=check)


def repro(project: Path, *targets: str) -> list[str]:
    """Run `dvc repro [targets]`; return the names of the stages that actually ran."""
    out = run(project, sys.executable, "-m", "dvc", "repro", *targets).stdout
    return re.findall(r"Running stage '([^']+)'", out)


def stale_stages(project: Path, *targets: str) -> list[str]:
    """Stages `dvc repro [targets]` would run now, from `dvc status --json` (nothing runs).

    `source` is left out: it is ``always_changed`` (it fingerprints the data on every run),
    and what follows it reruns only when its output changed."""
    deps = ("--with-deps", *targets) if targets else ()
    out = run(project, sys.executable, "-m", "dvc", "status", "--json", *deps).stdout
    return sorted(set(json.loads(out)) - {SOURCE})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[str]]:
    """A copy of the project with 16 images per class in groups of 2 (and one broken file),
    after a first `dvc repro evaluate`; returns it with the stages that ran."""
    project = make_project(tmp_path_factory.mktemp("project"), TINY, {"cat": 16, "dog": 16},
                           group_size=2)
    return project, repro(project, "evaluate")


@pytest.fixture
def project(built) -> Path:
    return built[0]


def declared_plots(project: Path, stage: str) -> dict[str, dict]:
    """The CSV plots a stage declares in dvc.yaml, with their x/y fields."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][stage]
    return {path: props for entry in spec.get("plots", []) for path, props in entry.items()
            if path.endswith(".csv")}


def check_plot_csvs(project: Path, stage: str) -> None:
    """Each declared CSV has a header with the x and y fields dvc.yaml names, and rows."""
    import csv

    plots = declared_plots(project, stage)
    assert plots, stage
    for path, props in plots.items():
        with (project / path).open() as fh:
            rows = list(csv.DictReader(fh))
        assert rows, path
        for field in (props["x"], props.get("y")):
            if field:
                assert field in rows[0], (path, field, list(rows[0]))


def check_png(path: Path, min_side: int = 200) -> None:
    """``path`` decodes as a PNG of a readable size."""
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and min(image.size) >= min_side, (path, image.size)


def test_repro_builds_every_output_then_reruns_only_what_changed(built):
    project, first_run = built
    assert first_run == [SOURCE, *MAIN]  # `source` fingerprints the data on every run

    manifest = pq.read_table(project / "data/manifest.parquet").to_pylist()
    assert len(manifest) == 33
    assert {r["path"]: r["status"] for r in manifest}["cat/broken.jpg"] == "rejected"
    report = json.loads((project / "reports/prepare/data.json").read_text())
    assert report["classes"] == {"cat": 16, "dog": 16} and report["n_rejected"] == 1

    splits = pq.read_table(project / "data/splits.parquet").to_pylist()
    by = {s: {r["path"] for r in splits if r["split"] == s} for s in ("train", "val", "test")}
    assert not (by["train"] & by["val"] or by["train"] & by["test"] or by["val"] & by["test"])
    assert sum(map(len, by.values())) == 32 and by["test"]
    group_splits = {}
    for r in splits:
        group_splits.setdefault(r["group"], set()).add(r["split"])
    assert all(len(v) == 1 for v in group_splits.values())  # split.group_by: group
    # every image was decoded once into the content-keyed cache, at the model's size
    from unfreeze.training.cache import decoder

    cached = {f.stem for f in (project / ".unfreeze/cache" / decoder() / "75px").glob("*/*.u8")}
    assert cached == {r["sha256"] for r in splits}

    # the learning rate of every step (1 epoch in batches of 8), as declared in dvc.yaml
    rates = json.loads((project / "reports/finetune/plots/custom/lr.json").read_text())
    n_train = json.loads((project / "reports/finetune/metrics.json").read_text())["n_train"]
    assert [p["step"] for p in rates] == list(range(1, math.ceil(n_train / 8) + 1))
    steps = len(rates)  # one cycle over them, fastai's curve at peak 1e-4 (test_schedules)
    np.testing.assert_allclose([p["lr"] for p in rates],
                               [one_cycle(s, steps, 1e-4) for s in range(steps)], rtol=1e-5)
    assert "reports/finetune/plots/custom/lr.json" in json.dumps(
        yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["finetune"]["plots"])

    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    assert metrics["bootstrap"]["resamples"] == 1000  # the shipped evaluate.bootstrap
    for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc",
                "average_precision"):
        assert 0.0 <= metrics[key] <= 1.0, key
        ci = metrics["ci95"][key]
        assert 0.0 <= ci["low"] <= ci["high"] <= 1.0, key
    assert metrics["n_test"] == len(by["test"]) and set(metrics["per_class"]) == {"cat", "dog"}
    seen = [r["label"] for r in splits if r["split"] != "test"]  # the training labels decide
    rarer = min(["dog", "cat"], key=seen.count)
    assert metrics["positive_class"] == rarer
    assert metrics["leakage_checks"] == {"test_paths_not_in_train_or_val": True,
                                         "test_contents_not_in_train_or_val": True,
                                         "no_group_in_two_splits": True}
    preds = pq.read_table(project / "reports/evaluate/predictions.parquet")
    assert preds.num_rows == len(by["test"]) and set(preds["path"].to_pylist()) == by["test"]
    assert {"prob_cat", "prob_dog", "label", "predicted"} <= set(preds.column_names)
    assert metrics["degenerate"] == (len(set(preds["predicted"].to_pylist())) == 1)
    check_plot_csvs(project, "evaluate")
    for name in ("confusion.png", "roc.png", "pr.png", "reliability.png", "gradcam.png"):
        check_png(project / "reports/evaluate" / name)
    # operating point fitted on validation; test reported at 0.5 and at it, with and without TTA
    assert metrics["n_val"] == len(by["val"]) and metrics["tta"] == "hflip"
    assert 0 < metrics["threshold"] < 1 and metrics["threshold_rule"] == "f1"
    assert 0.05 <= metrics["temperature"] <= 20 and 0 <= metrics["ece"] <= 1
    assert set(metrics["compare"]) == {"tta_none@0.5", "tta_none@tuned", "tta_hflip@0.5",
                                       "tta_hflip@tuned"}
    point = json.loads((project / "reports/evaluate/operating_point.json").read_text())
    assert point["threshold"] == metrics["threshold"] and point["fitted_on"] == "val"
    dog = [r["prob_dog"] >= point["threshold"] for r in preds.to_pylist()]
    assert dog == [p == "dog" for p in preds["predicted"].to_pylist()]
    for phase in ("head", "finetune"):
        meta = json.loads((project / f"models/{phase}/meta.json").read_text())
        assert meta["classes"] == ["cat", "dog"] and meta["image_size"] == 75
        assert json.loads((project / f"reports/{phase}/metrics.json").read_text())["n_train"] \
            == len(by["train"])

    shown = json.loads(run(project, sys.executable, "-m", "dvc", "metrics", "show",
                           "--json").stdout)
    assert "reports/evaluate/metrics.json" in json.dumps(shown)

    # nothing changed: nothing runs
    assert repro(project, "evaluate") == [SOURCE]

    # Which stages have changed inputs (`dvc status`; the real reruns are exercised by the
    # resume test and the retrain flow tests). finetune.learning_rate changed: finetune only;
    # evaluate then reruns because models/finetune changes, and nothing upstream does.
    set_params(project, finetune={"learning_rate": 5e-5})
    assert stale_stages(project, "evaluate") == ["finetune"]
    set_params(project, finetune={"learning_rate": 1e-4})
    assert stale_stages(project, "evaluate") == []

    # bytecode next to the library is ignored; a library edit reruns every stage
    cache = project / "src/unfreeze/evaluation/__pycache__/evaluate.cpython-311.pyc"
    cache.parent.mkdir(exist_ok=True)
    cache.write_bytes(b"bytecode")
    assert stale_stages(project, "evaluate") == []
    module = project / "src/unfreeze/evaluation/evaluate.py"
    code = module.read_text()
    module.write_text(code + "\n# touched by the end-to-end test\n")
    assert stale_stages(project, "evaluate") == sorted(MAIN)
    module.write_text(code)
    shutil.rmtree(cache.parent)
    assert stale_stages(project, "evaluate") == []


def test_cross_validation_of_both_phases_folds_and_report(project):
    ran = repro(project, "cv_report")
    assert ran[:2] == [SOURCE, "folds"] and sorted(ran[2:-1]) == sorted(FOLD_STAGES)
    assert ran[-1:] == ["cv_report"]
    assert not set(ran) & set(MAIN)  # CV never retrains or re-evaluates the main model
    assert not set(repro(project, "report")) - {SOURCE, "export", "report"}
    assert f"Cross-validation ({K} folds, phases head, finetune)" in (
        project / "reports/index.html").read_text()

    splits = pq.read_table(project / "data/splits.parquet").to_pylist()
    pool = {r["path"] for r in splits if r["split"] != "test"}
    test = {r["path"] for r in splits if r["split"] == "test"}
    held = []
    for k in range(K):  # each fold stored both hflip views of its inner val and held-out rows
        views = pq.read_table(project / f"reports/cv/fold_{k}/views.parquet").to_pylist()
        held.append({r["path"] for r in views if r["part"] == "heldout"})
        inner = {r["path"] for r in views if r["part"] == "val"}
        assert inner and not inner & held[-1] and not inner & test
        assert {"prob_dog@0", "prob_dog@1"} <= set(views[0])
    assert sum(map(len, held)) == len(pool) and set.union(*held) == pool  # disjoint, complete
    assert not set.union(*held) & test
    folds = pq.read_table(project / "data/folds.parquet").to_pylist()
    assert not {r["path"] for r in folds} & test
    group_folds = {}
    for r in folds:
        group_folds.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(v) == 1 for v in group_folds.values())
    for k in range(K, 10):
        marker = json.loads((project / f"reports/cv/fold_{k}/metrics.json").read_text())
        assert marker == {"fold": k, "folds": K, "active": False}

    report = json.loads((project / "reports/cv/metrics.json").read_text())
    # every fold at its own operating point, fitted as evaluate fits the main model's
    assert report["operating_point"]["threshold_rule"] == "f1"
    assert report["operating_point"]["tta"] == "hflip"
    assert report["estimates"].startswith("the main model's whole procedure")
    main_positive = json.loads((project / "reports/evaluate/metrics.json").read_text())[
        "positive_class"]
    assert report["positive_class"] == main_positive  # both from the training labels
    pooled = pq.read_table(project / "reports/cv/predictions.parquet").to_pylist()
    assert {r["path"] for r in pooled} == pool
    for point in report["operating_point"]["per_fold"]:
        rows = [r for r in pooled if r["fold"] == point["fold"]]
        assert [r[f"prob_{main_positive}"] >= point["threshold"] for r in rows] == [
            r["predicted"] == main_positive for r in rows]
        assert point["degenerate"] == (len({r["predicted"] for r in rows}) == 1)
    assert report["degenerate_folds"] == [p["fold"] for p in report["operating_point"][
        "per_fold"] if p["degenerate"]]
    for name in ("accuracy", "balanced_accuracy", "f1", "roc_auc"):
        agg = report["metrics"][name]
        values = agg["values"]
        assert len(values) == K
        assert agg["mean"] == pytest.approx(sum(values) / K)
        assert agg["std"] == pytest.approx(statistics.stdev(values))
        assert agg["ci95"][0] <= agg["mean"] <= agg["ci95"][1]
    assert report["pooled_oof"]["n_oof"] == len(pool)
    assert report["phases"] == ["head", "finetune"]
    for k in range(K):  # each fold trained both phases: two dvclive logs
        for phase in ("head", "finetune"):
            log = json.loads((project / f"reports/cv/fold_{k}/{phase}/metrics.json").read_text())
            assert log["epochs_run"] == 1, (k, phase)
    check_plot_csvs(project, "cv_report")
    for name in ("folds.png", "roc.png"):
        check_png(project / "reports/cv" / name)

    # only cv.phases changed: DVC would rerun the fold stages and the CV report, nothing else
    set_params(project, cv={"phases": ["head"]})
    assert sorted(stale_stages(project, "cv_report")) == sorted([*FOLD_STAGES, "cv_report"])
    set_params(project, cv={"phases": ["head", "finetune"]})
    assert stale_stages(project, "cv_report") == []

    # new images under data/images: once `source` has fingerprinted them, prepare is stale
    make_image_folder(project / "data/images", {"eel": 6}, size=48)
    run(project, sys.executable, "-m", "dvc", "repro", "--single-item", SOURCE)
    assert stale_stages(project, "prepare") == ["prepare"]
    shutil.rmtree(project / "data/images/eel")  # back to the built state for later tests
    run(project, sys.executable, "-m", "dvc", "repro", "--single-item", SOURCE)
    assert stale_stages(project, "prepare") == []


def test_export_predict_explain_and_html_report(project, tmp_path, capsys):
    """`dvc repro export`, then the CLI on the exported model, then the page in Chromium."""
    assert set(repro(project, "export")) <= {SOURCE, "export"}
    assert "export" not in stale_stages(project, "export")
    parity = json.loads((project / "reports/export/metrics.json").read_text())
    assert parity["passed"] and parity["n_test"] == 8
    assert parity["savedmodel_max_abs_diff"] <= 1e-4 and parity["tflite_max_abs_diff"] <= 1e-4
    assert parity["tflite_quant_accuracy_drop"] <= 0.01
    assert 0 < parity["tflite_quant_max_abs_diff"] < 0.05  # really quantised, still close
    bundle = project / "models/export"
    assert (bundle / "labels.txt").read_text() == "cat\ndog\n"
    card = (bundle / "MODEL_CARD.md").read_text()  # written from this run's reports
    assert card.startswith("# Model card: cat, dog") and "## Cross-validation" in card
    assert "trained from random initial weights" in card  # model.weights: null
    m = json.loads((project / "reports/evaluate/metrics.json").read_text())
    assert f"| roc_auc | {m['roc_auc']:.4f} | {m['ci95']['roc_auc']['low']:.4f} – " in card
    facts = json.loads((bundle / "MODEL_CARD.json").read_text())  # the card for programs
    assert facts["facts"]["test"]["roc_auc"] == m["roc_auc"] and facts["parity"]["passed"]
    assert (bundle / "saved_model/saved_model.pb").is_file()
    assert (bundle / "model_quant.tflite").stat().st_size < (bundle / "model.tflite").stat(
        ).st_size / 3
    point = json.loads((project / "reports/evaluate/operating_point.json").read_text())
    assert json.loads((bundle / "meta.json").read_text())["operating_point"] == {
        k: point[k] for k in ("classes", "positive_class", "threshold", "threshold_rule",
                              "temperature", "tta")}

    # predict: a folder (with a broken file) and a glob; the same numbers as evaluate
    evaluated = {r["path"]: r for r in pq.read_table(
        project / "reports/evaluate/predictions.parquet").to_pylist()}
    inputs = tmp_path / "new"
    for i, rel in enumerate(sorted(evaluated)[:3]):
        (inputs / "sub").mkdir(parents=True, exist_ok=True)
        shutil.copy(project / "data/images" / rel, inputs / ("sub" if i else "") / f"{i}.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG but not really")
    out = tmp_path / "preds.csv"
    # the CLI in this process (TensorFlow is loaded already): `unfreeze …` with the same args
    from unfreeze.cli import main as unfreeze

    export = str(bundle)
    assert unfreeze(["predict", "--model", export, str(inputs), "--out", str(out)]) == 0
    import csv

    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert sorted(rows) == ["0.png", "1.png", "2.png", "broken.png"]
    assert rows["broken.png"]["error"] and rows["broken.png"]["prob_cat"] == ""
    for i, rel in enumerate(sorted(evaluated)[:3]):
        row, ref = rows[f"{i}.png"], evaluated[rel]
        assert not row["error"] and row["predicted"] == ref["predicted"]
        assert float(row["prob_dog"]) == pytest.approx(ref["prob_dog"], abs=1e-5)
        assert (float(row["prob_dog"]) >= point["threshold"]) == (row["predicted"] == "dog")
    capsys.readouterr()
    assert unfreeze(["predict", "--model", str(project / "models/finetune/model.keras"),
                     str(inputs / "sub/*.png"), "--out", str(tmp_path / "p.parquet"),
                     "--tta", "none", "--no-progress"]) == 0
    assert "no operating point" in capsys.readouterr().err
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 2
    assert unfreeze(["predict", "--model", export, "nowhere/*.png", "--out",
                     str(tmp_path / "p.parquet")]) == 2
    assert "'nowhere/*.png'" in capsys.readouterr().err

    # explain: Grad-CAM grid of given images, each for the class predict names
    capsys.readouterr()
    assert unfreeze(["explain", "--model", f"{export}/model.keras", str(inputs / "0.png"),
                     str(inputs / "sub"), "--out", str(tmp_path / "cam.png")]) == 0
    check_png(tmp_path / "cam.png")
    named = dict(line.rsplit(": ", 1) for line in capsys.readouterr().out.splitlines()[:-1])
    assert {Path(f).name: c for f, c in named.items()} == {
        name: row["predicted"] for name, row in rows.items() if name != "broken.png"}

    # the report: one self-contained page, here of the reports without CV (the section says so)
    reports = tmp_path / "reports"
    shutil.copytree(project / "reports", reports, ignore=shutil.ignore_patterns("cv"))
    assert unfreeze(["report", "--reports", str(reports), "--out",
                     str(reports / "index.html")]) == 0
    page = reports / "index.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "no cross-validation report" in text and "tta_hflip@tuned" in text
    assert "95% CI low" in text and "1000 class-stratified bootstrap resamples" in text
    rendered = render_in_chromium(page, tmp_path / "page.png")
    assert rendered["errors"] == []
    # training curves, learning rate per step, 4 test figures; CV adds 2
    assert rendered["images"] == 7 and rendered["broken_images"] == []
    assert rendered["tables"] >= 5
    check_png(tmp_path / "page.png", min_side=800)


def render_in_chromium(page: Path, screenshot: Path) -> dict:
    """Open ``page`` in headless Chromium; count images/tables, list broken images and
    console errors, save a full-page screenshot."""
    with chromium() as driver:
        driver.get(page.resolve().as_uri())
        found = driver.execute_script("""
            const imgs = [...document.images];
            return {images: imgs.length,
                    broken_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                                       .map(i => i.alt),
                    tables: document.querySelectorAll('table').length,
                    height: document.body.scrollHeight};""")
        driver.set_window_size(1200, min(found["height"] + 100, 12000))
        driver.save_screenshot(str(screenshot))
        found["errors"] = [e["message"] for e in driver.get_log("browser")
                           if e["level"] == "SEVERE"]
    return found


def test_invalid_params_stop_the_pipeline_with_a_clear_message(project, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(project, bad, ignore=shutil.ignore_patterns("models", "reports"))
    set_params(bad, finetune={"unfreeze_from": "mixed42"})
    proc = run(bad, sys.executable, "-m", "dvc", "repro", "-f", "prepare", check=False)
    assert proc.returncode != 0
    assert "finetune.unfreeze_from" in proc.stderr + proc.stdout
    assert "'mixed42'" in proc.stderr + proc.stdout


# (stage, params changed for the run, backup of the killed phase, its report, model file)
KILLS = {
    # uncached phase one (each epoch takes long enough to be killed in the middle), with XLA
    "head": ({"head": {"epochs": 4, "patience": 0, "cached_views": 0}, "train": {"xla": True}},
             ".unfreeze/backup/head", "reports/head/metrics.json", "models/head/model.keras"),
    # phase two with fresh augmentation through the model (long epochs), train.xla: auto
    "finetune": ({"finetune": {"epochs": 4, "patience": 0, "cached_views": 0},
                  "train": {"xla": "auto"}},
                 ".unfreeze/backup/finetune", "reports/finetune/metrics.json",
                 "models/finetune/model.keras"),
    # a CV fold of both phases, killed in its phase one
    "cv@0": ({"head": {"epochs": 4, "patience": 0, "cached_views": 0}},
             ".unfreeze/backup/cv_0/head", "reports/cv/fold_0/head/metrics.json", None),
}


@pytest.mark.parametrize("stage", list(KILLS))
def test_sigkill_during_training_keeps_lock_and_outputs_then_resumes(built, tmp_path, stage):
    """`dvc repro` killed mid-phase: dvc.lock and the cached model stay good; rerun resumes."""
    import hashlib
    import os
    import signal
    import time

    from conftest import project_env

    changes, backup, report_file, model_file = KILLS[stage]
    project = tmp_path / "p"  # a copy of the built project: git, DVC cache, outputs and all
    shutil.copytree(built[0], project, symlinks=True)
    if stage.startswith("cv@"):
        repro(project, "folds")
    model = project / model_file if model_file else None
    good = hashlib.sha256(model.read_bytes()).hexdigest() if model else None
    set_params(project, **changes)
    lock = (project / "dvc.lock").read_text()
    state = project / backup / "state.json"
    single = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    proc = subprocess.Popen(single, cwd=project, env=project_env(project),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (state.exists() and json.loads(state.read_text())["epochs_done"] >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, "no backup appeared"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage process it started
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished on its own
    done = json.loads(state.read_text())["epochs_done"]
    assert done < 4  # the phase was interrupted before its last epoch

    # the failed run changed neither dvc.lock nor the cached previous model
    assert (project / "dvc.lock").read_text() == lock
    if model:
        run(project, sys.executable, "-m", "dvc", "checkout", "--force", stage)
        assert hashlib.sha256(model.read_bytes()).hexdigest() == good

    out = run(project, *single).stdout
    assert f"resuming from backup {backup}: {done} epoch(s) done" in out
    assert "decoded cache:" not in out  # no image decoded again: all came from the cache
    trained = [int(n) for n in re.findall(r"^Epoch (\d+)/4", out, flags=re.M)]
    assert trained == list(range(done + 1, 5))  # only the remaining epochs
    report = json.loads((project / report_file).read_text())
    assert report["epochs_run"] == 4 and report["resumed_after_epoch"] == done
    # train.xla: true (head) trains with XLA; auto (finetune) is Keras' choice: XLA only
    # where a GPU is, so off here; the fold runs with the tiny config's false
    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    assert report["xla"] is (stage == "head" or (stage == "finetune" and gpu))
    if model:
        assert hashlib.sha256(model.read_bytes()).hexdigest() != good
    assert not (project / backup).exists()
    assert stage not in stale_stages(project, stage)  # the resumed run is in dvc.lock
    assert (project / "dvc.lock").read_text() != lock
