"""What the machine has, and what ``train.precision: auto``, ``train.xla: auto`` and tf.data's
autotuning pick.

The precision and XLA rules come from measurements on both CPU classes this project runs on
(an AVX2-only AMD EPYC and an Intel Xeon with AVX-512 BF16/FP16), side by side in one run each
(``benchmarks/precision.py``, ``benchmarks/xla.py``; figures in docs/benchmarks.md); the
autotuning rule from the EPYC only so far (``benchmarks/data_autotune.py``):

- **Precision.** On a GPU: ``mixed_bfloat16`` from compute capability 8.0, ``mixed_float16``
  on 7.x (Tensor Cores), else float32. On a CPU: ``mixed_bfloat16`` only with AMX-BF16 (tile
  matrix units, Intel Xeon 4th generation on; TensorFlow's mixed-precision guide, not
  measured here); float32 otherwise: AVX-512 BF16 alone trained at 0.95x of float32 on the
  Xeon, and without bfloat16 instructions (the EPYC) bfloat16 is emulated and slower.
- **XLA, per use** (:data:`USES`). On a GPU, Keras' own rule for every use (XLA where the
  model supports it, off under a distribution strategy). On a CPU, XLA only for
  :data:`CPU_XLA_USES` at :data:`CPU_XLA_MIN_SIZE` px and more: compiling costs 2-10 s per
  graph, and only phase two on cached activations was faster per epoch in every run (EPYC:
  1.56-1.68x at 150 px in three runs, 2.02x at 224), enough to win its compilation back
  within one epoch of a real data set (with compilation counted: 1.10-1.27x, and 0.98x once,
  on the benchmark's 256 images x 3 epochs); not at 96 or 128 px, where the unfrozen
  blocks see 1x1 or 2x2 activations. The head (0.3-0.6x), prediction (0.3-1.0x; 0.51x on
  the Xeon), the frozen passes (0.5-1.15x) and training through the whole base (1.0-1.6x
  from run to run, compilation not won back in 3 epochs) run without it. Off under
  ``deterministic: true`` and under a strategy with several replicas.

- **tf.data autotuning** of the datasets this package builds (:func:`data_autotune`): on
  with a GPU (TensorFlow's default; not measured here), off on a CPU alone. On the EPYC
  (2 cores, 96 px, two runs, medians of 5 alternating rounds) the evaluation pass from the
  decoded cache ran 1.51x and 1.55x faster off, and 3 epochs of phase two on cached
  activations 1.67x; decoding files (1.32x, 1.13x) and a training epoch through the base
  (1.12x, 1.42x) gained less, and by how much varied from run to run. With autotuning on,
  most passes there ended on multiples of ~2.56 s, the CPU idle in between; with it off,
  TensorFlow runs each ``AUTOTUNE`` map at a fixed parallelism instead of tuning it. The
  elements are the same either way (every map is deterministic). The epochs on cached
  features and activations follow the rule too (``features.CachedViews.dataset``; Keras'
  wrapping of a ``PyDataset``, used before, always autotuned). ``UNFREEZE_DATA_AUTOTUNE=1``
  or ``0`` in the environment forces it: a speed setting, so not a param (changing it
  reruns no stage).

``train.xla: true`` / ``false`` forces every use of a training process (phase one, phase two,
a CV fold: their passes and predictions included). The ``evaluate`` stage and
``unfreeze predict`` do not read ``train`` and use the ``auto`` rule for prediction.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

from unfreeze.config.errors import UnfreezeError

Use = Literal["features", "head", "upper", "full", "predict"]
# features: a frozen pass (pooled features, activation views); head: phase one on cached
# features; upper: phase two on cached activations; full: training through the whole model
# on images (cached_views 0); predict: the full model's predictions.
USES: tuple[Use, ...] = ("features", "head", "upper", "full", "predict")
CPU_XLA_USES: frozenset[Use] = frozenset({"upper"})
CPU_XLA_MIN_SIZE = 150  # image size (px) from which CPU_XLA_USES compile on a CPU
AMX_FLAGS = frozenset({"amx_bf16", "amx_tile"})
AUTOTUNE_ENV = "UNFREEZE_DATA_AUTOTUNE"
_ON, _OFF = frozenset({"1", "true", "on", "yes"}), frozenset({"0", "false", "off", "no"})

_setting: bool | str = "auto"
_deterministic = False


@dataclass(frozen=True)
class Machine:
    """The CPU (model name, flags) and the GPUs' compute capabilities."""

    cpu_model: str = ""
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    gpus: tuple[tuple[int, int], ...] = ()


@cache
def cpu() -> tuple[str, frozenset[str]]:
    """(model name, flags) of this machine's CPU from ``/proc/cpuinfo``
    (:func:`parse_cpuinfo`); the platform's name and no flags where there is none."""
    import platform

    text = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
    model, flags = parse_cpuinfo(text)
    return model or platform.processor() or platform.machine(), flags


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in a ``/proc/cpuinfo`` text: x86's ``model name``
    and ``flags``; on Arm, which has neither, its ``Features`` and the implementer and part
    numbers that name the core (``""`` and no flags when the text has none of these)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if value:  # the first non-empty value of each field
            fields.setdefault(key, value)
    model = fields.get("model name", "")
    if not model and "CPU part" in fields:
        model = (f"Arm CPU (implementer {fields.get('CPU implementer', '?')}, "
                 f"part {fields['CPU part']})")
    return model, frozenset(fields.get("flags", fields.get("Features", "")).split())


@cache
def this_machine() -> Machine:
    """This process's :class:`Machine` (TensorFlow lists the GPUs)."""
    import tensorflow as tf

    gpus = tuple(tuple(tf.config.experimental.get_device_details(g).get(
        "compute_capability", (0, 0))) for g in tf.config.list_physical_devices("GPU"))
    model, flags = cpu()
    return Machine(model, flags, gpus)


def precision(setting: str, machine: Machine | None = None) -> str:
    """The Keras dtype policy for ``train.precision`` ``setting`` (see the module docstring)."""
    if setting != "auto":
        return setting
    machine = this_machine() if machine is None else machine
    if machine.gpus:
        capability = machine.gpus[0]
        return ("mixed_bfloat16" if capability >= (8, 0)
                else "mixed_float16" if capability >= (7, 0) else "float32")
    return "mixed_bfloat16" if machine.cpu_flags >= AMX_FLAGS else "float32"


def data_autotune(machine: Machine | None = None) -> bool:
    """Whether tf.data autotunes this process's input pipelines (see the module docstring):
    ``UNFREEZE_DATA_AUTOTUNE`` (1 or 0) when set, else on with a GPU, off on a CPU alone."""
    value = os.environ.get(AUTOTUNE_ENV, "").strip().lower()
    if value in _ON or value in _OFF:
        return value in _ON
    if value:
        raise UnfreezeError(f"{AUTOTUNE_ENV}={os.environ[AUTOTUNE_ENV]!r}: expected 1 (tf.data "
                            "autotuning on) or 0 (off); unset it for the default (on with a "
                            "GPU, off on a CPU alone)")
    machine = this_machine() if machine is None else machine
    return bool(machine.gpus)


def xla(use: Use, setting: bool | str | None = None, machine: Machine | None = None,
        replicas: int = 1, deterministic: bool | None = None, image_size: int = 0
        ) -> bool | str:
    """XLA for one use at ``image_size``: True, False, or ``"auto"`` (Keras decides, on a
    GPU). ``setting`` and ``deterministic`` default to this process's (:func:`configure`).
    """
    setting = _setting if setting is None else setting
    deterministic = _deterministic if deterministic is None else deterministic
    if use not in USES:
        raise ValueError(f"XLA use {use!r}: expected one of {', '.join(USES)}")
    if setting is not True and setting is not False and setting != "auto":
        raise ValueError(f"train.xla: {setting!r}: expected auto, true or false")
    if setting != "auto":
        return bool(setting)
    machine = this_machine() if machine is None else machine
    if deterministic or replicas > 1:
        return False
    if machine.gpus:
        return "auto"
    return use in CPU_XLA_USES and image_size >= CPU_XLA_MIN_SIZE


def configure(setting: bool | str, deterministic: bool = False) -> None:
    """Set this process's ``train.xla`` and ``deterministic`` (a training entry point calls
    it; without a call, ``auto`` and not deterministic)."""
    global _setting, _deterministic
    xla("predict", setting, Machine(), deterministic=deterministic)  # validates
    data_autotune(Machine())  # a bad UNFREEZE_DATA_AUTOTUNE fails here, before any work
    _setting, _deterministic = setting, deterministic


def for_use(model, use: Use, image_size: int) -> None:
    """Set ``model``'s XLA for ``use`` on images of ``image_size`` px before it predicts (an
    uncompiled or loaded model follows Keras' rule otherwise); its cached predict function is
    rebuilt on a change. The size is the images', not ``model``'s input's (activations)."""
    from unfreeze.training.distribute import replicas_of

    wanted = xla(use, replicas=replicas_of(model), image_size=image_size)
    if wanted == "auto":
        return
    if model.jit_compile != wanted:
        model.jit_compile = wanted
        model.predict_function = None

