#!/usr/bin/env bash
# GPU check (issue: one forward pass for both phases, item 6): run on a GPU machine from the
# project root. Prints the GPUs (nvidia-smi) and the 299 px throughput of each phase with
# precision and XLA `auto` (benchmarks/gpu_check.py). Extra arguments go to the script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
else
  echo "nvidia-smi: not found (no NVIDIA driver here: the figures below are the CPU's)"
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
