"""Process set-up for stage scripts and the CLI: quiet TensorFlow, clean error exits."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2
# Quiet and offline-friendly: no TF start-up chatter, no DVC analytics daemons, no Prefect
# telemetry, and time for the temporary Prefect API's first start (it creates its database).
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def quiet_environment() -> None:
    """Apply :data:`QUIET_ENV` defaults; call before TensorFlow or Prefect is imported."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (params, data, weights): message, no traceback."""
    from unfreeze.data import DataError
    from unfreeze.params import ParamsError

    errors: list[type[BaseException]] = [ParamsError, DataError]
    if "unfreeze.model" in sys.modules:  # only loaded by stages that build models
        errors.append(sys.modules["unfreeze.model"].WeightsError)
    if "unfreeze.export" in sys.modules:  # a parity check failed: the numbers say enough
        errors.append(sys.modules["unfreeze.export"].ExportError)
    return tuple(errors)


def stage_main(name: str, run: Callable[[], object]) -> int:
    """Run a stage body; a user error prints ``<stage>: error: …`` and exits with code 2."""
    quiet_environment()
    try:
        run()
    except user_errors() as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
