"""`unfreeze api` as a real process: a token, `unfreeze release use` switching the release
while clients stream requests, and SIGTERM answering what is in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from api_helpers import png_bytes, tiny_model
from conftest import free_port

from unfreeze.ops.promote import point_current
from unfreeze.runtime import child_env

pytestmark = pytest.mark.slow
NAMES = ["20261130T000000Z-aaaaaaaa", "20261130T000100Z-bbbbbbbb"]
TOKEN = {"authorization": "Bearer let-me-in"}
UNFREEZE = str(Path(sys.executable).parent / "unfreeze")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "params.yaml").write_text("retrain:\n  production_dir: production\n")
    for seed, name in enumerate(NAMES):
        tiny_model(tmp_path / "production/releases" / name, seed=seed)
    point_current(tmp_path / "production", NAMES[0])
    return tmp_path


@pytest.fixture
def server(project):
    """`unfreeze api` on a free port with a token; yields (url, process)."""
    port = free_port()
    env = dict(child_env(), UNFREEZE_API_TOKEN="let-me-in")
    log = (project / "api.log").open("w")
    proc = subprocess.Popen([UNFREEZE, "api", "--model", "production/current", "--port",
                             str(port), "--reload-interval-s", "0.2", "--log-level",
                             "warning"], cwd=project, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (project / "api.log").read_text()
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not ready in 180 s"
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.close()


def post_many(url: str, n: int, data: bytes) -> list[httpx.Response]:
    async def main():
        async with httpx.AsyncClient(timeout=60, headers=TOKEN) as http:
            return await asyncio.gather(*(http.post(url + "/v1/predict", content=data)
                                          for _ in range(n)), return_exceptions=True)
    return asyncio.run(main())


def test_release_use_under_load_then_sigterm_answers_in_flight_requests(project, server):
    url, proc = server
    data = png_bytes(3)
    assert httpx.post(url + "/v1/predict", content=data).status_code == 401
    answers: list = []
    done = threading.Event()

    def stream():
        with httpx.Client(timeout=60, headers=TOKEN) as http:
            while not done.is_set():
                r = http.post(url + "/v1/predict", content=data)
                answers.append((r.status_code, r.json().get("release")))

    worker = threading.Thread(target=stream)
    worker.start()
    time.sleep(1.0)
    switched = subprocess.run([UNFREEZE, "release", "use", NAMES[1]], cwd=project,
                              env=child_env(), capture_output=True, text=True, timeout=120)
    assert switched.returncode == 0, switched.stderr
    deadline = time.monotonic() + 60
    while not any(release == NAMES[1] for _, release in list(answers)):
        assert time.monotonic() < deadline, "the new release never answered"
        time.sleep(0.1)
    done.set()
    worker.join(60)
    assert all(status == 200 for status, _ in answers)
    releases = [release for _, release in answers]
    assert releases == sorted(releases, key=NAMES.index) and set(releases) == set(NAMES)

    # SIGTERM while requests are in flight: each is answered, then the process ends
    burst: list = []
    sender = threading.Thread(target=lambda: burst.extend(post_many(url, 16, data)))
    sender.start()
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    sender.join(120)
    # uvicorn answers what is in flight, shuts the app down, then re-raises the signal
    assert proc.wait(60) == -signal.SIGTERM
    answered = [r for r in burst if isinstance(r, httpx.Response)]
    refused = [r for r in burst if not isinstance(r, httpx.Response)]
    assert all(r.status_code == 200 and r.json()["release"] == NAMES[1] for r in answered)
    # requests that had not connected before the signal are refused at connect, never cut
    assert all(isinstance(e, httpx.ConnectError) for e in refused), refused
    assert answered, "nothing was in flight: the burst came too late"
