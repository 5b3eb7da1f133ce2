"""The HTTP API on tiny saved models, through a real uvicorn server on a loopback port:
endpoint contracts, per-image errors, micro-batching, limits (413/422/503/504/401)."""

from __future__ import annotations

import asyncio
import io
import socket
import time

import httpx
import pytest
from api_helpers import SIZE, carded_model, png_bytes, serving, tiny_model
from PIL import Image

from unfreeze.config.errors import ApiError
from unfreeze.deploy import predict as pred
from unfreeze.deploy.api import create_app
from unfreeze.deploy.api_limits import ApiSettings
from unfreeze.evaluation.calibrate import OperatingPoint


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return carded_model(tmp_path_factory.mktemp("api") / "export")


@pytest.fixture(scope="module")
def api(model_dir):
    """One server for the contract tests; yields (url, app)."""
    app = create_app(ApiSettings(model_dir, max_wait_ms=20))
    with serving(app) as url:
        yield url, app


def files(*images: tuple[str, bytes]) -> list:
    return [("file", (name, data, "application/octet-stream")) for name, data in images]


def metric(url: str, name: str, **labels) -> float:
    """One sample's value from /metrics (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return sample.value
    return 0.0


def test_predict_answers_each_image_with_its_decision_or_its_own_error(api, model_dir,
                                                                       tmp_path):
    url, _ = api
    good = [png_bytes(seed) for seed in range(3)]
    bad = b"not an image"
    r = httpx.post(url + "/v1/predict", files=files(("a.png", good[0]), ("bad.png", bad),
                                                      ("b.png", good[1]), ("c.png", good[2])))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["release"] == f"export@{body['model_sha256'][:8]}"
    assert body["task"] == "multiclass"
    assert [x["name"] for x in body["results"]] == ["a.png", "bad.png", "b.png", "c.png"]
    assert body["results"][1] == {"name": "bad.png", "ok": False,
                                  "error": body["results"][1]["error"]}
    assert body["results"][1]["error"].startswith(  # named as prepare names a file
        "cannot decode image: cannot identify image file 'bad.png'")

    # the same probabilities and decisions as `unfreeze predict` on the same files
    paths = []
    for i, data in enumerate(good):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(data)
    table = pred.predict_files(pred.load_saved(model_dir), paths, progress=False)
    answered = [x for x in body["results"] if x["ok"]]
    for row, x in zip(table.to_pylist(), answered, strict=True):
        assert x["predicted"] == row["predicted"]
        assert x["probabilities"]["dog"] == pytest.approx(row["prob_dog"], abs=1e-5)
        assert x["threshold"] == 0.3 and x["temperature"] == 1.5
        assert x["positive_class"] == "dog" and x["rule"] == "threshold"
        assert x["predicted"] == ("dog" if x["probabilities"]["dog"] >= 0.3 else "cat")


def test_a_raw_body_is_one_image_and_a_bad_only_image_is_422(api):
    url, _ = api
    r = httpx.post(url + "/v1/predict?name=cell.png", content=png_bytes(7),
                   headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["results"][0]["name"] == "cell.png"
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, "TIFF")
    for data, reason in ((b"", "empty file (0 bytes)"),
                         (tiff.getvalue(), "format TIFF is not supported"),
                         (b"\x89PNG\r\n\x1a\n garbage", "cannot decode image")):
        r = httpx.post(url + "/v1/predict", content=data)
        assert r.status_code == 422, (reason, r.text)
        assert reason in r.json()["results"][0]["error"] and reason in r.json()["detail"]
    r = httpx.post(url + "/v1/predict", files={"note": (None, "text only")})
    assert r.status_code == 422 and "no file part" in r.json()["detail"]


def test_explain_gives_the_overlay_with_the_decision_predict_gives(api):
    url, _ = api
    data = png_bytes(11)
    decided = httpx.post(url + "/v1/predict", content=data).json()["results"][0]["predicted"]
    r = httpx.post(url + "/v1/explain", files=files(("x.png", data)))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-unfreeze-predicted"] == decided
    assert Image.open(io.BytesIO(r.content)).size == (SIZE, SIZE)
    j = httpx.post(url + "/v1/explain?format=json", content=data).json()
    assert j["result"]["predicted"] == decided and j["png_base64"]
    assert httpx.post(url + "/v1/explain?label=cat", content=data).status_code == 422
    assert httpx.post(url + "/v1/explain", files=files(("a", data), ("b", data))
                      ).status_code == 422


def test_model_health_ready_and_metrics(api):
    url, _ = api
    m = httpx.get(url + "/v1/model").json()
    assert m["classes"] == ["cat", "dog"] and m["image_size"] == SIZE
    assert m["operating_point"]["threshold"] == 0.3 and m["task"] == "multiclass"
    assert m["card"]["markdown"].startswith("# Model card")
    assert m["card"]["json"] == {"facts": {"test": {"roc_auc": 0.5}}}
    assert httpx.get(url + "/healthz").json() == {"status": "alive"}
    ready = httpx.get(url + "/readyz").json()
    assert ready["status"] == "ready" and ready["release"] == m["release"]
    httpx.post(url + "/v1/predict", content=b"junk")
    assert metric(url, "unfreeze_api_requests_total", endpoint="/v1/predict",
                  status="422") >= 1
    assert metric(url, "unfreeze_api_model_info", release=m["release"]) == 1
    assert metric(url, "unfreeze_api_request_seconds_count", endpoint="/v1/model") >= 1
    page = httpx.get(url + "/")
    assert page.status_code == 200 and '"static/app.js"' in page.text
    script = httpx.get(url + "/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


def test_concurrent_requests_share_forward_passes_with_unchanged_probabilities(api):
    url, app = api
    images = [png_bytes(100 + i) for i in range(8)]
    alone = [httpx.post(url + "/v1/predict", content=d).json()["results"][0]
             for d in images]
    before = metric(url, "unfreeze_api_batch_size_count")
    batcher = app.app.state.batcher
    gate = batcher.executor.submit(time.sleep, 1.0)  # the model thread busy: requests queue

    async def burst():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(url + "/v1/predict", content=d)
                                          for d in images))

    answers = asyncio.run(burst())
    gate.result()
    assert [r.status_code for r in answers] == [200] * 8
    passes = metric(url, "unfreeze_api_batch_size_count") - before
    assert passes < 8  # gathered: fewer forward passes than requests
    assert metric(url, "unfreeze_api_batch_size_bucket", le="1.0") < metric(
        url, "unfreeze_api_batch_size_count")  # some pass held more than one image
    for one, together in zip(alone, answers, strict=True):
        got = together.json()["results"][0]
        assert got["predicted"] == one["predicted"]
        assert got["probabilities"]["dog"] == pytest.approx(one["probabilities"]["dog"],
                                                            abs=1e-5)


@pytest.fixture(scope="module")
def strict(model_dir):
    """A server with tight limits and a token."""
    app = create_app(ApiSettings(model_dir, max_queue=2, max_images=2, max_body_mb=0.05,
                                 max_pixels=50 * 50, timeout_s=3, max_batch=1,
                                 token="s3cret"))
    with serving(app) as url:
        yield url, app


AUTH = {"authorization": "Bearer s3cret"}


def test_token_size_pixel_and_count_limits(strict):
    url, _ = strict
    assert httpx.get(url + "/v1/model").status_code == 401
    r = httpx.post(url + "/v1/predict", content=png_bytes(1),
                   headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(url + "/v1/model", headers={"authorization": "Bearer s3cre"}
                     ).status_code == 401  # a prefix of the token is no token
    assert httpx.get(url + "/v1/model", headers={"authorization": "bearer s3cret"}
                     ).status_code == 200  # the scheme in any case (RFC 7235)
    assert httpx.get(url + "/healthz").status_code == 200  # probes need no token
    assert httpx.post(url + "/v1/predict", content=png_bytes(1), headers=AUTH
                      ).status_code == 200
    big = httpx.post(url + "/v1/predict", content=b"x" * 60_000, headers=AUTH)
    assert big.status_code == 413 and "--max-body-mb" in big.json()["detail"]
    many = httpx.post(url + "/v1/predict", headers=AUTH,
                      files=files(*[(f"{i}.png", png_bytes(i, 8)) for i in range(3)]))
    assert many.status_code == 413 and "--max-images 2" in many.json()["detail"]
    bomb = httpx.post(url + "/v1/predict", content=png_bytes(1, size=60), headers=AUTH)
    assert bomb.status_code == 422
    assert "refused before decoding: 60×60 = 3600 pixels" in bomb.json()["results"][0]["error"]


def test_a_declared_length_over_the_limit_is_413_before_any_body_is_sent(strict):
    url, _ = strict
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                  b"Content-Type: image/png\r\nContent-Length: 10000000\r\n\r\n")
        answer = b""  # no body sent: only the declared length can refuse it
        while b"--max-body-mb" not in answer and (chunk := s.recv(4096)):
            answer += chunk  # the headers and the body may come in two reads
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"--max-body-mb" in answer


def test_a_streamed_body_over_the_limit_is_413(strict):
    url, _ = strict

    def chunks():
        for _ in range(10):
            yield b"x" * 10_000

    r = httpx.post(url + "/v1/predict", content=chunks(), headers=AUTH)
    assert r.status_code == 413


def test_a_full_queue_answers_503_and_a_slow_model_504(strict):
    url, app = strict
    batcher = app.app.state.batcher
    gate = batcher.executor.submit(time.sleep, 4.0)

    async def load():
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as client:
            first = [asyncio.ensure_future(client.post(url + "/v1/predict",
                                                       content=png_bytes(i)))
                     for i in range(3)]  # one in a (blocked) pass, two queued
            while batcher.queued < 2:
                await asyncio.sleep(0.01)
            queued = metric(url, "unfreeze_api_queue_images")
            refused = await client.post(url + "/v1/predict", content=png_bytes(9))
            explain = await client.post(url + "/v1/explain", content=png_bytes(9))
            return queued, (refused, explain), await asyncio.gather(*first)

    queued, refused, first = asyncio.run(load())
    gate.result()
    assert queued == 2  # the gauge shows the backlog
    for r in refused:  # explanations count against the same bound
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert [r.status_code for r in first] == [504] * 3  # the model thread was busy 4 s > 3 s
    assert "--timeout-s" in first[0].json()["detail"]
    assert httpx.post(url + "/v1/predict", content=png_bytes(1), headers=AUTH
                      ).status_code == 200  # nothing stuck


def test_a_client_that_disconnects_mid_upload_costs_no_5xx(strict):
    url, _ = strict
    host, port = url.removeprefix("http://").split(":")
    before = server_errors(url)
    gone = metric(url, "unfreeze_api_requests_total", endpoint="/v1/predict", status="499")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                  b"Content-Type: image/png\r\nContent-Length: 40000\r\n\r\n" + b"x" * 100)
    deadline = time.monotonic() + 10
    while metric(url, "unfreeze_api_requests_total", endpoint="/v1/predict",
                 status="499") == gone and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(url, "unfreeze_api_requests_total", endpoint="/v1/predict",
                  status="499") == gone + 1  # counted as the client's going, not ours
    assert httpx.post(url + "/v1/predict", content=png_bytes(3), headers=AUTH
                      ).status_code == 200
    assert server_errors(url) == before


def server_errors(url: str) -> dict:
    """Requests answered 5xx other than 503/504 (busy, timed out), by endpoint and status."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.labels["endpoint"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(httpx.get(url + "/metrics").text)
            for s in family.samples if s.name == "unfreeze_api_requests_total"
            and s.labels["status"].startswith("5") and s.labels["status"] not in ("503", "504")}


def test_bad_options_name_the_flag(model_dir):
    with pytest.raises(ApiError, match="--max-batch 0"):
        ApiSettings(model_dir, max_batch=0)
    with pytest.raises(ApiError, match="--max-queue 4 < --max-images 8"):
        ApiSettings(model_dir, max_queue=4, max_images=8)


def test_multilabel_answers_label_sets_with_per_label_thresholds(tmp_path):
    point = OperatingPoint(["blue", "red"], None, None, "f1", 1.0, "none",
                           thresholds=[0.2, 0.9], temperatures=[1.0, 2.0], fallbacks={})
    folder = tiny_model(tmp_path / "ml", ("blue", "red"), point, multilabel=True)
    with serving(create_app(ApiSettings(folder))) as url:
        data = png_bytes(5)
        x = httpx.post(url + "/v1/predict", content=data).json()["results"][0]
        assert x["thresholds"] == {"blue": 0.2, "red": 0.9}
        assert x["temperatures"] == {"blue": 1.0, "red": 2.0}
        expected = [c for c in ("blue", "red")
                    if x["probabilities"][c] >= x["thresholds"][c]]
        assert x["labels"] == expected and x["predicted"] == ";".join(expected)
        r = httpx.post(url + "/v1/explain?label=red&format=json", content=data).json()
        assert r["result"]["explained"] == "red" and r["result"]["labels"] == expected
        wrong = httpx.post(url + "/v1/explain?label=green", content=data)
        assert wrong.status_code == 422 and "blue, red" in wrong.json()["detail"]


def test_a_crash_is_counted_as_a_500(model_dir):
    from fastapi import FastAPI

    from unfreeze.deploy.api_limits import Guard
    from unfreeze.deploy.api_metrics import ApiMetrics

    app, metrics = FastAPI(), ApiMetrics()

    @app.get("/v1/model")
    async def broken():
        raise RuntimeError("a bug")

    async def call():
        transport = httpx.ASGITransport(Guard(app, ApiSettings(model_dir), metrics),
                                        raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/v1/model")

    assert asyncio.run(call()).status_code == 500
    assert metrics.registry.get_sample_value(
        "unfreeze_api_requests_total", {"endpoint": "/v1/model", "status": "500"}) == 1
