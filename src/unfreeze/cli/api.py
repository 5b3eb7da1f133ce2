"""`unfreeze api`: the HTTP API and web page of a saved model (:mod:`unfreeze.deploy.api`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path


def add_commands(sub) -> dict[str, Callable]:
    """`unfreeze api`: the HTTP API and web page of a saved model; its handler."""
    api = sub.add_parser("api", help="serve a model over HTTP: predict, explain, web page; "
                         "reloads when the model path changes (UNFREEZE_API_TOKEN: bearer "
                         "token for /v1/*)")
    api.add_argument("--model", default="production/current", help="model folder "
                     "(model.keras + meta.json): production/current (default) or "
                     "models/export; never taken from a request")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    for flag, kind, default, what in API_LIMITS:
        api.add_argument(flag, type=kind, default=default, help=what)
    api.add_argument("--log-level", default="info",
                     choices=("critical", "error", "warning", "info", "debug"))
    return {"api": _api}


# `unfreeze api`'s limits: flag, type, default, help (each an ApiSettings field)
API_LIMITS = (
    ("--max-batch", int, 32, "images per forward pass"),
    ("--max-wait-ms", float, 5.0, "wait after a first image for others to batch"),
    ("--max-queue", int, 256, "images waiting at most; more: 503 + Retry-After"),
    ("--max-connections", int, 64, "concurrent connections at most; more: 503 "
     "(with --max-body-mb, bounds the memory uploads take)"),
    ("--max-images", int, 32, "images per request at most (413)"),
    ("--max-body-mb", float, 20.0, "request body at most (413)"),
    ("--max-pixels", int, None, "pixels per image at most, from the header "
     "(default: data.max_pixels' default)"),
    ("--timeout-s", float, 30.0, "answer within this, else 504"),
    ("--reload-interval-s", float, 2.0, "how often the model path is checked"))


def _api(args: argparse.Namespace) -> int:
    """`api`: check the options and the model folder, then serve until interrupted."""
    from unfreeze.deploy.api import run_server
    from unfreeze.deploy.api_limits import TOKEN_ENV, ApiSettings

    model = Path(args.model)
    names = [flag[2:].replace("-", "_") for flag, *_ in API_LIMITS]
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    settings = ApiSettings(model.parent if model.suffix == ".keras" else model,
                           token=os.environ.get(TOKEN_ENV) or None, **options)
    print(f"serving {settings.model} on http://{args.host}:{args.port} (page: /, API: /v1/, "
          f"docs: /docs){'; bearer token required' if settings.token else ''}",
          file=sys.stderr)
    run_server(settings, args.host, args.port, args.log_level)
    return 0
