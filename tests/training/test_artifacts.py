"""Model artifacts: meta.json beside model.keras, and the class check between them."""

import pytest

from unfreeze.config.errors import DataError
from unfreeze.config.params import HeadParams
from unfreeze.training.artifacts import check_classes_match, phase_meta, read_meta, save_model


def test_check_classes_match(tmp_path):
    check_classes_match(["a", "b"], ["a", "b"], tmp_path)
    with pytest.raises(DataError, match=r"predicts classes \['a', 'b'\].*\['a', 'c'\]"):
        check_classes_match(["a", "b"], ["a", "c"], tmp_path)


def test_save_writes_model_and_meta_atomically(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    meta = phase_meta(["a", "b"], 75, "data/images", "head", HeadParams(), {"epochs_run": 1})
    out = save_model(model, tmp_path / "m", meta)
    assert sorted(p.name for p in out.parent.iterdir()) == ["meta.json", "model.keras"]
    saved = read_meta(out.parent)
    assert saved["classes"] == ["a", "b"] and saved["phase_params"]["epochs"] == 10
