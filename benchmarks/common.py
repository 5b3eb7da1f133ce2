"""What several benchmarks share: the machine they ran on, timing calls side by side, the ELPV
demo split as the stages make it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

# CPU flags that change what TensorFlow's CPU kernels can do (oneDNN picks its code path).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
               "amx_bf16", "amx_tile",  # x86
               "asimd", "sve", "sve2", "bf16", "i8mm")  # Arm (its /proc/cpuinfo Features)


def machine() -> str:
    """One line naming the CPU model, the cores this process may use and the speed-relevant
    CPU flags it has: print it with every figure (figures differ between CPU classes)."""
    from unfreeze.training.hardware import cpu

    model, flags = cpu()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    has = [f for f in SPEED_FLAGS if f in flags] or ["(no speed flags known)"]
    return f"machine: {model}, {cores} cores, {' '.join(has)}"


def timed(call: Callable[[], object]) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def steady(call: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls (this machine's timings are noisy)."""
    return min(timed(call) for _ in range(repeats))


def rounds(runs: dict[K, Callable[[], object]], repeats: int) -> dict[K, list[float]]:
    """``{name: seconds of each round}`` of the calls ``runs`` (name -> call) over ``repeats``
    rounds, each round timing every call in turn: a slow spell of the machine then hits every
    run, not one (side by side in one run)."""
    times: dict[K, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, call in runs.items():
            times[name].append(timed(call))
    return times


def demo_split():
    """``(splits table, training data, test rows, data root)`` of ELPV with default params."""
    from unfreeze.config.params import params_from_dict
    from unfreeze.dataset.rows import rows_of, training_rows
    from unfreeze.dataset.scan import scan
    from unfreeze.dataset.sources import resolve_root
    from unfreeze.dataset.splits import split_table

    defaults = params_from_dict({})
    manifest, _ = scan(defaults.data, progress=False)
    splits = split_table(manifest, defaults.split, defaults.seed)
    root = resolve_root(defaults.data.source)
    tdata = training_rows(splits, root)
    test = splits.filter([s == "test" for s in splits["split"].to_pylist()])
    return splits, tdata, rows_of(test, root, tdata.classes), root


def demo_rows(limit: int | None = None):
    """``(usable ELPV manifest rows as dicts, at most limit, data root)``."""
    from unfreeze.config.params import DataParams
    from unfreeze.dataset.rows import ok_rows
    from unfreeze.dataset.scan import scan
    from unfreeze.dataset.sources import resolve_root

    manifest, _ = scan(DataParams(), progress=False)
    return ok_rows(manifest).to_pylist()[:limit], resolve_root("elpv")
