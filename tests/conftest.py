"""Shared fixtures: tiny generated image folders and a quiet TensorFlow."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from unfreeze.runtime import RAW_STDERR_ENV, child_env, quiet_environment

quiet_environment()
# In-process stage and CLI calls leave pytest's own stderr alone; the processes the tests
# start (dvc repro, stages) filter it as users' do: project_env() drops this again.
os.environ.setdefault(RAW_STDERR_ENV, "1")

ROOT = Path(__file__).resolve().parents[1]
# The `source` stage's address: it is declared alone in data/dvc.yaml (a cheap lock to rewrite).
SOURCE = "data/dvc.yaml:source"
COLOURS = {"cat": (200, 40, 40), "dog": (40, 40, 200), "eel": (40, 200, 40)}


def make_image_folder(root: Path, per_class: dict[str, int], size: int = 40,
                      seed: int = 0, group_size: int = 0) -> Path:
    """Write ``per_class[label]`` noisy, class-coloured PNGs under ``root/<label>/``.

    With ``group_size``, images go in groups of that size into ``root/<label>/<group>/``.
    """
    rng = np.random.default_rng(seed)
    for label, n in per_class.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array(COLOURS.get(label, (128, 128, 128)))
        for i in range(n):
            pixels = (rng.normal(0, 25, (size, size, 3)) + colour).clip(0, 255).astype(np.uint8)
            target = folder / f"{label}_g{i // group_size}" if group_size else folder
            target.mkdir(exist_ok=True)
            Image.fromarray(pixels).save(target / f"{label}_{i:03d}.png")
    return root


def make_multilabel_images(root: Path, n: int = 48, size: int = 40, seed: int = 0,
                           group_size: int = 0) -> list[dict]:
    """Write ``n`` noisy PNGs under ``root/images/`` whose labels are colours: ``red`` adds
    red, ``blue`` adds blue (independent, about half each, so about a quarter have no label);
    return the label-file rows (path, labels joined by ``;``, and a ``patient`` column with
    ``group_size``)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        labels = [name for name, on in (("blue", i % 2), ("red", (i // 2) % 2)) if on]
        colour = np.array([60 + 150 * ("red" in labels), 60, 60 + 150 * ("blue" in labels)])
        pixels = (rng.normal(0, 25, (size, size, 3)) + colour).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"img_{i:03d}.png")
        row = {"path": f"images/img_{i:03d}.png", "label": ";".join(labels)}
        if group_size:
            row["patient"] = f"p{i // group_size:02d}"
        rows.append(row)
    return rows


def write_label_csv(path: Path, rows: list[dict]) -> Path:
    """Write label-file rows as CSV (header from the first row's keys)."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def one_cycle(step: int, total: int, peak: float, pct: float = 0.25) -> float:
    """fastai's one cycle, written out: cosine from peak/25 up to peak, then to peak/1e5."""
    pos = step / total

    def anneal(start, end, x):
        return start + (1 + math.cos(math.pi * (1 - x))) * (end - start) / 2

    if pos < pct:
        return anneal(peak / 25, peak, pos / pct)
    return anneal(peak, peak / 1e5, (pos - pct) / (1 - pct))


def splits_for(folder: Path, test_paths=()) -> pa.Table:
    """A splits table of an ``image_folder``: 3 val images per class, the rest train, plus
    ``test_paths`` (which may not exist: training must never read them)."""
    rows = []
    for label in ("cat", "dog"):
        files = sorted((folder / label).glob("*.png"))
        for i, f in enumerate(files):
            split = "val" if i < 3 else "train"
            rows.append({"path": f"{label}/{f.name}", "label": label, "split": split})
    rows += [{"path": p, "label": "cat", "split": "test"} for p in test_paths]
    return pa.Table.from_pylist(rows)


@pytest.fixture
def eager():
    """TensorFlow functions run eagerly: no graph tracing, which costs ~15 s per ``fit`` of
    InceptionV3 on 2 cores. The fast unit tests of the training logic use it; graph mode and
    XLA are what the end-to-end `dvc repro` tests (slow tier) run."""
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


@pytest.fixture
def tuned_datasets(monkeypatch) -> list:
    """Every dataset ``inputs.tuned`` makes while the test runs, in order (a spy on it, where
    ``inputs`` and ``evaluation.inference`` call it); the datasets are the real ones."""
    from unfreeze.evaluation import inference
    from unfreeze.training import inputs

    made: list = []
    real = inputs.tuned

    def spy(ds):
        made.append(real(ds))
        return made[-1]

    monkeypatch.setattr(inputs, "tuned", spy)
    monkeypatch.setattr(inference, "tuned", spy)
    return made


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes of 12 small PNG images each."""
    return make_image_folder(tmp_path / "images", {"cat": 12, "dog": 12})


def project_env(project: Path) -> dict[str, str]:
    """Environment for commands run in a project copy: its own src, this venv, quiet."""
    env = child_env()
    env.pop(RAW_STDERR_ENV, None)
    env["PYTHONPATH"] = str(project / "src")
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return env


def run_in(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=project, env=project_env(project), capture_output=True,
                          text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def set_params(project: Path, **changes: dict) -> None:
    """Update sections of a project's params.yaml."""
    import yaml

    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        if isinstance(values, dict):
            params[section].update(values)
        else:  # a top-level value (`task`, `seed`)
            params[section] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(dest: Path, params: dict, per_class: dict[str, int] | None,
                 group_size: int = 0, label_rows: int = 0) -> Path:
    """A committed git + DVC copy of this project (code, both dvc.yaml, params) with tiny
    images: class folders (``per_class``, and a broken file), or ``label_rows`` multi-label
    images with their label file, ``data/labels.csv`` (:func:`make_multilabel_images`)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "data").mkdir()
    for name in ("dvc.yaml", "data/dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("stages", "src"):
        shutil.copytree(ROOT / folder, dest / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if per_class:
        make_image_folder(dest / "data/images", per_class, size=48, group_size=group_size)
        (dest / "data/images/cat/broken.jpg").write_bytes(b"not a jpeg")
    if label_rows:
        write_label_csv(dest / "data/labels.csv", make_multilabel_images(
            dest / "data", label_rows, size=48, group_size=group_size))
    run_in(dest, "git", "init", "-q")
    run_in(dest, sys.executable, "-m", "dvc", "init", "-q")
    for name in (".dvc/config", ".dvcignore"):
        shutil.copy(ROOT / name, dest / name)
    set_params(dest, **params)
    run_in(dest, "git", "add", "-A")
    run_in(dest, "git", "commit", "-qm", "tiny project")
    return dest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect API (and database) for the whole test session."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect_home")))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """End a process group started by a test (``start_new_session``): SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_until(probe, seconds: float):
    """Poll ``probe`` until it returns a truthy value; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"gave up after {seconds} s")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server` on a loopback port for the whole session; yields its API URL.
    Ended (and checked ended) when the session finishes."""
    root = tmp_path_factory.mktemp("prefect_server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(root / "home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    with (root / "server.log").open("w") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
             "127.0.0.1", "--port", str(port)], env=env, start_new_session=True, stdout=log,
            stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 90)
            yield url
        finally:
            stop(server)
    assert server.poll() is not None


@contextlib.contextmanager
def chromium(width: int = 1200, height: int = 900):
    """Headless Chromium through selenium (Debian's chromium and chromium-driver), with the
    browser console logged; skipped without them outside CI, a failure in CI."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("CI"):
            raise AssertionError("chromium and chromium-driver are missing (.ci/run installs "
                                 "them with apt-get)")
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium "
                    "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()
