"""Layer-wise learning rates: per-variable step sizes on a tiny model, InceptionV3's depth
rule, and the optimizer under mixed precision and saved with a model."""

import keras
import numpy as np
import pytest

from unfreeze.config.errors import ParamsError
from unfreeze.config.params import FinetuneParams, ModelParams, params_from_dict
from unfreeze.training import layerwise
from unfreeze.training import model as model_lib


def two_layers() -> keras.Model:
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="low", kernel_initializer="ones")(inputs)
    out = keras.layers.Dense(1, name="high", kernel_initializer="ones")(x)
    return keras.Model(inputs, out)


def one_step(model: keras.Model, optimizer) -> dict[str, np.ndarray]:
    """Apply one step of a fixed gradient (1 for every weight); return each kernel's change."""
    before = {v.path: np.array(v) for v in model.trainable_variables}
    optimizer.apply([keras.ops.ones_like(v) for v in model.trainable_variables],
                    model.trainable_variables)
    return {v.path: np.array(v) - before[v.path] for v in model.trainable_variables}


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_each_variable_moves_at_its_own_rate(kind):
    model = two_layers()
    multipliers = {"low/kernel": 0.25, "low/bias": 0.25}  # "high" trains at the full rate
    cls = layerwise.LAYERWISE[{"sgd": keras.optimizers.SGD,
                               "adam": keras.optimizers.Adam}[kind]]
    step = one_step(model, cls(0.1, lr_multipliers=multipliers))
    # SGD: lr * gradient; Adam's first step: lr * m / (sqrt(v) + eps) = lr (gradient 1)
    # (Adam's epsilon shifts its step by ~1e-5 relative)
    np.testing.assert_allclose(step["high/kernel"], -0.1, rtol=1e-4)
    np.testing.assert_allclose(step["low/kernel"], -0.025, rtol=1e-4)
    np.testing.assert_allclose(step["low/bias"], -0.025, rtol=1e-4)


def test_a_factor_for_a_variable_not_trained_is_refused():
    model = two_layers()
    optimizer = layerwise.LayerwiseSGD(0.1, lr_multipliers={"elsewhere/kernel": 0.5})
    with pytest.raises(ValueError, match=r"elsewhere/kernel"):
        optimizer.build(model.trainable_variables)


def test_the_factors_hold_under_mixed_precision_loss_scaling():
    model = two_layers()
    inner = layerwise.LayerwiseSGD(0.1, lr_multipliers={"low/kernel": 0.5})
    step = one_step(model, keras.optimizers.LossScaleOptimizer(inner,
                                                               initial_scale=1.0))
    np.testing.assert_allclose(step["high/kernel"], -0.1, rtol=1e-5)
    np.testing.assert_allclose(step["low/kernel"], -0.05, rtol=1e-5)


def test_inception_blocks_get_decay_to_the_depth_and_the_head_its_multiplier():
    model = model_lib.build(ModelParams(image_size=75, weights=None, hidden_units=4), 2)
    model_lib.unfreeze(model, "mixed8")
    params = FinetuneParams(unfreeze_from="mixed8", layer_lr_decay=0.5, head_lr_mult=3.0)
    factors = model_lib.layer_multipliers(model, params)
    assert set(factors) == {v.path for v in model.trainable_variables}
    assert len(factors) == len(model.trainable_variables)  # one factor per variable
    base = model_lib.base_of(model)
    names = [layer.name for layer in base.layers]

    def factor_of(block: str) -> set[float]:
        start = model_lib.block_start(base, block)
        return {factors[v.path] for layer in base.layers[start:names.index(block) + 1]
                for v in layer.trainable_weights}

    assert factor_of("mixed10") == {1.0}
    assert factor_of("mixed9") == {0.5}
    assert factor_of("mixed8") == {0.25}
    assert {factors[v.path] for n in ("hidden", "predictions")
            for v in model.get_layer(n).trainable_weights} == {3.0}
    assert model_lib.layer_multipliers(model, FinetuneParams(unfreeze_from="mixed8")) == {}


def test_a_layerwise_optimizer_survives_saving_the_model(tmp_path):
    model = two_layers()
    model.compile(optimizer=layerwise.LayerwiseAdam(1e-3, lr_multipliers={"low/kernel": 0.5}),
                  loss="mse")
    model.fit(np.ones((4, 4)), np.ones((4, 1)), verbose=0)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(again.optimizer, layerwise.LayerwiseAdam)
    assert again.optimizer.lr_multipliers == {"low/kernel": 0.5}


def test_layerwise_params_are_checked():
    with pytest.raises(ParamsError, match=r"finetune.layer_lr_decay"):
        params_from_dict({"finetune": {"layer_lr_decay": 0.0}})
    with pytest.raises(ParamsError, match=r"finetune.head_lr_mult"):
        params_from_dict({"finetune": {"head_lr_mult": -1.0}})


def test_xla_compiled_training_takes_the_same_per_variable_steps():
    x, y = np.ones((4, 4), np.float32), np.zeros((4, 1), np.float32)
    moved = []
    for jit in (False, True):
        model = two_layers()
        model.compile(optimizer=layerwise.LayerwiseSGD(0.01, lr_multipliers={"low/kernel": 0.5}),
                      loss="mse", jit_compile=jit)
        before = [np.array(v) for v in model.trainable_variables]
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        moved.append([np.array(v) - b for v, b in zip(model.trainable_variables, before,
                                                      strict=True)])
    for eager, xla in zip(*moved, strict=True):
        np.testing.assert_allclose(xla, eager, rtol=1e-5)
    # and the factor acted: the low kernel moved at half the rate SGD alone would give it
    model = two_layers()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    before = np.array(model.get_layer("low").kernel)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_allclose(moved[1][0], (np.array(model.get_layer("low").kernel) - before)
                               / 2, rtol=1e-5)
