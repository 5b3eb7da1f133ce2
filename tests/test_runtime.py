"""Process set-up: quiet stages (TensorFlow's start-up notices filtered, real errors kept) and
the one user-error type that turns into a one-line message and exit code 2."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import splits_for

from unfreeze import runtime
from unfreeze.config.errors import (
    DataError,
    ExportError,
    ParamsError,
    PredictError,
    ScaleOutError,
    UnfreezeError,
    WeightsError,
)

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("absl::InitializeLog", "Could not find cuda drivers", "cuInit", "oneDNN custom",
         "This TensorFlow binary is optimized")


def user_env() -> dict[str, str]:
    """The environment a user's shell would give: none of our quiet settings pre-applied."""
    env = dict(os.environ)
    for key in (runtime.RAW_STDERR_ENV, "TF_CPP_MIN_LOG_LEVEL"):
        env.pop(key, None)
    return env


def test_a_tensorflow_stage_prints_its_error_and_no_startup_notices(tmp_path, image_folder):
    """`stages/head.py` imports TensorFlow, sets up its strategy (the CUDA probe) and then
    stops on a missing weights file: stderr is that one error line, nothing else."""
    table = splits_for(image_folder)
    pq.write_table(table.replace_schema_metadata({b"source": str(image_folder).encode()}),
                   tmp_path / "splits.parquet")
    (tmp_path / "params.yaml").write_text(json.dumps({"model": {
        "image_size": 75, "weights": str(tmp_path / "missing.h5")}}))
    proc = subprocess.run([sys.executable, str(ROOT / "stages/head.py"), "--splits",
                           "splits.parquet", "--model-dir", "m", "--report-dir", "r"],
                          cwd=tmp_path, env=user_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("head: error: model.weights: file ")
    assert not [line for line in lines if any(n in line for n in NOISE)], lines
    assert "Traceback" not in proc.stderr


FILTERED = textwrap.dedent("""
    import os, sys, warnings
    from unfreeze.runtime import filter_native_stderr
    filter_native_stderr(gpu=sys.argv[1] == "gpu")
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                b"written to STDERR\\n")
    os.write(2, b"I0000 00:00:17.1   99 cudart_stub.cc:31] Could not find cuda drivers on "
                b"your machine, GPU will not be used.\\n")
    os.write(2, b"E0000 00:00:17.2   99 cuda_platform.cc:52] failed call to cuInit: x\\n")
    os.write(2, b"E0000 00:00:17.3   99 some_kernel.cc:7] a real native error\\n")
    warnings.warn("a real Python warning")
    sys.stderr.write("\\rprogress 50%")
    sys.stderr.flush()
    print("stdout is untouched", flush=True)
    if sys.argv[2:] == ["crash"]:
        os.write(2, b"\\nthe last words before a crash\\n")
        os.abort()
""")


def run_filtered(mode: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FILTERED, mode, *args], env=user_env() | env,
                          capture_output=True, text=True, timeout=60)


def test_the_filter_drops_known_notices_and_keeps_everything_else():
    proc = run_filtered("no-gpu")
    assert proc.returncode == 0 and proc.stdout == "stdout is untouched\n"
    assert "a real native error" in proc.stderr and "a real Python warning" in proc.stderr
    assert proc.stderr.rstrip().endswith("progress 50%")  # a partial line is passed on
    assert not any(n in proc.stderr for n in NOISE), proc.stderr


def test_a_crash_loses_nothing_written_before_it():
    """The filter is a process of its own: it passes on what a crashing process wrote."""
    proc = run_filtered("no-gpu", "crash")
    assert proc.returncode < 0  # killed by SIGABRT
    assert proc.stderr.rstrip().endswith("the last words before a crash")
    assert "a real native error" in proc.stderr and "cuInit" not in proc.stderr


def test_cuda_lines_are_kept_on_a_gpu_machine_and_everything_when_asked():
    gpu = run_filtered("gpu")
    assert "failed call to cuInit" in gpu.stderr and "absl::InitializeLog" not in gpu.stderr
    raw = run_filtered("no-gpu", **{runtime.RAW_STDERR_ENV: "1"})
    assert all(n in raw.stderr for n in NOISE[:3])
    debugging = run_filtered("no-gpu", TF_CPP_MIN_LOG_LEVEL="0")  # TF's own logs turned up
    assert all(n in debugging.stderr for n in NOISE[:3])


@pytest.mark.parametrize("error", [ParamsError, DataError, WeightsError, ExportError,
                                   PredictError, ScaleOutError])
def test_every_user_error_is_an_unfreeze_error_with_exit_code_2(error, capsys):
    def fail():
        raise error("what was wrong, and what to do")

    assert issubclass(error, UnfreezeError)
    assert runtime.stage_main("stage", fail) == runtime.EXIT_USER_ERROR
    assert capsys.readouterr().err == "stage: error: what was wrong, and what to do\n"


def test_a_bug_is_not_a_user_error():
    def bug():
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        runtime.stage_main("stage", bug)


def test_a_stage_without_tensorflow_starts_no_stderr_filter(monkeypatch):
    started = []
    monkeypatch.setattr(runtime, "filter_native_stderr", lambda: started.append(True))
    assert runtime.stage_main("source", lambda: None, tensorflow=False) == 0
    assert started == []
    assert runtime.stage_main("head", lambda: None) == 0
    assert started == [True]


def test_child_processes_get_the_quiet_defaults_and_this_python_first():
    env = runtime.child_env({"PATH": "/usr/bin", "DVC_NO_ANALYTICS": "0",
                             "TF_CPP_MIN_LOG_LEVEL": "1"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "1"  # a setting of the user's is kept …
    assert env["DVC_NO_ANALYTICS"] == "1"  # … but analytics stay off
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert set(runtime.QUIET_ENV) <= set(env)


def test_stage_cli_loads_params_names_the_stage_and_takes_optional_paths(tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 7\n")
    seen: dict = {}
    fold = ("--fold", {"type": int, "required": True, "help": "fold"})
    assert runtime.stage_cli("cv@{fold}", "doc", [fold, "--backup-dir"], lambda a: seen.update(
        vars(a)), ["--fold", "3"]) == 0
    assert seen["params"].seed == 7 and seen["fold"] == 3 and seen["backup_dir"] is None
    (tmp_path / "params.yaml").write_text("seed: seven\n")
    assert runtime.stage_cli("cv@{fold}", "doc", [fold], print, ["--fold", "3"]) == 2
    assert capsys.readouterr().err.startswith("cv@3: error: params.yaml: params: `seed` must")
    seen.clear()
    assert runtime.stage_cli("report", "doc", [("--out", "output")], lambda a: seen.update(
        vars(a)), ["--out", "o.html"], params=False) == 0
    assert seen == {"out": "o.html"}  # no params read: an invalid params.yaml does not matter


def test_stages_that_start_no_filter_import_no_tensorflow():
    """A stage declared ``tensorflow=False`` (no stderr filter, a process less) must not
    import TensorFlow through what its body imports (each checked in a fresh process)."""
    import ast

    declared = {}
    for script in sorted((ROOT / "stages").glob("*.py")):
        tree = ast.parse(script.read_text())
        modules = sorted({node.module for node in ast.walk(tree)
                          if isinstance(node, ast.ImportFrom) and node.module
                          and node.module.startswith("unfreeze")})
        no_tf = "tensorflow=False" in script.read_text()
        declared[script.stem] = (no_tf, modules)
    assert {name for name, (no_tf, _) in declared.items() if no_tf} == {
        "source", "prepare", "split", "folds", "report", "cv_report"}
    probe = ("import importlib, json, sys\n"
             "out = {}\n"
             "for name, modules in json.loads(sys.argv[1]).items():\n"
             "    for m in modules: importlib.import_module(m)\n"
             "    out[name] = 'tensorflow' in sys.modules\n"
             "print(json.dumps(out))\n")
    for name, (no_tf, modules) in declared.items():
        if not no_tf:
            continue
        proc = subprocess.run([sys.executable, "-c", probe, json.dumps({name: modules})],
                              capture_output=True, text=True, check=True)
        imported = json.loads(proc.stdout.strip().splitlines()[-1])[name]
        assert not imported, (name, modules)
