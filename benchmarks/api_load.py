"""`unfreeze api` under load: a real server process, N concurrent clients, faults injected.

    .venv/bin/python benchmarks/api_load.py [--seconds 60] [--clients 16] [--size 150]
        [--images 64] [--max-batch 32] [--model DIR] [--from DIR] [--out result.json]

Model: two random-weight unfreeze models (different seeds) saved as two releases of a
temporary ``production/`` folder, ``current`` pointing at the first; or ``--model DIR`` (a
``production/current`` symlink gets the release switch below, to another release of that
folder and back, which adds TF Serving version links there; any other folder gets none).
Images: ``--images`` random PNGs at the model size, or the first ones of ``--from DIR``.

1. Raw reference, in its own process before the server starts (the two would share the
   cores): ``load_saved`` the same model, decode the same images as the API does, then
   ``model.predict`` in batches of ``--max-batch`` (best of 3 timed passes after a warm-up)
   and one image per ``model.predict`` call, and the compiled forward pass the server runs
   (``serving.load_release``, uint8 batches of ``--max-batch``): images/s of each.
2. ``unfreeze api --model <production>/current --max-batch B --max-body-mb 2
   --reload-interval-s 0.5``, warmed up with a few requests; its RSS (children included).
3. Clean phase, ``--seconds``: ``--clients`` clients (one httpx.AsyncClient) each POST one
   image to ``/v1/predict`` in a loop. Throughput (and its ratio to both raw rates), latency
   percentiles, non-200 answers by status, mean batch size (``/metrics`` before and after),
   peak RSS (sampled every 0.5 s) against the RSS after warm-up, server and client CPU.
4. Fault phase, ``--seconds`` (longer until the switch back is seen), the same clients still
   running: clients that drop mid-upload (raw sockets, Content-Length 200000, part of the
   body, then close or reset), random-byte images (422 with a per-image error), 3 MB bodies
   declared (413 from the header) and chunked (413 while read), and a release switch at a
   third of the phase and back at two thirds: every request answered 200, answers per
   release, seconds from each switch to the first answer from the new release.
5. ``/metrics`` at the end: no 5xx at all, and nothing lost (each request sent got an HTTP
   answer, the disconnects aside; the server counted as many as the clients got).

Prints a markdown summary with the machine line (and writes it as JSON to ``--out``); exits
1 if any check failed. The clients run on the same cores as the server: on a small machine
their CPU share (printed) lowers the throughput the server alone would reach.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RELEASES = ("20261130T000000Z-aaaaaaaa", "20261201T000000Z-bbbbbbbb")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_BODY_MB = 2.0  # the server's --max-body-mb; the oversize bodies are 3 MB
OVERSIZE = 3 * 2**20
CUT_LENGTH = 200_000  # the Content-Length a dropped upload declares
PREDICT = "/v1/predict"
MODEL_FILE, META_FILE = "model.keras", "meta.json"  # as unfreeze.training.artifacts (which
# imports Keras: this process stays without TensorFlow)


# --- the child processes: models built and the raw reference timed with TensorFlow ---------

def build_releases(production: Path, size: int) -> None:
    """Two random-weight releases (seeds 0 and 1) of 2 classes; ``current`` -> the first."""
    import keras

    from unfreeze.config.params import ModelParams
    from unfreeze.ops.promote import point_current
    from unfreeze.training.artifacts import save_model
    from unfreeze.training.model import build

    for seed, name in enumerate(RELEASES):
        keras.utils.set_random_seed(seed)
        model = build(ModelParams(image_size=size, weights=None), 2)
        save_model(model, production / "releases" / name,
                   {"classes": ["good", "defective"], "image_size": size})
    point_current(production, RELEASES[0])


def raw_rates(model_dir: Path, images_dir: Path, batch: int, passes: int = 3) -> dict:
    """images/s of ``model.predict`` over the decoded images: batched and one at a time."""
    import numpy as np
    from common import timed

    from unfreeze.deploy.predict import load_saved
    from unfreeze.deploy.serving import decode_upload, load_release

    saved = load_saved(model_dir)
    decoded = [decode_upload(p.read_bytes(), saved.image_size)[0]
               for p in sorted(images_dir.iterdir())]
    x = np.stack([d for d in decoded if d is not None]).astype(np.float32)
    model = saved.model
    model.predict(x, batch_size=batch, verbose=0)  # warm-up
    batched = min(timed(lambda: model.predict(x, batch_size=batch, verbose=0))
                  for _ in range(passes))
    model.predict(x[:1], verbose=0)
    one = timed(lambda: [model.predict(x[i:i + 1], verbose=0) for i in range(len(x))])
    release, u8 = load_release(model_dir), x.astype(np.uint8)  # what the server runs

    def forward() -> None:
        for i in range(0, len(u8), batch):
            release.probabilities(u8[i:i + batch])

    forward()
    compiled = min(timed(forward) for _ in range(passes))
    return {"images": len(x), "batched": len(x) / batched, "one_at_a_time": len(x) / one,
            "forward": len(x) / compiled}


def child_main(args: argparse.Namespace) -> None:
    """``--child build|raw``: write the result as JSON to ``--work``/result.json."""
    from unfreeze.runtime import filter_native_stderr, quiet_environment

    quiet_environment()
    filter_native_stderr()
    work = Path(args.work)
    if args.child == "build":
        build_releases(work / "production", args.size)
        result: dict = {}
    else:
        result = raw_rates(Path(args.model), work / "images", args.max_batch)
    (work / "result.json").write_text(json.dumps(result))


def run_child(work: Path, *argv: str) -> dict:
    """Run this script with ``--child ...`` in its own process; its JSON result."""
    from unfreeze.runtime import child_env

    subprocess.run([sys.executable, __file__, "--work", str(work), *argv], env=child_env(),
                   check=True)
    return json.loads((work / "result.json").read_text())


# --- inputs --------------------------------------------------------------------------------

def image_bytes(n: int, size: int, source: Path | None, seed: int = 0) -> list[bytes]:
    """``n`` random RGB PNGs of ``size`` px, or the first ``n`` image files of ``source``."""
    import numpy as np
    from PIL import Image

    if source is not None:
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"--from {source}: no image files")
        return [p.read_bytes() for p in files[:n]]
    rng, out = np.random.default_rng(seed), []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def switch_plan(model: Path) -> tuple[Path | None, str, str]:
    """(production folder, release now current, release to switch to) of a
    ``production/current`` symlink; (None, "", "") when no switch is possible."""
    releases = model.parent / "releases"
    if not (model.is_symlink() and releases.is_dir()):
        return None, "", ""
    now = model.resolve().name
    others = sorted(p.name for p in releases.iterdir() if p.name != now
                    and (p / MODEL_FILE).is_file() and (p / META_FILE).is_file())
    return (model.parent, now, others[-1]) if others else (None, "", "")


# --- the server process --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, max_batch: int, log: Path) -> subprocess.Popen:
    """`unfreeze api` in a process group of its own, output to ``log``."""
    from unfreeze.runtime import child_env

    cmd = [str(Path(sys.executable).with_name("unfreeze")), "api", "--model", str(model),
           "--port", str(port), "--max-batch", str(max_batch), "--max-body-mb",
           str(MAX_BODY_MB), "--reload-interval-s", "0.5", "--log-level", "warning"]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 300) -> str:
    """The release ``/readyz`` names once it answers 200."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            answer = httpx.get(url + "/readyz", timeout=5)
            if answer.status_code == 200:
                return answer.json()["release"]
        time.sleep(0.2)
    raise SystemExit(f"server not ready (exit {proc.poll()}):\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen, grace: float = 30) -> float:
    """SIGTERM, then SIGKILL to its whole process group; seconds until it exited."""
    started = time.perf_counter()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    seconds = time.perf_counter() - started
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return seconds


def processes(pid: int) -> list:
    """The psutil processes of ``pid`` and all its children."""
    import psutil

    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def rss_mb(pid: int) -> float:
    import psutil

    total = 0
    for p in processes(pid):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children."""
    import psutil

    total = 0.0
    for p in processes(pid):
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


# --- /metrics ------------------------------------------------------------------------------

async def scrape(http, url: str) -> dict:
    """Answers counted per (endpoint, status) and the batch-size histogram's sum and count."""
    from prometheus_client.parser import text_string_to_metric_families

    text = (await http.get(url + "/metrics")).text
    out: dict = {"requests": Counter(), "batch_sum": 0.0, "batch_count": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "unfreeze_api_requests_total":
                out["requests"][(s.labels["endpoint"], int(s.labels["status"]))] += s.value
            elif s.name in ("unfreeze_api_batch_size_sum", "unfreeze_api_batch_size_count"):
                out[s.name.replace("unfreeze_api_batch_size", "batch")] = s.value
    return out


def metrics_delta(before: dict, after: dict) -> dict:
    """Per-status /v1/predict answers and the mean batch size between two scrapes."""
    statuses = Counter({status: after["requests"][(ep, status)] - before["requests"][(ep, status)]
                        for ep, status in after["requests"] if ep == PREDICT})
    batches = after["batch_count"] - before["batch_count"]
    mean = (after["batch_sum"] - before["batch_sum"]) / batches if batches else 0.0
    return {"statuses": {k: int(v) for k, v in sorted(statuses.items()) if v},
            "batches": int(batches), "mean_batch": mean}


# --- the load ------------------------------------------------------------------------------

@dataclass
class Answer:
    """One request as the client saw it (status 0: no HTTP answer)."""

    kind: str
    start: float
    end: float
    status: int
    release: str = ""
    error: str = ""


async def post(http, url: str, kind: str, **request) -> Answer:
    """POST to /v1/predict; what came back."""
    import httpx

    start = time.monotonic()
    try:
        answer = await http.post(url + PREDICT, **request)
    except httpx.HTTPError as exc:
        return Answer(kind, start, time.monotonic(), 0, error=f"{type(exc).__name__}: {exc}")
    end = time.monotonic()
    try:
        body = answer.json()
    except ValueError:
        return Answer(kind, start, end, answer.status_code, error=answer.text[:200])
    results = body.get("results") or [{}]
    return Answer(kind, start, end, answer.status_code, body.get("release", ""),
                  results[0].get("error", "") or str(body.get("detail", "")))


async def client(http, url: str, images: list[bytes], first: int, stop: asyncio.Event,
                 out: list[Answer]) -> None:
    """POST one image after another until ``stop``."""
    i = first
    while not stop.is_set():
        name = f"{i % len(images):04d}.png"
        out.append(await post(http, url, "predict",
                              files={"file": (name, images[i % len(images)], "image/png")}))
        i += 1


async def sample_rss(pid: int, stop: asyncio.Event, peaks: list[float]) -> None:
    """Append the RSS every 0.5 s until ``stop``."""
    while not stop.is_set():
        peaks.append(rss_mb(pid))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


@dataclass
class Phase:
    """What one phase recorded."""

    answers: list[Answer] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    metrics: dict = field(default_factory=dict)
    disconnects: int = 0
    switches: list[dict] = field(default_factory=list)


async def run_phase(http, url: str, pid: int, images: list[bytes], clients: int,
                    extra) -> Phase:
    """``clients`` clients until ``extra(phase, stop)`` returns (a timer, or the faults)."""
    import psutil

    phase, stop = Phase(), asyncio.Event()
    me, before = psutil.Process(), await scrape(http, url)
    cpu0, me0, started = cpu_s(pid), sum(psutil.Process().cpu_times()[:2]), time.monotonic()
    tasks = [asyncio.create_task(client(http, url, images, i * 7, stop, phase.answers))
             for i in range(clients)]
    tasks.append(asyncio.create_task(sample_rss(pid, stop, phase.rss)))
    try:
        await extra(phase, stop)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    phase.seconds = max(a.end for a in phase.answers) - started
    phase.server_cpu_s = cpu_s(pid) - cpu0
    phase.client_cpu_s = sum(me.cpu_times()[:2]) - me0
    await asyncio.sleep(1.0)  # let the server count the dropped uploads
    phase.metrics = metrics_delta(before, await scrape(http, url))
    return phase


# --- the faults ----------------------------------------------------------------------------

async def spread(n: int, seconds: float, fn) -> None:
    """Call ``fn(i)`` ``n`` times, evenly spread over ``seconds``."""
    for i in range(n):
        await asyncio.sleep(seconds / n)
        await fn(i)


async def drop_upload(port: int, i: int) -> None:
    """Send the headers (Content-Length 200000) and part of a multipart body, then close
    (odd i) or reset (even i) the connection."""
    boundary = "loadbenchcut"
    head = (f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {CUT_LENGTH}\r\n\r\n").encode()
    part = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="cut{i}.png"\r\nContent-Type: image/png\r\n\r\n').encode()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + part + os.urandom(random.Random(i).randrange(0, CUT_LENGTH // 2)))
    await writer.drain()
    await asyncio.sleep(0.05)
    if i % 2:
        writer.close()
    else:
        writer.transport.abort()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def chunks(total: int, size: int = 2**16):
    """``total`` random bytes, in chunks (httpx sends them Transfer-Encoding: chunked)."""
    for _ in range(0, total, size):
        yield os.urandom(size)
        await asyncio.sleep(0)


def fault_requests(http, url: str, out: list[Answer]) -> dict:
    """The faulty requests, each kind as ``fn(i)`` appending its answer to ``out``."""
    async def garbage(i: int) -> None:
        data = os.urandom(random.Random(i).randrange(100, 20_000))
        out.append(await post(http, url, "garbage",
                              files={"file": (f"garbage{i}.png", data, "image/png")}))

    async def oversize(i: int) -> None:
        out.append(await post(http, url, "oversize",
                              files={"file": (f"big{i}.png", os.urandom(OVERSIZE), "image/png")}))

    async def oversize_chunked(i: int) -> None:
        out.append(await post(http, url, "oversize-chunked", content=chunks(OVERSIZE),
                              headers={"content-type": "application/octet-stream"}))

    return {"garbage": garbage, "oversize": oversize, "oversize-chunked": oversize_chunked}


async def first_from(answers: list[Answer], release: str, since: float, limit: float) -> float:
    """Seconds from ``since`` to the first answer from ``release`` that ended after it
    (waits for it up to ``limit`` s; nan if none came)."""
    seen, deadline = 0, time.monotonic() + limit
    while time.monotonic() < deadline:
        for a in answers[seen:]:
            if a.release == release and a.end >= since:
                return a.end - since
        seen = len(answers)
        await asyncio.sleep(0.05)
    return float("nan")


async def switch_releases(production: Path, there: str, back: str, seconds: float,
                          answers: list[Answer], switches: list[dict]) -> None:
    """Switch ``current`` to ``there`` at a third of ``seconds`` and back at two thirds,
    each time waiting (up to 120 s) for the first answer from the new release."""
    from unfreeze.ops.promote import point_current

    started = time.monotonic()
    for at, release in ((seconds / 3, there), (2 * seconds / 3, back)):
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        since = time.monotonic()
        with warnings.catch_warnings():  # these releases have no SavedModel for TF Serving
            warnings.simplefilter("ignore", UserWarning)
            point_current(production, release)
        switches.append({"to": release, "at_s": since - started,
                         "first_answer_s": await first_from(answers, release, since, 120)})


def fault_driver(http, url: str, port: int, seconds: float, plan: tuple, counts: dict):
    """The fault phase's ``extra``: faults spread over ``seconds``, the switch, then stop."""
    async def drive(phase: Phase, stop: asyncio.Event) -> None:
        kinds = fault_requests(http, url, phase.answers)
        jobs = [spread(counts[k], seconds, fn) for k, fn in kinds.items()]
        jobs.append(spread(counts["disconnect"], seconds,
                           lambda i: drop_upload(port, i)))
        production, now, other = plan
        if production is not None:
            jobs.append(switch_releases(production, other, now, seconds, phase.answers,
                                        phase.switches))
        await asyncio.gather(*jobs, asyncio.sleep(seconds))
        phase.disconnects = counts["disconnect"]
    return drive


def timer(seconds: float):
    """The clean phase's ``extra``: wait ``seconds``."""
    async def wait(phase: Phase, stop: asyncio.Event) -> None:
        await asyncio.sleep(seconds)
    return wait


async def drive(url: str, port: int, pid: int, images: list[bytes], args, plan) -> dict:
    """Warm-up, RSS after it, the clean phase, then the fault phase."""
    import httpx

    limits = httpx.Limits(max_connections=args.clients + 8,
                          max_keepalive_connections=args.clients + 8)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) as http:
        ready = await scrape(http, url)  # the /readyz 503s while loading are before it
        await run_phase(http, url, pid, images, args.clients, timer(3.0))
        warm_rss = rss_mb(pid)
        clean = await run_phase(http, url, pid, images, args.clients, timer(args.seconds))
        counts = {"garbage": args.faults, "oversize": max(1, args.faults // 4),
                  "oversize-chunked": max(1, args.faults // 4), "disconnect": args.faults}
        faults = await run_phase(http, url, pid, images, args.clients,
                                 fault_driver(http, url, port, args.seconds, plan, counts))
        final = await scrape(http, url)
    return {"warm_rss": warm_rss, "clean": clean, "faults": faults, "ready": ready,
            "final": final}


# --- figures and checks --------------------------------------------------------------------

def latency_ms(answers: list[Answer]) -> dict[str, float]:
    import numpy as np

    seconds = np.array([a.end - a.start for a in answers]) * 1000
    if not len(seconds):
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": 0.0}
    p50, p95, p99 = np.percentile(seconds, [50, 95, 99])
    return {"p50": p50, "p95": p95, "p99": p99, "max": float(seconds.max())}


def statuses(answers: list[Answer]) -> dict[int, int]:
    return dict(sorted(Counter(a.status for a in answers).items()))


def clean_figures(phase: Phase, warm_rss: float, raw: dict) -> dict:
    """Throughput, its ratios, latency, errors, batch size, RSS and CPU of the clean phase."""
    ok = [a for a in phase.answers if a.status == 200]
    rate = len(ok) / phase.seconds
    peak = max(phase.rss)
    return {"requests": len(phase.answers), "statuses": statuses(phase.answers),
            "images_per_s": rate, "vs_raw_batched": rate / raw["batched"],
            "vs_raw_one": rate / raw["one_at_a_time"], "vs_forward": rate / raw["forward"],
            "latency_ms": latency_ms(ok),
            "mean_batch": phase.metrics["mean_batch"], "batches": phase.metrics["batches"],
            "server_statuses": phase.metrics["statuses"], "rss_warm_mb": warm_rss,
            "rss_peak_mb": peak, "rss_growth_mb": peak - warm_rss,
            "rss_growth_pct": 100 * (peak - warm_rss) / warm_rss, "seconds": phase.seconds,
            "server_cpu_pct": 100 * phase.server_cpu_s / phase.seconds,
            "client_cpu_pct": 100 * phase.client_cpu_s / phase.seconds}


def fault_figures(phase: Phase, warm_rss: float) -> dict:
    """Per kind of request: statuses; the switches; answers per release; RSS."""
    kinds = {k: statuses([a for a in phase.answers if a.kind == k])
             for k in ("predict", "garbage", "oversize", "oversize-chunked")}
    garbage = [a for a in phase.answers if a.kind == "garbage"]
    predict = [a for a in phase.answers if a.kind == "predict" and a.status == 200]
    return {"statuses": kinds, "seconds": phase.seconds,
            "garbage_with_error": sum(a.status == 422 and bool(a.error) for a in garbage),
            "disconnects": phase.disconnects, "server_statuses": phase.metrics["statuses"],
            "switches": phase.switches, "latency_ms": latency_ms(predict),
            "per_release": dict(Counter(a.release for a in predict)),
            "rss_peak_mb": max(phase.rss), "rss_growth_mb": max(phase.rss) - warm_rss,
            "rss_end_mb": phase.rss[-1], "mean_batch": phase.metrics["mean_batch"]}


def lost(phase: Phase) -> dict:
    """Requests sent without an HTTP answer, and the server's count (499 aside) against the
    answers the clients got."""
    answered = sum(a.status != 0 for a in phase.answers)
    server = sum(n for s, n in phase.metrics["statuses"].items() if s != 499)
    return {"sent": len(phase.answers), "answered": answered,
            "no_answer": len(phase.answers) - answered, "server_answered": server}


def server_errors(ready: dict, final: dict) -> dict[str, int]:
    """5xx answers of any endpoint counted after the server was ready."""
    return {f"{ep} {status}": int(n - ready["requests"][(ep, status)])
            for (ep, status), n in final["requests"].items()
            if 500 <= status < 600 and n > ready["requests"][(ep, status)]}


def failures(clean: dict, faults: dict, lost_: list[dict], five: dict,
             switching: bool) -> list[str]:
    """Each check that failed, in words."""
    out = []
    if set(clean["statuses"]) != {200}:
        out.append(f"clean phase answers not all 200: {clean['statuses']}")
    expected = {"predict": 200, "garbage": 422, "oversize": 413, "oversize-chunked": 413}
    for kind, status in expected.items():
        got = faults["statuses"][kind]
        if set(got) != {status}:
            out.append(f"fault phase {kind}: wanted only {status}, got {got}")
    if faults["garbage_with_error"] != sum(faults["statuses"]["garbage"].values()):
        out.append("a garbage image's 422 named no per-image error")
    if five:
        out.append(f"5xx answers in /metrics: {five}")
    for name, n in zip(("clean", "fault"), lost_, strict=True):
        if n["no_answer"] or n["server_answered"] != n["answered"]:
            out.append(f"{name} phase lost requests: {n}")
    if switching:
        for s in faults["switches"]:
            if s["first_answer_s"] != s["first_answer_s"]:  # nan
                out.append(f"no answer from {s['to']} after switching to it")
    return out


def table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| figure | value |", "|---|---|",
                      *(f"| {k} | {v} |" for k, v in rows)])


def summary_rows(machine: str, args, raw: dict, clean: dict, faults: dict, lost_: list[dict],
                 five: dict, times: tuple[float, float], failed: list[str]
                 ) -> list[tuple[str, str]]:
    """The summary table's rows."""
    lat, flat, st = clean["latency_ms"], faults["latency_ms"], faults["statuses"]
    ready_s, stop_s = times
    switches = "; ".join(f"to {s['to']} at {s['at_s']:.1f} s: first answer after "
                         f"{s['first_answer_s']:.2f} s" for s in faults["switches"]) or "none"
    return [
        ("machine", machine.removeprefix("machine: ")),
        ("set-up", f"{args.clients} clients, {args.seconds:g} s per phase, {raw['images']} "
                   f"images of {args.size} px, --max-batch {args.max_batch}"),
        (f"raw model.predict, batch {args.max_batch}", f"{raw['batched']:.1f} images/s"),
        ("raw model.predict, one image per call", f"{raw['one_at_a_time']:.1f} images/s"),
        (f"raw compiled forward on uint8 (the server's), batch {args.max_batch}",
         f"{raw['forward']:.1f} images/s"),
        ("server start to /readyz 200 (load + warm-up)", f"{ready_s:.1f} s"),
        ("API throughput (clean phase)",
         f"{clean['images_per_s']:.1f} images/s = {clean['vs_raw_batched']:.2f}x raw batched, "
         f"{clean['vs_raw_one']:.2f}x raw one at a time, {clean['vs_forward']:.2f}x the "
         "raw compiled forward"),
        ("latency p50 / p95 / p99 / max",
         f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f} / {lat['max']:.0f} ms"),
        ("requests / statuses (clients; server)",
         f"{clean['requests']} / {clean['statuses']}; {clean['server_statuses']}"),
        ("mean batch size (/metrics)", f"{clean['mean_batch']:.1f} over {clean['batches']} "
                                       "forward passes"),
        ("RSS after warm-up -> peak (clean)",
         f"{clean['rss_warm_mb']:.0f} -> {clean['rss_peak_mb']:.0f} MB "
         f"(+{clean['rss_growth_mb']:.0f} MB, {clean['rss_growth_pct']:+.1f} %)"),
        ("CPU: server / load clients", f"{clean['server_cpu_pct']:.0f} % / "
                                       f"{clean['client_cpu_pct']:.0f} % of one core"),
        ("fault phase: predict statuses", f"{st['predict']} in {faults['seconds']:.0f} s"),
        ("fault phase: latency p50 / p99 / max",
         f"{flat['p50']:.0f} / {flat['p99']:.0f} / {flat['max']:.0f} ms"),
        ("dropped uploads (sent; server 499s)",
         f"{faults['disconnects']}; {faults['server_statuses'].get(499, 0)}"),
        ("random bytes -> 422 with error", f"{faults['garbage_with_error']} of "
                                           f"{sum(st['garbage'].values())}: {st['garbage']}"),
        ("3 MB declared / chunked -> 413", f"{st['oversize']} / {st['oversize-chunked']}"),
        ("release switches", switches),
        ("answers per release", str(faults["per_release"])),
        ("RSS peak (fault phase, 2 releases loaded meanwhile)",
         f"{faults['rss_peak_mb']:.0f} MB (+{faults['rss_growth_mb']:.0f} MB), "
         f"{faults['rss_end_mb']:.0f} MB at its end"),
        ("sent / answered / lost (clean; fault)",
         "; ".join(f"{n['sent']} / {n['answered']} / {n['no_answer']} (server counted "
                   f"{n['server_answered']})" for n in lost_)),
        ("5xx in /metrics after ready (any endpoint)", str(sum(five.values()))),
        ("server stopped after SIGTERM", f"{stop_s:.1f} s"),
        ("result", "PASS" if not failed else "FAIL: " + "; ".join(failed)),
    ]


# --- main ----------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="length of each phase")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--size", type=int, default=150, help="model image size (built model)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--faults", type=int, default=48,
                        help="dropped uploads and garbage images each (a quarter as many "
                             "oversize bodies of each kind)")
    parser.add_argument("--model", help="an existing model folder instead of the built ones")
    parser.add_argument("--from", dest="source", help="a folder of images to send instead")
    parser.add_argument("--out", help="write the summary as JSON here")
    parser.add_argument("--child", choices=("build", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    return parser.parse_args()


def prepare(args, tmp: Path) -> tuple[Path, list[bytes], dict, tuple]:
    """The model path to serve, the images, the raw reference and the switch plan."""
    if args.model:
        model = Path(args.model).absolute()
    else:
        run_child(tmp, "--child", "build", "--size", str(args.size))
        model = tmp / "production" / "current"
    if args.model and not args.source:
        args.size = int(json.loads((model / META_FILE).read_text())["image_size"])
    images = image_bytes(args.images, args.size, Path(args.source) if args.source else None)
    (tmp / "images").mkdir()
    for i, data in enumerate(images):
        (tmp / "images" / f"{i:04d}.png").write_bytes(data)
    raw = run_child(tmp, "--child", "raw", "--model", str(model), "--max-batch",
                    str(args.max_batch))
    return model, images, raw, switch_plan(model)


def report(args, raw: dict, result: dict, stop_s: float, plan: tuple) -> int:
    """Print the summary (and write it to ``--out``); 1 if a check failed."""
    from common import machine

    clean = clean_figures(result["clean"], result["warm_rss"], raw)
    faults = fault_figures(result["faults"], result["warm_rss"])
    lost_ = [lost(result["clean"]), lost(result["faults"])]
    five = server_errors(result["ready"], result["final"])
    failed = failures(clean, faults, lost_, five, plan[0] is not None)
    line = machine()
    print(line)
    print(table(summary_rows(line, args, raw, clean, faults, lost_, five,
                                (result["ready_s"], stop_s), failed)))
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"machine": line, "args": {k: v for k, v in vars(args).items()
                                       if k not in ("child", "work")},
             "raw": raw, "clean": clean, "faults": faults, "lost": lost_,
             "server_5xx": five, "ready_s": result["ready_s"], "stop_s": stop_s,
             "failures": failed}, indent=2, default=str))
    return 1 if failed else 0


def main() -> int:
    """The benchmark (or, with ``--child``, one of its TensorFlow processes)."""
    args = parse_args()
    if args.child:
        child_main(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="api-load-") as name:
        tmp = Path(name)
        model, images, raw, plan = prepare(args, tmp)
        port = free_port()
        url, log = f"http://127.0.0.1:{port}", tmp / "server.log"
        proc = start_server(model, port, args.max_batch, log)
        try:
            started = time.monotonic()
            wait_ready(proc, url, log)
            ready_s = time.monotonic() - started
            result = asyncio.run(drive(url, port, proc.pid, images, args, plan))
            result["ready_s"] = ready_s
        finally:
            stop_s = stop_server(proc)
            if plan[0] is not None and plan[0].joinpath("current").resolve().name != plan[1]:
                from unfreeze.ops.promote import point_current

                point_current(plan[0], plan[1])
        errors = [line for line in log.read_text(errors="replace").splitlines()
                  if "Traceback" in line or "ERROR" in line]
        if errors:
            print("server log errors:\n" + "\n".join(errors[:20]))
        return report(args, raw, result, stop_s, plan)


if __name__ == "__main__":
    sys.exit(main())
