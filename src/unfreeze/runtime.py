"""Process set-up for stage scripts and the CLI: a quiet environment, a filter for the
start-up notices TensorFlow's C++ runtime prints whatever its log level, and the stage entry
point that turns a user error into one line and exit code 2."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from unfreeze.config.errors import UnfreezeError

EXIT_USER_ERROR = 2
# Quiet and offline-friendly: no TF start-up chatter, no DVC analytics daemons, no Prefect
# telemetry, and time for the temporary Prefect API's first start (it creates its database).
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
# Lines TensorFlow's C++ runtime prints at start-up whatever TF_CPP_MIN_LOG_LEVEL says (they are
# written before its logging is initialised). Notices only: filtered on every machine.
NOTICE_LINES = (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"[IW]\d{4} .* port\.cc:\d+\] oneDNN custom operations are on",
    r"[IW]\d{4} .* cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"To enable the following instructions: .* rebuild TensorFlow with the appropriate",
)
# The CUDA probe's lines: noise on a machine without an NVIDIA device, a real problem on one
# with a device, so they are filtered only where no /dev/nvidia* device exists.
NO_GPU_LINES = (
    r"[IW]\d{4} .* cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    r"E\d{4} .* cuda_platform\.cc:\d+\] failed call to cuInit",
    r"E\d{4} .* cuda_(dnn|fft|blas)\.cc:\d+\] Unable to register cu(DNN|FFT|BLAS) factory",
)
NO_TELEMETRY = ("DVC_NO_ANALYTICS", "PREFECT_SERVER_ANALYTICS_ENABLED")
RAW_STDERR_ENV = "UNFREEZE_RAW_STDERR"  # "1": keep every start-up line (debugging)
_filter: subprocess.Popen | None = None


def quiet_environment() -> None:
    """Apply :data:`QUIET_ENV` defaults; call before TensorFlow or Prefect is imported."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes (dvc, stages): :data:`QUIET_ENV` defaults, analytics
    and telemetry always off (offline machines, private data), and this interpreter's
    folder first on PATH (stages call ``python``)."""
    env = dict(os.environ if base is None else base)
    env.update({k: env.get(k, v) for k, v in QUIET_ENV.items()})
    env.update({k: QUIET_ENV[k] for k in NO_TELEMETRY})
    bin_dir = str(Path(sys.executable).parent)
    if not env.get("PATH", "").startswith(bin_dir):
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def has_nvidia_device() -> bool:
    """Whether the kernel shows an NVIDIA device (``/dev/nvidia0`` …), without loading CUDA."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def noise_pattern(gpu: bool | None = None) -> re.Pattern[str]:
    """The start-up lines to drop: :data:`NOTICE_LINES`, plus :data:`NO_GPU_LINES` without GPU."""
    gpu = has_nvidia_device() if gpu is None else gpu
    lines = NOTICE_LINES + (() if gpu else NO_GPU_LINES)
    return re.compile("|".join(f"(?:{p})" for p in lines))


# The filter process: reads what this process writes to fd 2 (its stdin) and passes every
# line on to the real stderr (its stdout) but the noise. It ignores SIGINT/SIGTERM (a Ctrl-C
# to the process group must not cut the stderr of the processes it serves), never blocks a
# writer (an unwritable stderr only discards), and ends at EOF: when every process that
# inherited the pipe has exited or crashed, so nothing written before a crash is lost.
_FILTER_PROCESS = r"""
import os, re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
noise = re.compile(sys.argv[1])
maybe = re.compile(r"(WARNING: All log|To enable the following|[IWE]\d{0,4}( |$))")
def keep(line):
    return not noise.match(line.decode("utf-8", "replace").strip())
def write(data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(1, view):]
        except OSError:
            return
pending = b""
while chunk := os.read(0, 65536):
    pending += chunk
    *lines, pending = re.split(rb"(?<=[\n\r])", pending)
    out = b"".join(line for line in lines if keep(line))
    text = pending.decode("utf-8", "replace")
    if pending and not (maybe.match(text) or "WARNING: All log".startswith(text)
                        or "To enable the following".startswith(text)):
        out, pending = out + pending, b""
    write(out)
if pending and keep(pending):
    write(pending)
"""
PIPE_SIZE = 1 << 20  # bytes the pipe holds before a writer waits for the filter (Linux)


def filter_native_stderr(gpu: bool | None = None) -> None:
    """Drop TensorFlow's known start-up notices from this process's stderr (once per process).

    File descriptor 2 becomes a pipe to a small filter process, so C++ writes are filtered
    too (they bypass ``sys.stderr``). Every other line, native or Python, passes unchanged,
    and partial lines (progress bars) pass at once. Call before TensorFlow is imported.
    Off with ``UNFREEZE_RAW_STDERR=1``, and when TensorFlow's own logging is turned up
    (``TF_CPP_MIN_LOG_LEVEL=0`` or ``TF_CPP_MAX_VLOG_LEVEL``): someone is debugging.
    """
    global _filter
    debugging = (os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"
                 or os.environ.get("TF_CPP_MAX_VLOG_LEVEL"))
    if _filter is not None or debugging or os.environ.get(RAW_STDERR_ENV, "") not in ("", "0"):
        return
    read, write = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # a larger pipe where Linux allows
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    sys.stderr.flush()
    real = os.dup(2)
    _filter = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _FILTER_PROCESS, noise_pattern(gpu).pattern],
        stdin=read, stdout=real, stderr=subprocess.DEVNULL, close_fds=True)
    os.close(read)
    os.dup2(write, 2)  # from here on, fd 2 of this process (and its children) is the pipe
    os.close(write)
    os.set_inheritable(real, False)
    atexit.register(_end_filter, _filter, real)


def _end_filter(process: subprocess.Popen, real: int) -> None:
    """At a normal exit: give fd 2 back and let the filter pass on the rest first, so the
    last lines come before whatever the parent prints next (a crash skips this; the filter
    then ends on its own once the pipe closes)."""
    sys.stderr.flush()
    os.dup2(real, 2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=2)  # longer only while children still hold the pipe


def stage_main(name: str, run: Callable[[], object], tensorflow: bool = True) -> int:
    """Run a stage body; a user error prints ``<stage>: error: …`` and exits with code 2.
    ``tensorflow=False``: the body never imports TensorFlow, so no stderr filter is started
    (a process less, for the stage that runs on every `dvc repro`)."""
    quiet_environment()
    if tensorflow:
        filter_native_stderr()
    try:
        run()
    except UnfreezeError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


# Path arguments several stage scripts share (name → help, or add_argument keywords).
STAGE_ARGS: dict[str, str | dict[str, Any]] = {
    "--splits": "input Parquet splits table",
    "--report-dir": "output folder: dvclive metrics",
    "--backup-dir": {"help": "per-epoch backup to resume from if killed (outside the DVC "
                             "outputs, e.g. .unfreeze/backup/STAGE)"},
}


def stage_cli(name: str, description: str, arguments: Iterable[str | tuple[str, Any]],
              body: Callable[[argparse.Namespace], object], argv: list[str] | None = None,
              params: bool = True, tensorflow: bool = True) -> int:
    """A stage script's whole ``main``: parse ``arguments``, load ``--params``, run ``body``.

    ``arguments`` are flags of :data:`STAGE_ARGS` or ``(flag, help)`` / ``(flag, keywords)``
    pairs; a plain help string makes a required argument. With ``params``, ``args.params``
    is the loaded :class:`~unfreeze.config.params.Params` when ``body`` runs. ``name`` may
    use the arguments, e.g. ``cv@{fold}``. ``tensorflow``: as in :func:`stage_main`.
    """
    parser = argparse.ArgumentParser(description=description)
    if params:
        parser.add_argument("--params", default="params.yaml", help="params file")
    for item in arguments:
        flag, spec = (item, STAGE_ARGS[item]) if isinstance(item, str) else item
        parser.add_argument(flag, **({"required": True, "help": spec}
                                     if isinstance(spec, str) else spec))
    args = parser.parse_args(argv)

    def run() -> object:
        if params:
            from unfreeze.config.params import load_params

            args.params = load_params(args.params)
        return body(args)

    return stage_main(name.format(**vars(args)), run, tensorflow)
