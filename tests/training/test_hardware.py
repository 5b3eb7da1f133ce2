"""`train.precision: auto` and `train.xla: auto` on faked machines, and on a real model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from unfreeze.training import hardware
from unfreeze.training.hardware import Machine

EPYC = Machine("AMD EPYC 7B13", frozenset({"avx2", "fma"}))
XEON_BF16 = Machine("Intel Xeon", frozenset({"avx2", "fma", "avx512f", "avx512_bf16",
                                             "avx512_fp16"}))
XEON_AMX = Machine("Intel Xeon", XEON_BF16.cpu_flags | {"amx_bf16", "amx_tile", "amx_int8"})


def gpu(capability: tuple[int, int]) -> Machine:
    return Machine("AMD EPYC", EPYC.cpu_flags, (capability,))


@pytest.fixture(autouse=True)
def process_settings():
    """Each test starts from, and leaves, the defaults a process starts with."""
    hardware.configure("auto", False)
    yield
    hardware.configure("auto", False)


@pytest.mark.parametrize(("machine", "policy"), [
    (EPYC, "float32"),  # no bfloat16 instructions: emulated, slower
    (XEON_BF16, "float32"),  # AVX-512 BF16 alone: no gain measured (0.95x)
    (XEON_AMX, "mixed_bfloat16"),  # tile matrix units
    (Machine("Intel Xeon", frozenset({"amx_tile"})), "float32"),  # tiles without bf16
    (Machine("unknown"), "float32"),  # no flags read
    (gpu((9, 0)), "mixed_bfloat16"), (gpu((8, 0)), "mixed_bfloat16"),
    (gpu((7, 5)), "mixed_float16"), (gpu((6, 1)), "float32"),
])
def test_precision_auto_decides_from_gpus_then_cpu_flags(machine, policy):
    assert hardware.precision("auto", machine) == policy


def test_an_explicit_precision_is_kept_on_every_machine():
    for machine in (EPYC, XEON_AMX, gpu((8, 0))):
        assert hardware.precision("float32", machine) == "float32"
        assert hardware.precision("mixed_float16", machine) == "mixed_float16"


@pytest.mark.parametrize("machine", [EPYC, XEON_BF16, XEON_AMX])
def test_xla_auto_on_a_cpu_compiles_phase_two_on_cached_activations_from_150_px(machine):
    for size in (150, 299):
        decided = {use: hardware.xla(use, "auto", machine, image_size=size)
                   for use in hardware.USES}
        assert decided == {"features": False, "head": False, "upper": True, "full": False,
                           "predict": False}
    for size in (75, 96, 128, 149):  # the unfrozen blocks see 1x1 or 2x2 activations
        assert not any(hardware.xla(use, "auto", machine, image_size=size)
                       for use in hardware.USES)


def test_xla_auto_on_a_gpu_is_keras_choice_and_off_where_it_cannot_help():
    assert {hardware.xla(use, "auto", gpu((8, 0))) for use in hardware.USES} == {"auto"}
    assert hardware.xla("upper", "auto", gpu((8, 0)), replicas=2) is False
    assert hardware.xla("upper", "auto", EPYC, replicas=2, image_size=299) is False
    assert hardware.xla("upper", "auto", EPYC, deterministic=True, image_size=299) is False


def test_xla_true_or_false_forces_every_use():
    for setting in (True, False):
        for machine in (EPYC, gpu((8, 0))):
            assert {hardware.xla(use, setting, machine) for use in hardware.USES} == {setting}


def test_configure_sets_the_process_default_and_refuses_bad_values():
    hardware.configure(True)
    assert hardware.xla("predict", machine=EPYC) is True
    hardware.configure("auto", deterministic=True)
    assert hardware.xla("upper", machine=EPYC, image_size=299) is False
    with pytest.raises(ValueError, match=r"train\.xla: 'yes'"):
        hardware.configure("yes")
    with pytest.raises(ValueError, match="XLA use 'train'"):
        hardware.xla("train", "auto", EPYC)


def test_this_machine_reads_the_cpu_and_lists_no_gpu_here():
    model, flags = hardware.cpu()
    assert model and isinstance(flags, frozenset)
    machine = hardware.this_machine()
    assert machine.cpu_model == model and machine.cpu_flags == flags


X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu avx2 fma avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile

processor\t: 1
model name\t: another
flags\t\t: fpu
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd aes sha2 crc32 atomics sve bf16 i8mm svebf16
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd40
"""


@pytest.mark.parametrize(("text", "model", "flags"), [
    (X86_CPUINFO, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
     {"fpu", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"}),
    (ARM_CPUINFO, "Arm CPU (implementer 0x41, part 0xd40)",
     {"fp", "asimd", "aes", "sha2", "crc32", "atomics", "sve", "bf16", "i8mm", "svebf16"}),
    ("", "", set()),
    ("model name\t:\nflags\t:\nmodel name\t: B\nflags\t: avx2\n", "B", {"avx2"}),  # empty first
])
def test_cpuinfo_gives_the_first_cpus_model_and_flags_on_x86_and_arm(text, model, flags):
    assert hardware.parse_cpuinfo(text) == (model, frozenset(flags))


def test_an_amx_xeon_read_from_cpuinfo_gets_bfloat16_and_an_arm_cpu_float32():
    for text, policy in ((X86_CPUINFO, "mixed_bfloat16"), (ARM_CPUINFO, "float32")):
        machine = Machine(*hardware.parse_cpuinfo(text))
        assert hardware.precision("auto", machine) == policy


def test_for_use_switches_a_trained_models_prediction_off_xla_on_a_cpu():
    if hardware.this_machine().gpus:
        pytest.skip("the CPU rule")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=True)
    x = np.ones((8, 4), np.float32)
    first = model.predict(x, verbose=0)
    assert model.predict_function is not None and model.jit_compile is True
    hardware.for_use(model, "predict", 299)
    assert model.jit_compile is False and model.predict_function is None  # rebuilt next
    np.testing.assert_allclose(model.predict(x, verbose=0), first, atol=1e-6)
    hardware.configure(True)
    hardware.for_use(model, "predict", 299)
    assert model.jit_compile is True


def test_for_use_decides_at_the_images_size_not_the_models_input(monkeypatch):
    """A pass over activations (a 4 x 4 input) of 150 px images follows the size rule as the
    pipeline's compiled phases do; here with a rule that compiles prediction on a CPU."""
    if hardware.this_machine().gpus:
        pytest.skip("the CPU rule")
    monkeypatch.setattr(hardware, "CPU_XLA_USES", frozenset({"upper", "predict"}))
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    hardware.for_use(model, "predict", 150)
    assert model.jit_compile is True
    hardware.for_use(model, "predict", 96)
    assert model.jit_compile is False
    hardware.for_use(model, "features", 150)  # not in the rule at any size
    assert model.jit_compile is False


def test_the_passes_over_activations_and_predictions_pass_the_images_size(monkeypatch):
    """pooled_rows (a 4 x 4 activation input) and inference reach the rule with the images'
    size, here one that compiles features and prediction from 150 px."""
    if hardware.this_machine().gpus:
        pytest.skip("the CPU rule")
    from unfreeze.evaluation import inference
    from unfreeze.training import activations

    monkeypatch.setattr(hardware, "CPU_XLA_USES", frozenset({"features", "predict"}))
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    acts = np.zeros((3, 4, 4, 3), np.float32)
    for size, compiled in ((150, True), (96, False)):
        assert activations.pooled_rows(model, acts, size).shape == (3, 3)
        assert model.jit_compile is compiled
    images = keras.Input((None, None, 3))
    flexible = keras.Model(images, keras.layers.GlobalAveragePooling2D()(images))
    for size, compiled in ((150, True), (96, False)):
        inference.predict_image_views(flexible, np.zeros((2, size, size, 3), np.uint8), 2)
        assert flexible.jit_compile is compiled


@pytest.mark.parametrize(("machine", "tuned"), [
    (EPYC, False), (XEON_BF16, False), (XEON_AMX, False),  # a CPU alone: off
    (gpu((8, 0)), True), (gpu((6, 1)), True),  # with a GPU: TensorFlow's default
])
def test_data_autotune_is_off_on_a_cpu_alone_and_on_with_a_gpu(machine, tuned, monkeypatch):
    monkeypatch.delenv(hardware.AUTOTUNE_ENV, raising=False)
    assert hardware.data_autotune(machine) is tuned


@pytest.mark.parametrize(("value", "tuned"), [("1", True), ("on", True), ("0", False),
                                              ("False", False)])
def test_data_autotune_follows_the_environment_when_set(value, tuned, monkeypatch):
    monkeypatch.setenv(hardware.AUTOTUNE_ENV, value)
    assert hardware.data_autotune(EPYC if tuned else gpu((8, 0))) is tuned  # against the rule


def test_a_bad_data_autotune_value_names_the_variable_and_the_choices(monkeypatch):
    from unfreeze.config.errors import UnfreezeError

    monkeypatch.setenv(hardware.AUTOTUNE_ENV, "sometimes")
    with pytest.raises(UnfreezeError, match=r"UNFREEZE_DATA_AUTOTUNE='sometimes'.*1.*0"):
        hardware.data_autotune(EPYC)


def test_configure_rejects_a_bad_data_autotune_value_before_any_work(monkeypatch):
    from unfreeze.config.errors import UnfreezeError

    monkeypatch.setenv(hardware.AUTOTUNE_ENV, "2")
    with pytest.raises(UnfreezeError, match="UNFREEZE_DATA_AUTOTUNE"):
        hardware.configure("auto", False)
