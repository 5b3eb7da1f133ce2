#!/usr/bin/env bash
# The CPU-class figures of docs/benchmarks.md in one run (issue: one forward pass for both
# phases, items 3 and 5), on the CPU at hand. Run from anywhere; ~50 min on 2 EPYC cores:
#
#   benchmarks/cpu_class.sh [OUT]        # OUT defaults to benchmarks/out/<UTC time>
#
# Writes OUT/machine.txt (benchmarks/common.machine()'s line, every CPU flag, the versions,
# the commit) and one log per command:
#   xla.log        benchmarks/xla.py --size 150          (the per-use XLA rule, hardware.py)
#   precision.log  benchmarks/precision.py               (the CPU precision rule)
#   autotune.log   benchmarks/data_autotune.py           (tf.data autotuning, hardware.py)
#   recipe150.log  recipe_vs_seed.py --size 150 --finetune-views 1            (5 + 2 epochs)
#   recipe96.log   recipe_vs_seed.py --size 96 --head-epochs 10 --finetune-epochs 10
#                  --finetune-views 1
# then prints each log's summary lines. Figures go into docs/benchmarks.md and the README
# with machine.txt's model and flags.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
OUT="${1:-benchmarks/out/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
unset PYTHONDONTWRITEBYTECODE  # start-up figures count cached bytecode, as users have it
"$PYTHON" - > "$OUT/machine.txt" <<'PY'  # the line every benchmark prints, and all flags
import sys
from importlib.metadata import version

sys.path.insert(0, "benchmarks")
from common import machine  # noqa: E402

from unfreeze.training.hardware import cpu  # noqa: E402

print(machine())
print("flags:", " ".join(sorted(cpu()[1])))
print("python", sys.version.split()[0], "| tensorflow", version("tensorflow"), "| keras",
      version("keras"))
PY
echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)" >> "$OUT/machine.txt"
cut -c1-300 "$OUT/machine.txt"

run() {  # run NAME ARGS…: one benchmark, its whole output in OUT/NAME.log
  local name=$1
  shift
  echo "== $name: $PYTHON $* ($(date -u +%H:%M:%S))"
  "$PYTHON" "$@" > "$OUT/$name.log" 2>&1 || echo "$name failed: see $OUT/$name.log"
}
run xla benchmarks/xla.py --size 150
run precision benchmarks/precision.py
run autotune benchmarks/data_autotune.py
run recipe150 benchmarks/recipe_vs_seed.py --size 150 --finetune-views 1
run recipe96 benchmarks/recipe_vs_seed.py --size 96 --head-epochs 10 --finetune-epochs 10 \
  --finetune-views 1

echo "== summary ($OUT)"
sed -n '/^ratios off/,$p' "$OUT/xla.log"
sed -n '/precision auto/p;/^at .*ratios over/,$p' "$OUT/precision.log"
sed -n '/^at .*off \/ on/,$p' "$OUT/autotune.log"
for log in recipe150 recipe96; do
  echo "-- $log"
  grep -E "^(start-ups|classic recipe|ours,|one-pass limit)" "$OUT/$log.log" || true
done
