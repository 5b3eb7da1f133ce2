"""Phase one → phase two → test evaluation in-process on tiny data (the stages' bodies)."""

import json

import keras
import numpy as np
import pyarrow.parquet as pq

from unfreeze import data, recipe, train
from unfreeze.evaluate import evaluate_on_test
from unfreeze.model import base_of
from unfreeze.params import EvaluateParams, params_from_dict
from unfreeze.scan import scan
from unfreeze.splits import split_table

TINY = {"model": {"image_size": 75, "weights": None, "hidden_units": 8},
        "head": {"epochs": 1, "batch_size": 8}, "finetune": {"epochs": 1, "batch_size": 8},
        "split": {"test": 0.25, "val": 0.25}}


def test_two_phase_recipe_then_evaluation(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = params_from_dict({**TINY, "data": {"source": str(image_folder)}})
    manifest, _ = scan(params.data, progress=False)
    splits = split_table(manifest, params.split, params.seed)
    splits = splits.replace_schema_metadata(manifest.schema.metadata)
    pq.write_table(splits, tmp_path / "splits.parquet")
    table, root, source = data.load_splits(tmp_path / "splits.parquet")
    tdata = train.training_rows(table, root)

    model, s1 = recipe.phase_one(params, tdata, tmp_path / "reports/head")
    assert s1["epochs_run"] == 1 and not base_of(model).trainable
    head_dir = tmp_path / "models/head"
    train.save_model(model, head_dir, train.phase_meta(tdata.classes, 75, source, "head",
                                                       params.head, s1))

    from unfreeze.model import load

    reloaded = load(head_dir / "model.keras")
    frozen_kernel = np.array(base_of(reloaded).layers[1].kernel)  # first conv, stays frozen
    model2, s2 = recipe.phase_two(params, reloaded, tdata, tmp_path / "reports/finetune")
    assert s2["unfrozen_layers_with_weights"] > 0
    np.testing.assert_array_equal(frozen_kernel, np.array(base_of(model2).layers[1].kernel))
    assert any(layer.trainable for layer in base_of(model2).layers)
    assert not any(layer.trainable for layer in base_of(model2).layers
                   if isinstance(layer, keras.layers.BatchNormalization))
    ft_dir = tmp_path / "models/finetune"
    train.save_model(model2, ft_dir, train.phase_meta(tdata.classes, 75, source, "finetune",
                                                      params.finetune, s2))

    out = tmp_path / "reports/evaluate"
    metrics = evaluate_on_test(EvaluateParams(batch_size=5), tmp_path / "splits.parquet",
                               ft_dir, out)
    test_paths = [r["path"] for r in splits.to_pylist() if r["split"] == "test"]
    assert metrics["n_test"] == len(test_paths) == 6
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    preds = pq.read_table(out / "predictions.parquet")
    assert preds["path"].to_pylist() == test_paths  # same order as the splits file
    assert preds.num_rows == 6 and 0 <= metrics["accuracy"] <= 1
    probs = np.stack([preds["prob_cat"].to_numpy(), preds["prob_dog"].to_numpy()], axis=1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    direct = model2.predict(np.stack([_load(root / p) for p in test_paths]), verbose=0)
    np.testing.assert_allclose(direct, probs, atol=1e-5)  # rows line up with their images
    for name in ("confusion.csv", "roc.csv", "pr.csv", "confusion.png", "roc.png", "pr.png"):
        assert (out / name).stat().st_size > 0
    assert len((out / "confusion.csv").read_text().splitlines()) == 7


def _load(path):
    from unfreeze.inputs import load_images

    return load_images([str(path)], 75)[0]
