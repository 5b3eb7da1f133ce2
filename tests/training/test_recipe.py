"""Phase one → phase two → test evaluation in-process on tiny data (the stages' bodies)."""

import json

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest

from unfreeze.config.params import EvaluateParams, params_from_dict
from unfreeze.dataset.rows import load_splits, training_rows
from unfreeze.dataset.scan import scan
from unfreeze.dataset.splits import split_table
from unfreeze.evaluation.calibrate import apply_temperature
from unfreeze.evaluation.evaluate import evaluate_on_test
from unfreeze.training import recipe
from unfreeze.training.artifacts import load_model, phase_meta, save_model
from unfreeze.training.model import base_of

TINY = {"model": {"image_size": 75, "weights": None, "hidden_units": 8},
        "head": {"epochs": 1, "batch_size": 8}, "finetune": {"epochs": 1, "batch_size": 8},
        "train": {"xla": False},  # XLA compiles for ~23 s per phase; tested below
        "split": {"test": 0.25, "val": 0.25}}


def test_two_phase_recipe_then_evaluation(image_folder, tmp_path, monkeypatch, eager):
    monkeypatch.chdir(tmp_path)
    params = params_from_dict({**TINY, "data": {"source": str(image_folder)}})
    manifest, _ = scan(params.data, progress=False)
    splits = split_table(manifest, params.split, params.seed)
    splits = splits.replace_schema_metadata(manifest.schema.metadata)
    pq.write_table(splits, tmp_path / "splits.parquet")
    table, root, source = load_splits(tmp_path / "splits.parquet")
    tdata = training_rows(table, root)

    model, s1 = recipe.phase_one(params, tdata, tmp_path / "reports/head")
    assert s1["epochs_run"] == 1 and not base_of(model).trainable
    head_dir = tmp_path / "models/head"
    save_model(model, head_dir, phase_meta(tdata.classes, 75, source, "head",
                                                       params.head, s1))

    reloaded = load_model(head_dir / "model.keras")
    frozen_kernel = np.array(base_of(reloaded).layers[1].kernel)  # first conv, stays frozen
    model2, s2 = recipe.phase_two(params, reloaded, tdata, tmp_path / "reports/finetune")
    assert s2["unfrozen_layers_with_weights"] > 0
    np.testing.assert_array_equal(frozen_kernel, np.array(base_of(model2).layers[1].kernel))
    assert any(layer.trainable for layer in base_of(model2).layers)
    assert not any(layer.trainable for layer in base_of(model2).layers
                   if isinstance(layer, keras.layers.BatchNormalization))
    ft_dir = tmp_path / "models/finetune"
    save_model(model2, ft_dir, phase_meta(tdata.classes, 75, source, "finetune",
                                                      params.finetune, s2))

    out = tmp_path / "reports/evaluate"
    metrics = evaluate_on_test(EvaluateParams(batch_size=5, bootstrap=100),
                               tmp_path / "splits.parquet", ft_dir, out)
    test_paths = [r["path"] for r in splits.to_pylist() if r["split"] == "test"]
    assert metrics["n_test"] == len(test_paths) == 6
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    preds = pq.read_table(out / "predictions.parquet")
    assert preds["path"].to_pylist() == test_paths  # same order as the splits file
    assert preds.num_rows == 6 and 0 <= metrics["accuracy"] <= 1
    assert metrics["bootstrap"]["resamples"] == 100
    ci = metrics["ci95"]["accuracy"]  # (6 test images: wide, unless every one is right)
    assert 0 <= ci["low"] <= metrics["accuracy"] <= ci["high"] <= 1
    probs = np.stack([preds["prob_cat"].to_numpy(), preds["prob_dog"].to_numpy()], axis=1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    direct = model2.predict(np.stack([_load(root / p) for p in test_paths]), verbose=0)
    calibrated = apply_temperature(direct, metrics["temperature"])  # fitted on validation
    np.testing.assert_allclose(calibrated, probs, atol=1e-5)  # rows line up with their images
    for name in ("confusion.csv", "roc.csv", "pr.csv", "confusion.png", "roc.png", "pr.png"):
        assert (out / name).stat().st_size > 0
    assert len((out / "confusion.csv").read_text().splitlines()) == 7


def _load(path):
    from unfreeze.training.inputs import load_images

    return load_images([str(path)], 75)[0]


def test_precision_and_xla_params_reach_the_model_and_its_saved_file(image_folder, tmp_path,
                                                                    eager):
    """What `train.precision` and `train.xla` set, without paying XLA's compile (training
    with XLA on runs end to end: the finetune kill-and-resume test, train.xla: auto)."""
    from conftest import splits_for

    from unfreeze.config.params import HeadParams
    from unfreeze.training.hardware import Machine
    from unfreeze.training.hardware import precision as resolve_precision
    from unfreeze.training.model import build, compile_for, precision

    tdata = training_rows(splits_for(image_folder), image_folder)
    images = np.stack([_load(p) for p in tdata.val.paths[:2]])
    params = params_from_dict({**TINY, "train": {"precision": "mixed_float16", "xla": True}})
    with precision(resolve_precision(params.train.precision)):
        model = build(params.model, 2)
    compile_for(model, HeadParams(), params.train.xla)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after building
    assert model.jit_compile is True and model.dtype_policy.name == "mixed_float16"
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"  # against fp16 underflow
    assert resolve_precision("auto", Machine(cpu_flags=frozenset({"avx2"}))) == "float32"
    with precision("mixed_bfloat16"):  # (training in bfloat16 is emulated, slow, on CPU)
        bf16 = build(params.model, 2)
    for built, dtype in ((model, "float16"), (bf16, "bfloat16")):
        conv = base_of(built).layers[1]  # the first convolution
        assert conv.compute_dtype == dtype and conv.kernel.dtype == "float32"
        assert built.get_layer("predictions").compute_dtype == "float32"  # stable softmax
    save_model(model, tmp_path / "fp16", {})  # a saved model keeps its layers' policies
    reloaded = load_model(tmp_path / "fp16/model.keras")
    assert base_of(reloaded).layers[1].compute_dtype == "float16"
    probs = reloaded.predict(images, verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-3)


REPEAT = """
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from unfreeze.config.params import params_from_dict
from unfreeze.dataset.rows import training_rows
from unfreeze.training import recipe
from unfreeze.training.artifacts import save_model

phase, splits, images, run, head = sys.argv[1:6]
params = params_from_dict({"deterministic": True,
                           "model": {"image_size": 75, "weights": None, "hidden_units": 8},
                           "head": {"epochs": 1, "batch_size": 8, "patience": 0},
                           "finetune": {"epochs": 1, "batch_size": 8, "patience": 0}})
data = training_rows(pq.read_table(splits), Path(images))
run = Path(run)
if phase == "head":
    model, _ = recipe.phase_one(params, data, run / "head")
    save_model(model, run / "models/head", {})
else:  # as the finetune stage: a new process that starts from the saved phase-one model
    model = recipe.load_for_training(params, Path(head))
    model, _ = recipe.phase_two(params, model, data, run / "finetune")
from tensorflow.python.framework import config  # no public getter

assert config.is_op_determinism_enabled()
np.savez(run / f"{phase}.npz", *model.get_weights())
"""


def run_side_by_side(*commands: list[str], cwd) -> None:
    """Start the processes at once, wait for all; each must succeed."""
    import subprocess

    procs = [subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for cmd in commands]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_deterministic_param_gives_bit_identical_weights(image_folder, tmp_path):
    """`deterministic: true`, each phase in two processes side by side (op determinism is
    process-wide and irreversible): bit-identical weights after phase one, and after phase two
    started, as the finetune stage does, from the saved phase-one model in a new process
    (loading creates the dropout layers' seed generators: it must be seeded too)."""
    import sys

    from conftest import splits_for

    splits = tmp_path / "splits.parquet"
    pq.write_table(splits_for(image_folder), splits)
    runs = [tmp_path / f"run{i}" for i in range(2)]
    head = runs[0] / "models/head/model.keras"
    for phase in ("head", "finetune"):
        run_side_by_side(*([sys.executable, "-c", REPEAT, phase, str(splits), str(image_folder),
                            str(run), str(head)] for run in runs), cwd=tmp_path)
        first, second = (np.load(run / f"{phase}.npz") for run in runs)
        assert len(first.files) > 100  # the whole model, InceptionV3 base included
        assert all(np.array_equal(first[k], second[k]) for k in first.files), phase
    trained = [np.load(runs[0] / f"{phase}.npz") for phase in ("head", "finetune")]
    assert not all(np.array_equal(trained[0][k], trained[1][k]) for k in trained[0].files)
