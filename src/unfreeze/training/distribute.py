"""Distribution strategies for training (``train.strategy``), with TensorFlow's own engines.

- ``none``: TensorFlow's default strategy (one device);
- ``auto``: :class:`tf.distribute.MirroredStrategy` when more than one GPU is visible,
  otherwise the default strategy;
- ``mirrored``: MirroredStrategy over every visible GPU, or, without GPUs, over every logical
  CPU device (see :data:`LOGICAL_CPUS_ENV`);
- ``multi_worker``: :class:`tf.distribute.MultiWorkerMirroredStrategy`, one process per
  machine, the cluster read from the ``TF_CONFIG`` environment variable.

Model building, compiling, feature caching and both phases run inside the strategy's scope
(:func:`scope`). ``<phase>.batch_size`` is the batch of one replica: the global batch is
``batch_size * replicas`` (:func:`global_batch`), so the same params keep each device's load
when devices are added. Learning rates are not changed (see the README).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import AbstractContextManager

from unfreeze.config.errors import ParamsError

LOGICAL_CPUS_ENV = "UNFREEZE_LOGICAL_CPUS"
STRATEGIES = ("auto", "mirrored", "multi_worker", "none")

_strategy = None
_strategy_name: str | None = None


def split_cpu(value: str | None = None) -> int:
    """Split the CPU into ``UNFREEZE_LOGICAL_CPUS`` logical devices; return how many exist.

    Must run before TensorFlow initialises its devices (before the first op): :func:`strategy`
    calls it before creating a non-multi-worker strategy. Unset or ``1``: nothing is changed.
    """
    value = os.environ.get(LOGICAL_CPUS_ENV) if value is None else value
    if value in (None, "", "1"):
        return 1
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 2 <= n <= 64:
        raise ParamsError(f"{LOGICAL_CPUS_ENV}={value!r}: expected an integer from 1 to 64 "
                          "(the number of logical CPU devices to split the CPU into), or unset")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration()] * n
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return n
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError as exc:  # TensorFlow already initialised its devices
        raise RuntimeError(f"{LOGICAL_CPUS_ENV}={n}: TensorFlow is already initialised in this "
                           "process, so its CPU can no longer be split; set the variable before "
                           "the process starts") from exc
    return n


def strategy(name: str):
    """The process's strategy for ``train.strategy`` ``name``, created once and reused.

    MultiWorkerMirroredStrategy must be created before any other TensorFlow op of the process
    and only once, so every caller of one process shares it; asking for another name later is
    an error.
    """
    global _strategy, _strategy_name
    if name not in STRATEGIES:
        raise ParamsError(f"train.strategy: {name!r} is not one of {', '.join(STRATEGIES)}")
    if _strategy is not None:
        if name != _strategy_name:
            raise RuntimeError(f"train.strategy {name!r} requested, but this process already "
                               f"trains with {_strategy_name!r}")
        return _strategy
    import tensorflow as tf

    if name == "multi_worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        made = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        split_cpu()
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        if name == "mirrored":
            made = tf.distribute.MirroredStrategy(devices=gpus or cpus)
        elif name == "auto" and len(gpus) > 1:
            made = tf.distribute.MirroredStrategy(devices=gpus)
        else:
            made = tf.distribute.get_strategy()
    _strategy, _strategy_name = made, name
    print(f"train.strategy={name}: {describe(made)}", file=sys.stderr)
    return made


def describe(made) -> str:
    """``MirroredStrategy, 2 replicas`` (plus the worker's place in a multi-worker cluster)."""
    text = f"{type(made).__name__}, {made.num_replicas_in_sync} replica" + (
        "s" if made.num_replicas_in_sync != 1 else "")
    resolver = getattr(made, "cluster_resolver", None)
    if resolver is not None and resolver.task_type:
        text += f", {resolver.task_type} {resolver.task_id}"
    return text


def scope(name: str) -> AbstractContextManager:
    """``with scope(params.train.strategy):`` build, load, compile and train in the strategy."""
    return strategy(name).scope()


def replicas() -> int:
    """Replicas of the strategy in the current scope (1 outside any)."""
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def replicas_of(model) -> int:
    """Replicas of the strategy ``model`` was created under (Keras runs its steps there)."""
    made = getattr(model, "distribute_strategy", None)
    return made.num_replicas_in_sync if made is not None else 1


def batch_sizes(n: int, batch_size: int, replicas: int = 1) -> list[int]:
    """Sizes of the batches of ``batch_size`` (a global batch: a multiple of ``replicas``)
    that cover ``n`` samples in order, none dropped.

    One replica: full batches and a smaller last one. Several: a strategy splits each batch
    over the replicas, and a last batch smaller than ``replicas`` would hand some replica an
    empty shard (CPU kernels with oneDNN crash on it). Then the last full batch and the
    remainder are split into two batches of at least ``replicas`` each, or joined into one.
    """
    if n <= 0:
        return []
    full, rest = divmod(n, batch_size)
    sizes = [batch_size] * full + ([rest] if rest else [])
    if replicas <= 1 or not rest or rest >= replicas or not full:
        return sizes
    tail = batch_size + rest
    if tail >= 2 * replicas:
        return [*sizes[:-2], tail - tail // 2, tail // 2]
    return [*sizes[:-2], tail]


def global_batch(batch_size: int) -> int:
    """The batch the input pipeline yields: ``batch_size`` per replica times the replicas."""
    return batch_size * replicas()


def prepare_fit(trainable, *others) -> None:
    """Work around Keras 3 under a strategy of more than one replica (a no-op otherwise).

    Two upstream bugs (keras-team/keras#20585, tensorflow/tensorflow#72388):
    - Before the first ``fit``/``evaluate``/``predict`` step, Keras builds a model created in
      a strategy's scope from one input batch averaged across replicas. That fails when the
      batch splits unevenly (7 validation images over 2 replicas) and always across workers.
      ``trainable`` and the ``others`` (the full model, the feature extractor) build from the
      first replica's share of the batch instead: the build needs shapes and dtypes only.
    - Across workers, Keras averages each step's loss and metrics with a reduction along axis
      0, which fails on scalars. The train and test steps return them as 1-element vectors
      instead: the reduction then averages them across workers as intended, so every worker
      logs (and stops early on) the same global values.
    """
    if replicas() == 1:
        return
    for model in (trainable, *others):
        model._maybe_symbolic_build = _first_replica_build(model)
    if _strategy_name == "multi_worker":
        from keras import ops

        def as_vectors(step):
            return lambda data: {k: ops.reshape(v, (1,)) for k, v in step(data).items()}

        trainable.train_step = as_vectors(trainable.train_step)
        trainable.test_step = as_vectors(trainable.test_step)


def _first_replica_build(model):
    """Keras' ``_maybe_symbolic_build`` with the first replica's data instead of the mean."""
    import tensorflow as tf
    from keras import tree

    def build(iterator=None, data_batch=None) -> None:
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = next(it)
                break
        strategy = model.distribute_strategy
        data_batch = tree.map_structure(
            lambda x: strategy.experimental_local_results(x)[0]
            if isinstance(x, tf.distribute.DistributedValues) else x, data_batch)
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    return build


def is_multi_worker() -> bool:
    """Whether this process trains in a multi-worker cluster (each worker has its own disk,
    and every ``predict`` is a collective all workers must join)."""
    return _strategy is not None and _strategy_name == "multi_worker"


def is_chief() -> bool:
    """False only on the non-chief workers of a multi-worker cluster. They train in step
    with the chief and write the same outputs; keep (push, commit) the chief's."""
    if _strategy is None or _strategy_name != "multi_worker":
        return True
    resolver = _strategy.cluster_resolver
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def summary() -> dict:
    """What the run trained with, for the phase's metrics.json."""
    made = _strategy
    if made is None:
        return {"strategy": "none", "replicas": 1}
    return {"strategy": _strategy_name, "strategy_class": type(made).__name__,
            "replicas": made.num_replicas_in_sync}


def check_tf_config(value: str | None) -> dict:
    """Parse ``TF_CONFIG``; a clear error when it is missing or malformed."""
    example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not value:
        raise ParamsError("train.strategy: multi_worker needs the TF_CONFIG environment variable "
                          f"on every worker, e.g. TF_CONFIG='{example}' (index 0 on the first "
                          "machine, 1 on the second, …)")
    invalid = ParamsError(f"TF_CONFIG={value!r} is not a valid cluster description; expected "
                          f"e.g. {example}")
    try:
        config = json.loads(value)
        workers = config["cluster"]["worker"]
        task = config["task"]
        valid = (task["type"] in ("worker", "chief") and isinstance(task["index"], int)
                 and isinstance(workers, list) and bool(workers))
    except (ValueError, KeyError, TypeError):
        raise invalid from None
    if not valid:
        raise invalid
    return config
