"""The HTTP API and web page of `unfreeze api` (FastAPI, served by uvicorn).

- ``POST /v1/predict``: images as multipart file parts, or one raw image body; one result per
  image (decision, every probability, threshold and temperature used) or its own error; 422
  when no image could be used.
- ``POST /v1/explain``: one image; the Grad-CAM overlay PNG (``?format=json``: the result and
  the PNG in base64); ``?label=`` for a multi-label model.
- ``GET /v1/model``: release, classes, image size, operating point, model card and metrics.
- ``GET /healthz``, ``GET /readyz``: process alive; a release loaded and warmed up.
- ``GET /metrics``: Prometheus text (:mod:`unfreeze.deploy.api_metrics`).
- ``GET /``: the web page (``web/``: every script and style served here, no CDN).

Every answer that used the model names its release. Limits (body size, images per request
and the token are :mod:`unfreeze.deploy.api_limits`'s): body size (413, before the body is
read when it declares its length), images per request (413), pixels per image (refused from
the header, undecoded), images decoded at once (:data:`DECODERS`), a bounded queue of images
and explanations (503 + Retry-After), concurrent connections (uvicorn's 503), the time to
answer (504). With ``UNFREEZE_API_TOKEN`` set, ``/v1/*`` needs ``Authorization: Bearer
<token>`` (401). The model path is fixed at start; no request names a file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from unfreeze.deploy import serving
from unfreeze.deploy.api_limits import (
    ApiSettings,
    BodyTooLarge,
    Guard,
    Refused,
    authorize,
    read_uploads,
    reply,
)
from unfreeze.deploy.api_metrics import CONTENT_TYPE, ApiMetrics
from unfreeze.deploy.batching import Batcher, QueueFull, StaleImageSize
from unfreeze.deploy.predict import check_label
from unfreeze.deploy.serving import Holder, Release

WEB = Path(__file__).with_name("web")
DECODERS = 2  # images decoded at once: bounds the memory a burst of large images takes


def create_app(settings: ApiSettings) -> Guard:
    """The ASGI app: routes, limits, metrics, and the model holder and batcher that the
    lifespan starts (loading runs in the background: ``/healthz`` answers at once)."""
    metrics = ApiMetrics()
    holder = Holder(settings.model, metrics.swapped,
                    lambda error: metrics.reloads.labels("failed").inc())
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(_run(holder), settings.max_batch, settings.max_wait_ms / 1000,
                          settings.max_queue, metrics.batch.observe)
        batcher.start()
        metrics.queue.set_function(lambda: batcher.queued + batcher.calls)
        state["batcher"] = app.state.batcher = batcher
        state["decoders"] = ThreadPoolExecutor(DECODERS, thread_name_prefix="unfreeze-decode")
        watch = asyncio.get_running_loop().create_task(holder.watch(settings.reload_interval_s))
        try:
            yield
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await batcher.stop()
            state["decoders"].shutdown(wait=False, cancel_futures=True)
            holder.close()

    app = FastAPI(title="unfreeze", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.holder, app.state.metrics = holder, metrics  # for benchmarks and tests
    auth = Depends(authorize(settings.token))
    _add_exception_handlers(app)
    _add_model_routes(app, settings, holder, state, metrics, auth)
    _add_status_routes(app, holder, state, metrics)
    return Guard(app, settings, metrics)


def _run(holder: Holder):
    """The batcher's forward pass: on the release in use when the batch starts."""
    def run(images: np.ndarray) -> tuple[np.ndarray, Release]:
        release = holder.current
        return release.probabilities(images), release
    return run


def _add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return exc.response

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> Response:
        return reply(413, str(exc))

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=499)  # nobody reads it: counted, never a 5xx


def _add_status_routes(app: FastAPI, holder: Holder, state: dict,
                       metrics: ApiMetrics) -> None:
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if holder.current is None:
            return JSONResponse({"status": "loading", "error": holder.error or None}, 503)
        if not state["batcher"].alive:
            return JSONResponse({"status": "broken", "error": "the batch loop ended"}, 503)
        return JSONResponse({"status": "ready", "release": holder.current.name,
                             "reload_error": holder.error or None})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(WEB / "index.html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")


def _add_model_routes(app: FastAPI, settings: ApiSettings, holder: Holder, state: dict,
                      metrics: ApiMetrics, auth) -> None:
    @app.get("/v1/model", dependencies=[auth])
    async def model() -> Response:
        return JSONResponse(_ready(holder).describe())

    @app.post("/v1/predict", dependencies=[auth])
    async def predict(request: Request) -> Response:
        return await _within(settings, _predict(request, settings, holder, state, metrics))

    @app.post("/v1/explain", dependencies=[auth])
    async def explain(request: Request, label: str | None = None,
                      format: str = "png") -> Response:
        return await _within(settings, _explain(request, settings, holder, state, label,
                                                format))


async def _within(settings: ApiSettings, work) -> Response:
    """``work``'s response, or 504 after ``--timeout-s``; a refusal becomes its response."""
    try:
        return await asyncio.wait_for(work, settings.timeout_s)
    except asyncio.TimeoutError:
        return reply(504, f"not answered within --timeout-s ({settings.timeout_s} s); the "
                     "server is overloaded or the upload too slow: retry later")
    except Refused as refused:
        return refused.response
    except QueueFull as exc:
        return reply(503, f"busy: {exc}; retry after the Retry-After seconds",
                     **{"Retry-After": "1"})


def _ready(holder: Holder) -> Release:
    if holder.current is None:
        raise Refused(reply(503, "the model is still loading: retry shortly "
                            + (f"(last load failed: {holder.error})" if holder.error else ""),
                            **{"Retry-After": "5"}))
    return holder.current


async def _decode(uploads: list[tuple[str, bytes]], size: int, max_pixels: int,
                  decoders: ThreadPoolExecutor) -> list[tuple[np.ndarray | None, str]]:
    """Each upload decoded on the decoder threads (never on the event loop)."""
    loop = asyncio.get_running_loop()
    return await asyncio.gather(*(loop.run_in_executor(decoders, serving.decode_upload, data,
                                                       size, max_pixels, name)
                                  for name, data in uploads))


async def _predict(request: Request, settings: ApiSettings, holder: Holder, state: dict,
                   metrics: ApiMetrics) -> Response:
    release = _ready(holder)
    uploads = await read_uploads(request, settings)
    for attempt in range(2):  # again once if the release changed image size meanwhile
        decoded = await _decode(uploads, release.image_size, settings.max_pixels,
                                state["decoders"])
        good = [i for i, (_, error) in enumerate(decoded) if not error]
        if not good:
            break
        try:
            probs, release = await state["batcher"].submit(
                np.stack([decoded[i][0] for i in good]))
            break
        except StaleImageSize:
            if attempt:
                raise QueueFull("the model was swapped twice while this request waited"
                                ) from None
            release = _ready(holder)
    results = [{"name": name, "ok": False, "error": error}
               for (name, _), (_, error) in zip(uploads, decoded, strict=True)]
    if good:
        decisions = release.saved.decide(probs)
        for row, i in enumerate(good):
            results[i] = {"name": uploads[i][0]} | serving.image_result(
                release, probs[row], decisions[row])
    metrics.images.labels("predicted").inc(len(good))
    metrics.images.labels("rejected").inc(len(uploads) - len(good))
    body = {**release.identity(), "results": results}
    if not good:
        body["detail"] = "no image could be used: " + "; ".join(
            f"{r['name']}: {r['error']}" for r in results)
    return JSONResponse(body, 200 if good else 422)


async def _explain(request: Request, settings: ApiSettings, holder: Holder, state: dict,
                   label: str | None, fmt: str) -> Response:
    release = _ready(holder)
    if fmt not in ("png", "json"):
        raise Refused(reply(422, f"format={fmt!r}: use png or json"))
    try:
        check_label(release.saved, label)
    except ValueError as exc:
        raise Refused(reply(422, str(exc).replace("--label", "label"))) from None
    uploads = await read_uploads(request, settings)
    if len(uploads) != 1:
        raise Refused(reply(422, f"explain takes one image; got {len(uploads)}"))
    (image, error), = await _decode(uploads, release.image_size, settings.max_pixels,
                                    state["decoders"])
    if error:
        return JSONResponse({**release.identity(), "detail": f"{uploads[0][0]}: {error}",
                             "result": {"name": uploads[0][0], "ok": False, "error": error}},
                            422)
    release = _ready(holder)
    if image.shape[0] != release.image_size:  # swapped meanwhile for another size
        (image, _), = await _decode(uploads, release.image_size, settings.max_pixels,
                                    state["decoders"])
    png, answer = await state["batcher"].call(serving.explain_image, release, image, label,
                                              admit=True)
    answer = {"name": uploads[0][0]} | answer
    if fmt == "json":
        return JSONResponse({**release.identity(), "result": answer,
                             "png_base64": base64.b64encode(png).decode()})
    headers = {"X-Unfreeze-Release": _header_text(release.name),
               "X-Unfreeze-Predicted": _header_text(answer["predicted"]),
               "X-Unfreeze-Explained": _header_text(answer["explained"])}
    return Response(png, media_type="image/png", headers=headers)


def _header_text(text: str) -> str:
    """A name as an HTTP header value (percent-encoded beyond ASCII)."""
    return quote(text, safe=" ;,-_.()")


def run_server(settings: ApiSettings, host: str = "127.0.0.1", port: int = 8000,
               log_level: str = "info") -> None:
    """Serve until interrupted (SIGINT/SIGTERM: in-flight requests are answered first)."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                limit_concurrency=settings.max_connections,
                timeout_graceful_shutdown=max(5, int(settings.timeout_s)))
