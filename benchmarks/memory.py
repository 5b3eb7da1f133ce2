"""Peak memory and wall time of `dvc repro evaluate` as the data grows: 1x, 2x, 4x ELPV.

    .venv/bin/python benchmarks/memory.py [--repeats 1 2 4] [--size 96] [--head-epochs 1]
                                          [--finetune-epochs 1] [--finetune-cached-views K]
                                          [--keep DIR]

For each repeat factor k, builds a fresh project (git + DVC, this checkout's code,
dvc.yaml and data/dvc.yaml) whose ``data/images`` holds the 2,624 ELPV images k times
over, in class folders.
Copy 0 is the original files; every further copy re-encodes each image with one pixel
changed, so all k x 2,624 images are distinct (no content is shared through the decoded
cache or grouped as a duplicate). Then runs prepare → split → head → finetune → evaluate
(random init, ``--size`` pixels) and records the wall time and the peak RSS of the largest
process (ru_maxrss of the waited children). Prints both per factor and, last, the ratios
to 1x. Each stage process also records its own peak RSS and its peak anonymous memory when
it exits (a ``sitecustomize`` on ``PYTHONPATH``), to tell which stage grows and whether by
memory it holds or by file pages of the memory-mapped activation store.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parents[1]
MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print('maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
           "file=sys.stderr); sys.exit(code)")


def image_folder(dest: Path, repeats: int) -> int:
    """ELPV ``repeats`` times over in ``dest/<label>/``; returns the number of images."""
    import numpy as np
    from common import demo_rows
    from PIL import Image

    rows, root = demo_rows()
    n = 0
    for i, row in enumerate(rows):
        folder = dest / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        source = root / row["path"]
        shutil.copyfile(source, folder / f"{i:05d}_0.png")  # scan refuses outside links
        pixels = np.asarray(Image.open(source)) if repeats > 1 else None
        for copy in range(1, repeats):
            changed = pixels.copy()
            changed.flat[0] = (int(changed.flat[0]) + copy) % 256
            Image.fromarray(changed).save(folder / f"{i:05d}_{copy}.png", compress_level=1)
        n += repeats
    return n


def project(dest: Path, repeats: int, args: argparse.Namespace) -> int:
    """A committed project of this checkout's code over ``repeats`` x ELPV."""
    import yaml

    (dest / "data").mkdir(parents=True)
    for name in ("dvc.yaml", "data/dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("stages", "src"):
        shutil.copytree(ROOT / folder, dest / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    n = image_folder(dest / "data/images", repeats)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"]["source"] = "data/images"
    params["model"].update(weights=None, image_size=args.size)
    params["head"]["epochs"] = args.head_epochs
    params["finetune"]["epochs"] = args.finetune_epochs
    if args.finetune_cached_views is not None:
        params["finetune"]["cached_views"] = args.finetune_cached_views
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    with open(dest / ".git/info/exclude", "a") as exclude:
        exclude.write("/data/images/\n")  # a DVC dependency, not a git file
    for cmd in ([sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "benchmark"]):
        subprocess.run(cmd, cwd=dest, env=environment(), check=True, capture_output=True)
    return n


# Put on PYTHONPATH for the stage processes: each ``stages/<name>.py`` appends its name, its
# peak RSS (ru_maxrss, KB) and its peak anonymous memory (KB) to $UNFREEZE_MEMORY_LOG when it
# exits. RSS also counts the file pages a process has mapped and touched, such as the
# memory-mapped activation store, which the kernel can drop and read again when memory is
# short; anonymous memory (RssAnon of /proc/self/status, read every 50 ms by a thread) is
# what the process itself holds. Linux only; elsewhere the anonymous peak is 0. Other
# Python processes (DVC's own) neither sample nor record.
SITECUSTOMIZE = """
import atexit, os, resource, sys, threading, time
_anon = [0]
def _sample():
    while True:
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        _anon[0] = max(_anon[0], int(line.split()[1]))
        except OSError:
            return
        time.sleep(0.05)
def _record():
    with open(os.environ["UNFREEZE_MEMORY_LOG"], "a") as out:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out.write(f"{os.path.basename(_script)[:-3]} {peak} {_anon[0]}\\n")
_script = sys.argv[0] if getattr(sys, "argv", None) else ""
if "stages/" in _script and os.environ.get("UNFREEZE_MEMORY_LOG"):
    threading.Thread(target=_sample, daemon=True).start()
    atexit.register(_record)
"""


def stage_peaks(log: Path) -> dict[str, tuple[float, float]]:
    """The largest (peak RSS, peak anonymous memory) in GB each stage recorded in ``log``."""
    peaks: dict[str, tuple[float, float]] = {}
    for line in log.read_text().splitlines() if log.is_file() else []:
        name, rss, anon = line.split()
        old = peaks.get(name, (0.0, 0.0))
        peaks[name] = (max(old[0], int(rss) / 1024**2), max(old[1], int(anon) / 1024**2))
    return peaks


def environment() -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", TF_CPP_MIN_LOG_LEVEL="3",
               GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@b")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--head-epochs", type=int, default=1)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-cached-views", type=int, default=None,
                        help="finetune.cached_views (default: params.yaml's; >0: phase two "
                             "reads stored activations)")
    parser.add_argument("--keep", type=Path, help="build the projects here and keep them")
    args = parser.parse_args()
    print(machine(), flush=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="unfreeze-memory-"))
    results = {}
    try:
        for k in args.repeats:
            dest = work / f"x{k}"
            n = project(dest, k, args)
            started = time.perf_counter()
            hook, log = work / "hook", work / f"x{k}.stages"
            hook.mkdir(exist_ok=True)
            (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
            env = environment()
            env.update(UNFREEZE_MEMORY_LOG=str(log), PYTHONPATH=os.pathsep.join(
                [str(hook), *filter(None, [env.get("PYTHONPATH")])]))
            proc = subprocess.run([sys.executable, "-c", MEASURE, "dvc", "repro", "evaluate"],
                                  cwd=dest, env=env, capture_output=True, text=True)
            stdout, stderr, stages = proc.stdout, proc.stderr, stage_peaks(log)
            seconds = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"x{k}: dvc repro failed:\n{stdout[-3000:]}{stderr[-3000:]}")
            peak = int(stderr.split("maxrss_kb")[-1].split()[0]) / 1024**2
            anon = max((a for _, a in stages.values()), default=0.0)
            results[k] = (n, seconds, peak, anon)
            print(f"{k}x ELPV ({n} images): {seconds:7.1f} s wall, peak RSS {peak:.2f} GB, "
                  f"peak anonymous {anon:.2f} GB (per stage, RSS / anonymous: " + ", ".join(
                      f"{name} {rss:.2f} / {a:.2f}" for name, (rss, a) in stages.items())
                  + ")", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    n1, s1, p1, a1 = results[args.repeats[0]]
    for k, (n, seconds, peak, anon) in results.items():
        print(f"{k}x over {args.repeats[0]}x: images {n / n1:.1f}x, wall time "
              f"{seconds / s1:.2f}x, peak RSS {peak / p1:.2f}x, peak anonymous "
              f"{anon / a1 if a1 else float('nan'):.2f}x")


if __name__ == "__main__":
    main()
