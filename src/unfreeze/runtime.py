"""Process set-up for stage scripts and the CLI: a quiet environment, a filter for the native
start-up lines TensorFlow prints on machines without a GPU, and the stage entry point."""

from __future__ import annotations

import argparse
import atexit
import os
import re
import sys
import threading
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
RAW_STDERR_ENV = "UNFREEZE_RAW_STDERR"  # "1": keep every start-up line (debugging)
_filter: _NativeStderrFilter | None = None


def quiet_environment() -> None:
    """Apply :data:`QUIET_ENV` defaults; call before TensorFlow or Prefect is imported."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes (dvc, stages): :data:`QUIET_ENV` defaults, with this
    interpreter's folder first on PATH (stages call ``python``)."""
    env = dict(os.environ if base is None else base)
    env.update({k: env.get(k, v) for k, v in QUIET_ENV.items()})
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


class _NativeStderrFilter:
    """File descriptor 2 rerouted through a pipe; a thread copies it back minus noise lines.

    Works for C++ writes too (they bypass ``sys.stderr``). Partial lines are passed on at once
    unless they may be the start of a noise line, so progress bars still draw.
    """

    PREFIXES = ("WARNING: All log", "I0", "E0", "W0", "To enable the following")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.saved = os.dup(2)
        read, write = os.pipe()
        self.read = read
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._pump, name="stderr-filter", daemon=True)
        self.thread.start()

    def _keep(self, line: bytes) -> bool:
        return not self.pattern.match(line.decode("utf-8", "replace").strip())

    def _maybe_noise(self, partial: bytes) -> bool:
        text = partial.decode("utf-8", "replace")
        return any(p.startswith(text) or text.startswith(p) for p in self.PREFIXES)

    def _pump(self) -> None:
        pending = b""
        while chunk := os.read(self.read, 65536):
            pending += chunk
            *lines, pending = re.split(rb"(?<=[\n\r])", pending)
            out = b"".join(line for line in lines if self._keep(line))
            if pending and not self._maybe_noise(pending):
                out, pending = out + pending, b""
            if out:
                os.write(self.saved, out)
        if pending and self._keep(pending):
            os.write(self.saved, pending)
        os.close(self.read)

    def stop(self) -> None:
        """Restore file descriptor 2 and pass on whatever is still in the pipe."""
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes the pipe's last write end: the pump reads to EOF
        self.thread.join(timeout=5)


def filter_native_stderr(gpu: bool | None = None) -> None:
    """Drop TensorFlow's known start-up notices from this process's stderr (once per process).

    Real warnings and errors, Python's and C++'s, pass unchanged. Call before TensorFlow is
    imported; the filter ends (and flushes) at interpreter exit. ``UNFREEZE_RAW_STDERR=1``
    turns it off.
    """
    global _filter
    if _filter is None and os.environ.get(RAW_STDERR_ENV, "") in ("", "0"):
        _filter = _NativeStderrFilter(noise_pattern(gpu))
        atexit.register(_filter.stop)


def stage_main(name: str, run: Callable[[], object]) -> int:
    """Run a stage body; a user error prints ``<stage>: error: …`` and exits with code 2."""
    quiet_environment()
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
              params: bool = True) -> int:
    """A stage script's whole ``main``: parse ``arguments``, load ``--params``, run ``body``.

    ``arguments`` are flags of :data:`STAGE_ARGS` or ``(flag, help)`` / ``(flag, keywords)``
    pairs; a plain help string makes a required argument. With ``params``, ``args.params``
    is the loaded :class:`~unfreeze.config.params.Params` when ``body`` runs. ``name`` may
    use the arguments, e.g. ``cv@{fold}``.
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

    return stage_main(name.format(**vars(args)), run)
