"""Micro-batching and hot reload: the Batcher on a plain numpy forward pass, and a server
whose `production/current` is switched while clients stream requests."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import httpx
import numpy as np
import pytest
from api_helpers import png_bytes, serving, tiny_model

from unfreeze.deploy import predict as pred
from unfreeze.deploy.api import create_app
from unfreeze.deploy.api_limits import ApiSettings
from unfreeze.deploy.batching import Batcher, QueueFull
from unfreeze.ops.promote import point_current


def recording_run(batches: list, gate: threading.Event | None = None):
    """A forward pass that returns each image's first pixel and records the batch sizes."""
    def run(images: np.ndarray):
        if gate is not None:
            gate.wait(10)
        batches.append(len(images))
        return images[:, 0, 0, :1].astype(np.float32), f"pass {len(batches)}"
    return run


def images(first: int, n: int = 1, size: int = 2) -> np.ndarray:
    return np.arange(first, first + n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones(
        (1, size, size, 3), np.uint8)


def gated(max_batch: int, max_wait_s: float, max_queue: int, wrap=lambda run: run):
    """A batcher whose passes wait for a gate (``wrap`` may change its run function); the
    batch sizes it records, and the gate."""
    batches: list[int] = []
    gate = threading.Event()
    batcher = Batcher(wrap(recording_run(batches, gate)), max_batch=max_batch,
                      max_wait_s=max_wait_s, max_queue=max_queue)
    return batcher, batches, gate


async def blocked_pass(batcher: Batcher) -> asyncio.Future:
    """One image submitted, its pass started alone and blocked on the gate."""
    busy = asyncio.ensure_future(batcher.submit(images(0)))
    await asyncio.sleep(0.1)
    return busy


async def run_batcher(batcher: Batcher, work):
    batcher.start()
    try:
        return await work
    finally:
        await batcher.stop()


def test_waiting_requests_are_gathered_up_to_max_batch_and_each_gets_its_rows():
    batcher, batches, gate = gated(max_batch=4, max_wait_s=0.05, max_queue=100)

    async def work():
        first = await blocked_pass(batcher)
        rest = [asyncio.ensure_future(batcher.submit(images(i, 2 if i == 3 else 1)))
                for i in range(1, 7)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(run_batcher(batcher, work()))
    assert batches == [1, 4, 3]  # 7 waiting images: 4, then 3 (the 2-image request whole)
    for i, (probs, _) in enumerate(answers):
        expected = [i, i + 1] if i == 3 else [i]
        assert probs[:, 0].tolist() == expected  # its own rows, in order
    assert answers[0][1] == "pass 1" and answers[1][1] == "pass 2"


def test_a_full_queue_refuses_new_images_and_counts_explanations():
    batcher, batches, gate = gated(max_batch=8, max_wait_s=0.02, max_queue=3)

    async def work():
        busy = await blocked_pass(batcher)  # in a (blocked) pass: no longer queued
        queued = [asyncio.ensure_future(batcher.submit(images(i))) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="3 images queued; at most 3"):
            await batcher.submit(images(4))
        with pytest.raises(QueueFull, match="3 images and 0 explanations queued"):
            await batcher.call(print, admit=True)
        gate.set()
        return await asyncio.gather(busy, *queued)

    assert len(asyncio.run(run_batcher(batcher, work()))) == 4
    assert batches == [1, 3]


def test_cancelled_requests_are_skipped_and_a_failed_pass_fails_only_its_requests():
    failing = {"on": False}

    def failing_once(run):
        def maybe_failing(x):
            if failing["on"]:
                failing["on"] = False
                raise RuntimeError("boom")
            return run(x)
        return maybe_failing

    batcher, batches, gate = gated(max_batch=8, max_wait_s=0.01, max_queue=100,
                                   wrap=failing_once)

    async def work():
        busy = await blocked_pass(batcher)
        gone = asyncio.ensure_future(batcher.submit(images(1)))
        kept = asyncio.ensure_future(batcher.submit(images(2)))
        await asyncio.sleep(0)
        gone.cancel()  # the client left: its image is not computed
        gate.set()
        await busy
        assert (await kept)[0][:, 0].tolist() == [2]
        failing["on"] = True
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(images(3))
        return await batcher.submit(images(4))  # the batcher still works

    probs, _ = asyncio.run(run_batcher(batcher, work()))
    assert probs[:, 0].tolist() == [4]
    assert batches == [1, 1, 1]


def test_images_of_another_size_are_not_stacked_with_the_others():
    batcher, batches, gate = gated(max_batch=8, max_wait_s=0.01, max_queue=100)

    async def work():
        busy = await blocked_pass(batcher)
        mixed = [asyncio.ensure_future(batcher.submit(images(i, size=3 if i <= 2 else 2)))
                 for i in range(1, 5)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(busy, *mixed)

    answers = asyncio.run(run_batcher(batcher, work()))
    assert [a[0][0, 0] for a in answers] == [0, 1, 2, 3, 4]
    assert batches == [1, 2, 2]  # the two 3×3 images, then the two 2×2 ones


@pytest.fixture
def production(tmp_path):
    """Two releases of different weights and image sizes (75 and 99 px); ``current``
    points at the first."""
    prod = tmp_path / "production"
    names = ["20261130T000000Z-aaaaaaaa", "20261130T000100Z-bbbbbbbb"]
    for seed, name in enumerate(names):
        tiny_model(prod / "releases" / name, seed=seed, size=(75, 99)[seed])
        (prod / "releases" / name / "MODEL_CARD.md").write_text(f"# {name}\n")
    point_current(prod, names[0])
    return prod, names


def stream(url: str, data: bytes, clients: int, until: threading.Event, out: list) -> None:
    """``clients`` concurrent clients posting ``data`` until ``until`` is set; each answer's
    (client, status, release, probability of dog) appended to ``out`` as it comes."""
    async def client(http, k, out):
        while not until.is_set():
            r = await http.post(url + "/v1/predict", content=data)
            body = r.json()
            out.append((k, r.status_code, body.get("release"),
                        body["results"][0]["probabilities"]["dog"] if r.status_code == 200
                        else None))

    async def main():
        async with httpx.AsyncClient(timeout=60) as http:
            await asyncio.gather(*(client(http, k, out) for k in range(clients)))

    asyncio.run(main())


def test_a_release_switch_under_load_answers_every_request(production, tmp_path):
    prod, names = production
    data = png_bytes(42)
    (tmp_path / "x.png").write_bytes(data)
    expected = {name: pred.predict_files(pred.load_saved(prod / "releases" / name),
                                         [tmp_path / "x.png"], progress=False)
                ["prob_dog"][0].as_py() for name in names}
    assert abs(expected[names[0]] - expected[names[1]]) > 1e-4  # the two are told apart
    app = create_app(ApiSettings(prod / "current", reload_interval_s=0.1))
    with serving(app) as url:
        first = weakref.ref(app.app.state.holder.current.saved.model)
        done = threading.Event()
        answers: list = []
        worker = threading.Thread(target=lambda: stream(url, data, 3, done, answers))
        worker.start()
        time.sleep(1.0)
        point_current(prod, names[1])  # what a promotion or `release use` does
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(a[2] == names[1] for a in list(answers)):
            time.sleep(0.1)
        time.sleep(0.5)
        done.set()
        worker.join(60)
        model = httpx.get(url + "/v1/model").json()
        metrics = httpx.get(url + "/metrics").text
        httpx.post(url + "/v1/predict", content=data)  # a last batch on the new release
        gc.collect()
        assert first() is None, "the old release's model is still referenced after the swap"
    assert answers and all(status == 200 for _, status, _, _ in answers)
    assert {a[2] for a in answers} == set(names)
    for name in names:  # each answer computed by the release it names
        got = [p for _, _, release, p in answers if release == name]
        assert got and all(p == pytest.approx(expected[name], abs=1e-5) for p in got)
    for k in range(3):  # no client sees the old release after the new one
        seen = [release for client, _, release, _ in answers if client == k]
        assert seen == sorted(seen, key=names.index)
    assert model["release"] == names[1] and model["card"]["markdown"] == f"# {names[1]}\n"
    assert 'unfreeze_api_reloads_total{outcome="swapped"} 2.0' in metrics
    assert f'release="{names[0]}"' not in metrics  # the old release's info gauge removed


def test_a_broken_release_is_not_swapped_in(production):
    prod, names = production
    broken = prod / "releases" / "20261130T000200Z-cccccccc"
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"not a keras file")
    (broken / "meta.json").write_text('{"classes": ["cat", "dog"], "image_size": 75}')
    app = create_app(ApiSettings(prod / "current", reload_interval_s=0.1))
    with serving(app) as url:
        point_current(prod, broken.name)
        deadline = time.monotonic() + 30
        while httpx.get(url + "/readyz").json()["reload_error"] is None:
            assert time.monotonic() < deadline, "the failed load was not reported"
            time.sleep(0.1)
        ready = httpx.get(url + "/readyz").json()
        r = httpx.post(url + "/v1/predict", content=png_bytes(1))
        metrics = httpx.get(url + "/metrics").text
    assert ready["status"] == "ready" and ready["release"] == names[0]
    assert r.status_code == 200 and r.json()["release"] == names[0]
    assert 'unfreeze_api_reloads_total{outcome="failed"} 1.0' in metrics
