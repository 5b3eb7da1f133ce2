"""`dvc repro` with nothing to do: the C YAML parser against the pure-Python one, side by side.

    .venv/bin/python benchmarks/noop_repro.py [PROJECT] [--runs 5]

PROJECT (default: the current folder) must be a built project where `dvc repro` has nothing
to run but the ``always_changed`` `source` stage (data/dvc.yaml), which fingerprints the
data (e.g. after the offline demo): its cost is part of every `dvc repro` and of this figure.
Runs as on a usual install, where Python keeps bytecode caches (``PYTHONDONTWRITEBYTECODE``
is dropped for the runs; one warm-up run per variant writes them). DVC parses dvc.yaml,
dvc.lock and params.yaml with ruamel.yaml, which uses its C parser when ``ruamel.yaml.clib``
is installed (a dependency of this project). The second variant hides the C extension, as on
an install without it.
Prints the median wall time of each variant (runs interleaved) and, last, their ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

from common import machine

RUN = "import sys; {hide}from dvc.cli import main; sys.exit(main(['repro']))"
VARIANTS = {"C parser (ruamel.yaml.clib)": "",
            "pure-Python parser": "sys.modules['_ruamel_yaml'] = None; "}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", default=".")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for run in range(args.runs + 1):  # run 0: warm-up (bytecode caches, page cache)
        for name, hide in VARIANTS.items():
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", RUN.format(hide=hide)],
                                  cwd=args.project, capture_output=True, text=True, env=env)
            if run:
                times[name].append(time.perf_counter() - started)
            ran = {s for s in re.findall(r"Running stage '([^']+)'", proc.stdout)
                   if s.rpartition(":")[2] != "source"}
            if proc.returncode != 0 or ran:
                raise SystemExit(f"{args.project}: `dvc repro` is not a no-op here:\n"
                                 f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(machine())
    for name, median in medians.items():
        print(f"{name:30s} median {median:.2f} s  (runs: "
              f"{', '.join(f'{t:.2f}' for t in times[name])})")
    fast, slow = medians.values()
    print(f"no-op dvc repro: {fast:.2f} s with the C parser, {slow:.2f} s without: "
          f"{slow / fast:.2f}x")


if __name__ == "__main__":
    main()
