"""train.strategy: MirroredStrategy over 2 logical CPUs and MultiWorkerMirroredStrategy over two
local processes, each checked against the single-device run of the same global batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder

from unfreeze.config.errors import ParamsError
from unfreeze.config.params import params_from_dict
from unfreeze.training import distribute

SCRIPT = Path(__file__).with_name("train_tiny.py")
TOLERANCE = 1e-5  # float32 all-reduce order; a different global batch moves them by ~0.02


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """Six trainings at once, each its own process: one device with batch 8; mirrored over 2
    logical CPUs with batch 4 per replica; two multi-worker processes (TF_CONFIG on loopback)
    with batch 4 each; a multi-label model on one device and mirrored. Returns each run's JSON
    (plus its exit code and stderr)."""
    root = tmp_path_factory.mktemp("distribute")
    images = make_image_folder(root / "images", {"cat": 12, "dog": 13})
    ports = free_ports(2)
    base = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    base.pop(distribute.LOGICAL_CPUS_ENV, None)
    base.pop("TF_CONFIG", None)
    plans = {"single": ("none", 8, {}),
             "mirrored": ("mirrored", 4, {distribute.LOGICAL_CPUS_ENV: "2"}),
             "ml_single": ("none", 8, {}),
             "ml_mirrored": ("mirrored", 4, {distribute.LOGICAL_CPUS_ENV: "2"})}
    for i in range(2):
        config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                  "task": {"type": "worker", "index": i}}
        plans[f"worker{i}"] = ("multi_worker", 4, {"TF_CONFIG": json.dumps(config)})
    procs = {}
    try:
        for name, (strategy, batch, env) in plans.items():
            procs[name] = subprocess.Popen(
                [sys.executable, str(SCRIPT), str(images), strategy, str(batch),
                 str(root / name), "multilabel" if name.startswith("ml_") else "multiclass"],
                env=base | env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
        outputs = {name: proc.communicate(timeout=600) for name, proc in procs.items()}
    finally:
        for proc in procs.values():  # every process the test started is ended
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = {}
    for name, (out, err) in outputs.items():
        assert procs[name].returncode == 0, f"{name}:\n{out[-3000:]}\n{err[-3000:]}"
        results[name] = json.loads(out.strip().splitlines()[-1]) | {"stderr": err}
    return results


def probabilities(run: dict) -> np.ndarray:
    return np.asarray(run["probabilities"])


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_matches_one_device(runs):
    single, mirrored = runs["single"], runs["mirrored"]
    assert "train.strategy=mirrored: MirroredStrategy, 2 replicas" in mirrored["stderr"]
    assert mirrored["head"] == {"strategy": "mirrored", "replicas": 2, "global_batch_size": 8}
    assert mirrored["finetune_replicas"] == 2
    assert single["head"]["replicas"] == 1 and single["head"]["global_batch_size"] == 8
    assert np.abs(probabilities(mirrored) - probabilities(single)).max() < TOLERANCE
    assert np.abs(probabilities(single)[:, 0] - 0.5).max() > 1e-3  # training moved them


@pytest.mark.slow
def test_a_multilabel_model_trains_the_same_mirrored_as_on_one_device(runs):
    single, mirrored = runs["ml_single"], runs["ml_mirrored"]
    assert mirrored["head"] == {"strategy": "mirrored", "replicas": 2, "global_batch_size": 8}
    assert probabilities(single).shape == (9, 3)  # three independent sigmoid labels
    assert np.abs(probabilities(mirrored) - probabilities(single)).max() < TOLERANCE
    assert not np.allclose(probabilities(single).sum(axis=1), 1.0)


@pytest.mark.slow
def test_two_multi_worker_processes_train_in_step(runs):
    workers = [runs["worker0"], runs["worker1"]]
    assert [w["chief"] for w in workers] == [True, False]
    for i, w in enumerate(workers):
        assert w["head"] == {"strategy": "multi_worker", "replicas": 2, "global_batch_size": 8}
        assert f"CollectiveAllReduceStrategy, 2 replicas, worker {i}" in w["stderr"]
    # synchronous training: both workers end with the same model, the single-device one
    assert np.array_equal(probabilities(workers[0]), probabilities(workers[1]))
    assert np.abs(probabilities(workers[0]) - probabilities(runs["single"])).max() < TOLERANCE


def test_strategy_and_cluster_errors_name_what_to_fix():
    with pytest.raises(ParamsError, match=r"train\.strategy"):
        params_from_dict({"train": {"strategy": "horovod"}})
    with pytest.raises(ParamsError, match="TF_CONFIG environment variable"):
        distribute.check_tf_config(None)
    with pytest.raises(ParamsError, match="not a valid cluster description"):
        distribute.check_tf_config('{"cluster": {}}')
    config = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert distribute.check_tf_config(json.dumps(config)) == config
    for bad in ("two", "0", "100"):
        with pytest.raises(ParamsError, match=f"UNFREEZE_LOGICAL_CPUS={bad!r}"):
            distribute.split_cpu(bad)
    assert distribute.split_cpu("1") == 1
    with pytest.raises(ParamsError, match="not one of"):
        distribute.strategy("horovod")


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_batches_cover_every_sample_in_order_and_never_leave_a_replica_empty(replicas):
    for n in range(1, 70):
        for batch in range(replicas, 10 * replicas, replicas):  # global batches
            sizes = distribute.batch_sizes(n, batch, replicas)
            assert sum(sizes) == n and all(size > 0 for size in sizes)
            assert max(sizes) <= 2 * batch
            if replicas == 1 or n % batch == 0 or n % batch >= replicas:
                assert sizes == distribute.batch_sizes(n, batch)  # the plain batching
            if n >= replicas:  # a strategy can give every replica one sample or more
                assert min(sizes) >= replicas, (n, batch, sizes)


def test_a_strategys_datasets_end_in_batches_every_replica_gets_a_share_of(image_folder):
    from unfreeze.training.features import CachedViews
    from unfreeze.training.inputs import make_dataset

    paths = sorted(str(p) for p in (image_folder / "cat").glob("*.png"))[:9]
    plain = [len(b) for b in make_dataset(paths, None, 16, batch_size=8)]
    assert plain == [8, 1]  # one replica: the classic batching, the last one partial
    shared = make_dataset(paths, np.arange(9), 16, batch_size=8, replicas=2)
    assert [len(x) for x, _ in shared] == [5, 4] and shared.cardinality() == 2
    labels = np.concatenate([y.numpy() for _, y in shared])
    assert labels.tolist() == list(range(9))  # order and labels kept
    views = CachedViews(np.zeros((1, 9, 4)), np.arange(9), 8, None, seed=0, replicas=2)
    assert [len(views.batch(0, i)[1]) for i in range(len(views))] == [5, 4]
    assert sorted(np.concatenate([views.batch(0, i)[1] for i in range(len(views))])) == list(
        range(9))
