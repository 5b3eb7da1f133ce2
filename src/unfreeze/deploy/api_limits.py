"""What `unfreeze api` refuses, and how: its settings (each limit checked, the message
naming the flag), the outermost ASGI layer (a body over ``--max-body-mb`` refused before or
while it is read; every answer counted in the metrics), the bearer token, and the uploads of a
request read within ``--max-images``. A refusal is a :class:`Refused` carrying its response.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException  # what Request.form raises (not FastAPI's)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unfreeze.config.errors import ApiError
from unfreeze.config.params import MAX_PIXELS
from unfreeze.deploy.api_metrics import ApiMetrics
from unfreeze.training.artifacts import META_FILE, MODEL_FILE

TOKEN_ENV = "UNFREEZE_API_TOKEN"


@dataclass(frozen=True)
class ApiSettings:
    """`unfreeze api`'s options (each checked; the message names the flag)."""

    model: Path
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_body_mb: float = 20.0
    max_images: int = 32
    max_pixels: int = MAX_PIXELS
    timeout_s: float = 30.0
    reload_interval_s: float = 2.0
    max_connections: int = 64
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for flag, value, low in (("--max-batch", self.max_batch, 1),
                                 ("--max-queue", self.max_queue, 1),
                                 ("--max-images", self.max_images, 1),
                                 ("--max-pixels", self.max_pixels, 1),
                                 ("--max-connections", self.max_connections, 1),
                                 ("--max-wait-ms", self.max_wait_ms, 0),
                                 ("--max-body-mb", self.max_body_mb, 1e-6),
                                 ("--timeout-s", self.timeout_s, 1e-3),
                                 ("--reload-interval-s", self.reload_interval_s, 1e-3)):
            if not value >= low:
                raise ApiError(f"{flag} {value!r}: must be at least {low}")
        if not (self.model / MODEL_FILE).is_file() or not (self.model / META_FILE).is_file():
            raise ApiError(f"--model {self.model}: not a model folder written by unfreeze "
                           f"({MODEL_FILE} and {META_FILE} in it), e.g. production/current "
                           "or models/export")
        if self.max_queue < self.max_images:
            raise ApiError(f"--max-queue {self.max_queue} < --max-images {self.max_images}: "
                           "a full request could never be queued; raise --max-queue")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


class BodyTooLarge(Exception):
    """The request body went past ``--max-body-mb`` while being read."""


def reply(status: int, detail: str, **headers: str) -> JSONResponse:
    """A JSON error answer: ``{"detail": …}`` with ``headers``."""
    return JSONResponse({"detail": detail}, status, headers=headers or None)


class Guard:
    """Outermost ASGI layer: refuses a body that declares too many bytes (before reading it),
    stops one that streams too many, and counts every answer in the metrics."""

    def __init__(self, app: ASGIApp, settings: ApiSettings, metrics: ApiMetrics) -> None:
        self.app, self.limit, self.metrics = app, settings.max_body_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]  # 500 unless a response starts

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        declared = dict(scope["headers"]).get(b"content-length", b"0")
        try:
            if declared.isdigit() and int(declared) > self.limit:
                await reply(413, self._too_large(int(declared)))(scope, receive,
                                                                 counted_send)
            else:
                await self.app(scope, self._limited(receive), counted_send)
        finally:  # a crash (Starlette sends its 500, then re-raises) is counted too
            self.metrics.observe(scope["path"], status[0], time.perf_counter() - start)

    def _limited(self, receive: Receive) -> Receive:
        seen = [0]

        async def limited() -> Message:
            message = await receive()
            seen[0] += len(message.get("body", b""))
            if seen[0] > self.limit:
                raise BodyTooLarge(self._too_large(seen[0]))
            return message

        return limited

    def _too_large(self, size: int) -> str:
        return (f"request body of {size} bytes is over --max-body-mb "
                f"({self.limit} bytes); send fewer or smaller images per request")


def authorize(token: str | None):
    """A dependency that wants ``Authorization: Bearer <token>`` when a token is set (the
    scheme in any case; digests compared in constant time, so neither the token nor its
    length leaks through timing)."""
    wanted = _digest(token) if token else None

    async def check(request: Request) -> None:
        if wanted is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(_digest(given.strip()),
                                                                 wanted):
            raise Refused(reply(401, f"missing or wrong bearer token (the server has "
                                f"{TOKEN_ENV} set): send Authorization: Bearer <token>",
                                **{"WWW-Authenticate": "Bearer"}))
    return check


def _digest(text: str) -> bytes:
    """SHA-256 of ``text`` (any str, even with lone surrogates)."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class Refused(Exception):
    """Answer ``response`` instead (raised from a dependency or a helper)."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def read_uploads(request: Request, settings: ApiSettings) -> list[tuple[str, bytes]]:
    """(name, bytes) of each uploaded image: multipart file parts, else the whole body."""
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=settings.max_images, max_fields=100)
        except HTTPException as exc:  # Starlette: a malformed body, or too many parts
            if "Too many files" in str(exc.detail):
                raise Refused(reply(413, f"more than --max-images {settings.max_images} "
                                    "images in one request: split it")) from None
            raise Refused(reply(400, f"malformed multipart body: {exc.detail}")) from None
        uploads = [(item.filename or key, await item.read())
                   for key, item in form.multi_items() if isinstance(item, UploadFile)]
        await form.close()
        if not uploads:
            raise Refused(reply(422, "no file part in the multipart body; send each image "
                                "as a file, e.g. curl -F file=@image.png"))
    else:
        uploads = [(request.query_params.get("name", "body"), await request.body())]
    if len(uploads) > settings.max_images:
        raise Refused(reply(413, f"{len(uploads)} images in one request; at most "
                            f"--max-images {settings.max_images}: split the request"))
    return uploads
