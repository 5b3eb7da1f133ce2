from pathlib import Path

import pytest

from unfreeze.config.params import (
    INCEPTION_BLOCKS,
    Params,
    ParamsError,
    load_params,
    params_from_dict,
)

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_params_yaml_is_complete_and_equals_the_documented_defaults():
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # every field of every section is spelled out in params.yaml (DVC tracks keys it sees)
    defaults = Params()
    for section in ("data", "split", "model", "augment", "head", "finetune", "evaluate", "cv",
                    "retrain"):
        assert set(raw[section]) == set(vars(getattr(defaults, section))), section
    assert load_params(ROOT / "params.yaml") == defaults


def test_defaults_are_the_corrected_seed_recipe():
    p = Params()
    assert (p.model.image_size, p.model.weights) == (299, "imagenet")
    assert (p.head.learning_rate, p.finetune.learning_rate) == (1e-3, 1e-4)
    assert p.finetune.unfreeze_from == "mixed9"
    a = p.augment
    assert (a.rotation, a.width_shift, a.height_shift, a.shear, a.zoom) == (40, .2, .2, .2, .2)
    assert a.horizontal_flip and not a.vertical_flip and a.fill_mode == "nearest"


def test_values_are_typed_and_frozen():
    p = params_from_dict({"model": {"dropout": 0, "weights": None}})
    assert isinstance(p.model.dropout, float) and p.model.weights is None
    with pytest.raises(AttributeError):
        p.head.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ({"head": {"epochs": "ten"}}, ["head.epochs", "'ten'", "an integer"]),
        ({"head": {"epochs": 0}}, ["head.epochs", "0", ">= 1"]),
        ({"head": {"lerning_rate": 0.1}}, ["head.lerning_rate", "learning_rate"]),
        ({"haed": {"epochs": 1}}, ["`haed`", "head"]),
        ({"model": {"image_size": 64}}, ["model.image_size", "64", ">= 75"]),
        ({"split": {"test": 1.5}}, ["split.test", "1.5"]),
        ({"split": {"test": 0.5, "val": 0.45}}, ["split.test + split.val", "0.95"]),
        ({"data": {"elpv_labels": "three"}}, ["data.elpv_labels", "'three'", "'binary'"]),
        ({"augment": {"horizontal_flip": "yes"}}, ["augment.horizontal_flip", "true/false"]),
        ({"finetune": {"unfreeze_from": "mixed11"}}, ["finetune.unfreeze_from", "mixed11",
                                                      "mixed10"]),
        ({"finetune": {"unfreeze_from": 0}}, ["finetune.unfreeze_from", "0"]),
        ({"seed": 1.5}, ["seed", "1.5"]),
        ({"head": 3}, ["head", "3", "mapping"]),
        ({"train": {"precision": "fp16"}}, ["train.precision", "'fp16'", "'mixed_float16'"]),
        ({"deterministic": True, "train": {"xla": True}}, ["train.xla", "True",
                                                           "deterministic"]),
    ],
)
def test_invalid_values_name_the_key_and_the_value(raw, fragments):
    with pytest.raises(ParamsError) as info:
        params_from_dict(raw)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_unfreeze_from_accepts_every_block_and_a_layer_count():
    for block in INCEPTION_BLOCKS:
        assert params_from_dict({"finetune": {"unfreeze_from": block}}).finetune.unfreeze_from \
            == block
    assert params_from_dict({"finetune": {"unfreeze_from": 20}}).finetune.unfreeze_from == 20


def test_load_params_reports_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("model:\n  image_size: 10\n")
    with pytest.raises(ParamsError, match=r"params.yaml.*model.image_size.*10"):
        load_params(bad)
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_yaml_is_read_safely(tmp_path):
    evil = tmp_path / "params.yaml"
    evil.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(evil)


def test_small_floats_as_dvc_writes_them_are_numbers(tmp_path):
    """`dvc exp run -S finetune.learning_rate=3e-5` writes `3e-05` (YAML 1.2, no decimal
    point), which PyYAML's YAML 1.1 rules alone read as a string."""
    path = tmp_path / "params.yaml"
    path.write_text("head:\n  learning_rate: 1e-05\nfinetune:\n  learning_rate: 3e-05\n"
                    "  epochs: 2\n  unfreeze_from: mixed9\n")
    params = load_params(path)
    assert params.head.learning_rate == 1e-05 and params.finetune.learning_rate == 3e-05
    assert params.finetune.epochs == 2 and params.finetune.unfreeze_from == "mixed9"


def test_task_and_label_file_params_are_checked_together():
    p = params_from_dict({"task": "multilabel", "data": {
        "source": "data/labels.csv", "multilabel_columns": ["crack", "finger"],
        "root": "data/images"}})
    assert p.task == "multilabel" and p.data.multilabel_columns == ("crack", "finger")
    assert p.data.is_label_file and not Params().data.is_label_file
    with pytest.raises(ParamsError, match=r"`data.multilabel_columns` must be null with task: "
                       "multiclass"):
        params_from_dict({"data": {"source": "l.csv", "multilabel_columns": ["a"]}})
    with pytest.raises(ParamsError, match=r"`data.root` must be null unless data.source is a"):
        params_from_dict({"data": {"source": "data/images", "root": "x"}})
    with pytest.raises(ParamsError, match=r"`data.elpv_labels` must be `multilabel` with task"):
        params_from_dict({"task": "multilabel"})  # the demo needs its two-label form
    with pytest.raises(ParamsError, match=r"`data.elpv_labels` must be `multilabel`"):
        params_from_dict({"data": {"elpv_labels": "multilabel"}})
    with pytest.raises(ParamsError, match=r"`evaluate.positive_class` must be null with task"):
        params_from_dict({"task": "multilabel", "data": {"elpv_labels": "multilabel"},
                          "evaluate": {"positive_class": "defect"}})
    with pytest.raises(ParamsError, match=r"`evaluate.gradcam_label` must be null with task: "
                       "multiclass"):
        params_from_dict({"evaluate": {"gradcam_label": "defect"}})
    with pytest.raises(ParamsError, match=r"`data.multilabel_columns` must be null or a list "
                       "of distinct"):
        params_from_dict({"task": "multilabel", "data": {"source": "l.csv",
                                                         "multilabel_columns": ["a", "a"]}})
    with pytest.raises(ParamsError, match=r"`task` must be one of"):
        params_from_dict({"task": "multi"})
