"""Process set-up for stage scripts and the CLI: quiet TensorFlow, clean error exits."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter; call before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (params, data, weights): message, no traceback."""
    from unfreeze.data import DataError
    from unfreeze.params import ParamsError

    errors: list[type[BaseException]] = [ParamsError, DataError]
    if "unfreeze.model" in sys.modules:  # only loaded by stages that build models
        errors.append(sys.modules["unfreeze.model"].WeightsError)
    return tuple(errors)


def stage_main(name: str, run: Callable[[], object]) -> int:
    """Run a stage body; a user error prints ``<stage>: error: …`` and exits with code 2."""
    quiet_tensorflow()
    try:
        run()
    except user_errors() as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
