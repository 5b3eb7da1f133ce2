"""`unfreeze sweep`: the search space, the checks, the ranking maths and the resume logic on a
fake DVC (fast); then real `dvc exp run` trials on a tiny project (slow)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, make_project, project_env, run_in

from unfreeze.config.errors import SweepError
from unfreeze.config.params import load_params
from unfreeze.ops import sweep_dvc, sweep_plan
from unfreeze.ops.sweep import budget_stop, run_sweep
from unfreeze.ops.sweep_rank import comparison_mode, paired_interval, rank, summary
from unfreeze.ops.sweep_space import (
    Choice,
    Metric,
    Range,
    SweepSpec,
    grid,
    load_space,
    parse_budget,
    parse_metric,
)

CV = Metric("cv", "roc_auc")


# --- the search space ---------------------------------------------------------------------

def test_space_from_a_file_and_options_with_exponents_read_as_numbers(tmp_path):
    file = tmp_path / "space.yaml"
    file.write_text("head.learning_rate: [1e-3, 0.01]\n"
                    "finetune.learning_rate: {low: 1e-5, high: 1e-3, log: true}\n"
                    "head.epochs: {low: 2, high: 8, int: true}\n"
                    "cv.phases: [[head], [head, finetune]]\n")
    space = load_space(file, ["head.learning_rate=0.1,0.2", "finetune.unfreeze_from=mixed8,3",
                              "model.dropout=0.1..0.5", "head.batch_size=8..64:log"])
    assert space["head.learning_rate"] == Choice((0.1, 0.2))  # -S wins over the file
    assert space["finetune.learning_rate"] == Range(1e-5, 1e-3, log=True)
    assert space["head.epochs"] == Range(2, 8, integer=True)
    assert space["cv.phases"] == Choice((["head"], ["head", "finetune"]))
    assert space["finetune.unfreeze_from"] == Choice(("mixed8", 3))
    assert space["model.dropout"] == Range(0.1, 0.5)
    assert space["head.batch_size"] == Range(8, 64, log=True, integer=True)
    assert load_space(None, ["cv.phases=[head],[head,finetune]"])["cv.phases"] == \
        Choice((["head"], ["head", "finetune"]))


@pytest.mark.parametrize(("file_text", "options", "words"), [
    (None, [], "nothing to search"),
    (None, ["head.learning_rate"], "PATH=V1,V2"),
    ("head.learning_rate: {low: 0.1, high: 0.01}", [], "head.learning_rate"),
    ("head.learning_rate: {low: 0, high: 0.1, log: true}", [], "L > 0 with log"),
    ("head.epochs: {low: 1.5, high: 4, int: true}", [], "integers with int"),
    ("[1, 2]", [], "mapping of param paths"),
])
def test_a_bad_space_is_refused_naming_what_is_wrong(tmp_path, file_text, options, words):
    file = None
    if file_text is not None:
        file = tmp_path / "space.yaml"
        file.write_text(file_text)
    with pytest.raises(SweepError, match=words):
        load_space(file, options)


def test_grid_enumerates_every_combination_in_the_order_given():
    space = {"a": Choice((1, 2)), "b": Choice(("x", "y", "z"))}
    assert grid(space) == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
    with pytest.raises(SweepError, match="random or tpe"):
        grid({"a": Range(0.1, 0.2)})


@pytest.fixture
def params_file(tmp_path) -> Path:
    """The project's params.yaml, copied (its own defaults)."""
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    return path


def test_trial_params_are_set_as_dvc_sets_them_and_read_as_the_stages_read_them(params_file):
    sweep_dvc.check_trial(params_file, {
        "head.learning_rate": 0.01, "cv.phases": ["head"], "model.weights": None,
        "evaluate.threshold": "recall>=0.95", "finetune.unfreeze_from": 3,
        "data.source": "it's data"})
    with pytest.raises(SweepError, match=r"head\.learning_rate.*in \(0, 1\), got 2\.0"):
        sweep_dvc.check_trial(params_file, {"head.learning_rate": 2.0})
    with pytest.raises(SweepError, match=r"unknown key `head\.nope`"):
        sweep_dvc.check_trial(params_file, {"head.nope": 1})
    # a param the file leaves at its default is added (`-S +path=value`)
    raw = yaml.safe_load(params_file.read_text())
    del raw["evaluate"]["gradcam"]
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert sweep_dvc.overrides(raw, {"evaluate.gradcam": 0}) == ["+evaluate.gradcam=0"]
    sweep_dvc.check_trial(params_file, {"evaluate.gradcam": 0})


def test_a_small_float_written_by_dvc_loads_as_a_number(params_file, tmp_path):
    """DVC writes 1e-05 as `1e-05` (YAML 1.2, no decimal point): the params loader reads it
    as a number (PyYAML's YAML 1.1 rules alone would read a string)."""
    probe = tmp_path / "probe.yaml"
    probe.write_text("head:\n  learning_rate: 1e-05\nfinetune:\n  learning_rate: 3e-5\n")
    params = load_params(probe)
    assert params.head.learning_rate == 1e-05 and params.finetune.learning_rate == 3e-05
    sweep_dvc.check_trial(params_file, {"head.learning_rate": 1e-05})


def test_metrics_cv_and_validation_are_accepted_and_a_test_metric_is_refused_saying_why():
    assert parse_metric(None, "f1") == Metric("cv", "f1")
    assert parse_metric("cv.roc_auc", "f1").target == "cv_report"
    loss = parse_metric("val:loss", "f1")
    assert loss.target == "finetune" and not loss.maximize
    assert parse_metric("VAL.accuracy", "f1").maximize
    for text in ("test:roc_auc", "evaluate.accuracy", "reports/evaluate/metrics.json:f1",
                 "export.accuracy"):
        with pytest.raises(SweepError, match="optimistic estimate") as info:
            parse_metric(text, "roc_auc")
        assert "read once, at the end" in str(info.value) and "cv:roc_auc" in str(info.value)
    for text in ("roc_auc", "cv:nope", "val:f1"):
        with pytest.raises(SweepError, match="unknown"):
            parse_metric(text, "roc_auc")


def test_budget_parsing_and_the_rule_that_stops_new_trials():
    assert [parse_budget(t) for t in ("90", "90s", "30m", "2h", "1.5h", None)] == \
        [90, 90, 1800, 7200, 5400, None]
    for bad in ("soon", "0", "-5m", "2 weeks"):
        with pytest.raises(SweepError, match="--budget"):
            parse_budget(bad)
    now = time.monotonic()
    assert budget_stop(None, now - 1e6, [1.0]) is None
    assert "spent" in budget_stop(100, now - 101, [])
    assert budget_stop(100, now - 50, []) is None  # no trial finished yet: no estimate
    assert budget_stop(100, now - 50, [10, 40, 20]) is None  # 50 s left > median 20 s
    assert "median trial time" in budget_stop(100, now - 50, [60, 70, 10])


# --- the ranking ----------------------------------------------------------------------------

def _trial(number: int, values: list[float], **extra) -> dict:
    mean = sum(values) / len(values)
    return {"number": number, "experiment": f"s-{number}", "params": {"head.epochs": number},
            "status": "done", "score": mean, "values": values,
            "ci95": [mean - 0.2, mean + 0.2], "fold_sizes": [10] * len(values)} | extra


def test_paired_interval_is_the_t_interval_of_the_per_fold_differences():
    from scipy.stats import t

    mean, low, high = paired_interval([0.9, 0.8, 0.85], [0.7, 0.75, 0.6], maximize=True)
    diffs = [0.2, 0.05, 0.25]
    sd = math.sqrt(sum((d - 0.5 / 3) ** 2 for d in diffs) / 2)
    half = t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert mean == pytest.approx(0.5 / 3)
    assert (low, high) == (pytest.approx(0.5 / 3 - half), pytest.approx(0.5 / 3 + half))
    assert paired_interval([0.2], [0.3], maximize=False)[0] == pytest.approx(0.1)


def test_ranking_marks_trials_the_paired_folds_cannot_tell_from_the_best():
    trials = [_trial(1, [0.70, 0.72, 0.68]),   # always 0.2 below the best: distinguishable
              _trial(2, [0.90, 0.92, 0.88]),   # the best
              _trial(3, [0.95, 0.80, 0.90]),   # close, noisy: not distinguishable
              {"number": 4, "experiment": "s-4", "params": {}, "status": "failed",
               "error": "boom"},
              {"number": 5, "experiment": None, "params": {}, "status": "duplicate"}]
    mode, note = comparison_mode(CV, ["head.epochs"], trials)
    assert mode == "paired" and "same 3 folds" in note
    rows = rank(trials, CV, mode)
    assert [r["trial"] for r in rows] == [2, 3, 1, 4]
    assert [r["mark"] for r in rows] == ["best", "≈", "", "failed"]
    assert rows[2]["vs_best_high"] < 0 < rows[1]["vs_best_high"]
    text = "\n".join(summary(rows, CV, note, "# s"))
    assert "dvc exp apply s-2" in text and "| 1 | 2 | s-2 |" in text


def test_without_shared_folds_trials_are_compared_by_interval_overlap():
    trials = [_trial(1, [0.9, 0.9]), _trial(2, [0.7, 0.75]), _trial(3, [0.4, 0.45])]
    mode, note = comparison_mode(CV, ["seed", "head.epochs"], trials)
    assert mode == "overlap" and "seed is swept" in note
    assert [r["mark"] for r in rank(trials, CV, mode)] == ["best", "≈", ""]
    trials[2]["fold_sizes"] = [9, 11]
    assert comparison_mode(CV, ["head.epochs"], trials)[0] == "overlap"
    val = Metric("val", "loss")
    rows = rank([_trial(1, [0.3]), _trial(2, [0.2])], val, comparison_mode(val, [], [])[0])
    assert [(r["trial"], r["mark"]) for r in rows] == [(2, "best"), (1, "")]


# --- which paths a trial gets copied --------------------------------------------------------

def test_untracked_files_and_untracked_path_params_are_copied_and_outside_paths_refused(
        tmp_path):
    root = tmp_path / "p"
    (root / "data").mkdir(parents=True)
    (root / "data/dvc.yaml").write_text("stages: {}\n")
    (root / ".gitignore").write_text("/ignored/\n/models/\n")
    run_in(root, "git", "init", "-q")
    run_in(root, "git", "add", "-A")
    run_in(root, "git", "commit", "-qm", "init")
    for path in ("data/images/cat/a.png", "notes.txt", "ignored/deep/images/x.png",
                 "ignored/w.h5", "models/head/model.keras", "data/manifest.parquet",
                 ".unfreeze/cache/x", "reports/sweep/s/state.json"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x")
    outputs = ["models/head", "data/manifest.parquet"]
    untracked = sweep_dvc.untracked(root, outputs)
    assert sorted(untracked) == ["data/images", "notes.txt"]
    tracked = sweep_dvc.tracked_folders(root)
    found = sweep_dvc.param_paths(root, {"data.source": "ignored/deep/images",
                                         "model.weights": "ignored/w.h5"}, outputs, tracked)
    assert found == ["ignored", "ignored"]
    assert sweep_dvc.copy_list(untracked + found + ["data/images/cat"]) == \
        ["data/images", "ignored", "notes.txt"]
    assert sweep_dvc.param_paths(root, {"data.source": "elpv", "model.weights": None},
                                 outputs, tracked) == []
    assert sweep_dvc.param_paths(root, {"data.source": str(tmp_path)}, outputs, tracked) == []
    with pytest.raises(SweepError, match="leads out of the project"):
        sweep_dvc.param_paths(root, {"data.source": "../elsewhere"}, outputs, tracked)


def test_what_a_killed_dvc_run_left_is_cleared_and_nothing_else(tmp_path):
    base = tmp_path / sweep_dvc.STANDALONE
    for rev, name, status in (("a1", "s-2", 2), ("b2", "s-1", 6), ("c3", "other", 2)):
        copy = base / f"tmp{rev}"
        copy.mkdir(parents=True)
        (base / "run" / rev).mkdir(parents=True)
        (base / "run" / rev / f"{rev}.run").write_text(json.dumps(
            {"name": name, "status": status, "root_dir": str(copy)}))
    sweep_dvc.clear_killed_run(tmp_path, "s-2")
    assert sorted(p.name for p in base.iterdir()) == ["run", "tmpb2", "tmpc3"]
    assert sorted(p.name for p in (base / "run").iterdir()) == ["b2", "c3"]


# --- the sweep loop on a fake DVC -----------------------------------------------------------

class FakeDvc:
    """Stands in for the DVC side of a trial: records runs, scores by learning rate."""

    def __init__(self, monkeypatch, root: Path, fail: set = frozenset(), kill_at: int = 0):
        self.runs: list[dict] = []
        self.fail, self.kill_at = set(fail), kill_at
        self.made: dict[str, dict] = {}
        for name, value in (("baseline", lambda r: "ab" + "0" * 38),
                            ("dvc_outputs", lambda r: []), ("untracked", lambda r, o: []),
                            ("tracked_folders", lambda r: {"."}),
                            ("run_experiment", self.run_experiment),
                            ("read_score", self.read_score)):
            monkeypatch.setattr(sweep_dvc, name, value)
        monkeypatch.setattr(sweep_plan, "experiments", lambda r, b: list(self.made))
        real_git = sweep_dvc.git
        monkeypatch.setattr(sweep_dvc, "git", lambda r, *a, check=True: None
                            if a[:1] == ("rev-parse",) else real_git(r, *a, check=check))

    def run_experiment(self, root, name, overrides, copies, target, log, env):
        self.runs.append({"name": name, "overrides": overrides, "target": target})
        if len(self.runs) == self.kill_at:
            raise KeyboardInterrupt
        if any(o in self.fail for o in overrides):
            raise sweep_dvc.TrialFailed(f"{name} ran out of memory")
        self.made[name] = dict(o.split("=", 1) for o in overrides)

    def read_score(self, root, ref, metric):
        lr = float(self.made[ref.rsplit("/", 1)[-1]]["head.learning_rate"])
        values = [1 - abs(math.log10(lr) + 2) / 4 + d for d in (-0.05, 0.05)]
        return {"score": sum(values) / 2, "values": values, "fold_sizes": [5, 5],
                "ci95": [min(values), max(values)]}


@pytest.fixture
def project(tmp_path, params_file) -> Path:
    return params_file.parent


def _spec(options: list[str], **kw) -> SweepSpec:
    return SweepSpec(load_space(None, options), CV, **({"name": "s"} | kw))


def test_a_grid_sweep_runs_each_combination_once_and_resumes_after_an_interruption(
        monkeypatch, project):
    fake = FakeDvc(monkeypatch, project, kill_at=2)
    spec = _spec(["head.learning_rate=0.001,0.01,0.1"])
    with pytest.raises(KeyboardInterrupt):
        run_sweep(project, spec, say=lambda _: None)
    state = json.loads((project / "reports/sweep/s/state.json").read_text())
    assert [t["status"] for t in state["trials"]] == ["done", "running"]
    assert (project / "reports/sweep/s/ranking.md").is_file()  # written however it stops
    fake.kill_at = 0
    lines = run_sweep(project, spec, say=lambda _: None)
    assert [r["name"] for r in fake.runs] == ["s-1", "s-2", "s-2", "s-3"]
    assert fake.runs[0]["overrides"] == ["head.learning_rate=0.001"]
    assert fake.runs[0]["target"] == "cv_report"
    assert "dvc exp apply s-2" in "\n".join(lines)  # lr 0.01 scores best
    run_sweep(project, spec, say=lambda _: None)  # everything done: nothing runs
    assert len(fake.runs) == 4
    with pytest.raises(SweepError, match="another method, metric, space"):
        run_sweep(project, _spec(["head.learning_rate=0.5"]), say=lambda _: None)


def test_failed_trials_are_ranked_last_and_two_in_a_row_stop_the_sweep(monkeypatch, project):
    fail = {"head.learning_rate=0.001", "head.learning_rate=0.002"}
    fake = FakeDvc(monkeypatch, project, fail=fail)
    spec = _spec(["head.learning_rate=0.01,0.001,0.002,0.003,0.004"])
    run_sweep(project, _spec(["head.learning_rate=0.001,0.01"], name="t"), say=lambda _: None)
    ranking = (project / "reports/sweep/t/ranking.csv").read_text().splitlines()
    assert ranking[1].startswith("1,2,t-2,done") and ",failed," in ranking[2]
    with pytest.raises(SweepError, match=r"2 trials in a row failed.*out of memory"):
        run_sweep(project, spec, say=lambda _: None)
    assert len(fake.runs) == 2 + 3  # s: 0.01 runs, 0.001 and 0.002 fail: stop
    fake.fail.clear()
    run_sweep(project, spec, say=lambda _: None)  # failed trials are not retried ...
    assert [r["name"] for r in fake.runs[5:]] == ["s-4", "s-5"]
    spec_retry = SweepSpec(spec.space, CV, name="s", retry_failed=True)
    run_sweep(project, spec_retry, say=lambda _: None)  # ... unless asked
    assert [r["name"] for r in fake.runs[7:]] == ["s-2", "s-3"]


def test_the_budget_stops_new_trials_and_the_ranking_is_written(monkeypatch, project):
    FakeDvc(monkeypatch, project)
    said = []
    spec = _spec(["head.learning_rate=0.001,0.01"], budget=1e-9)
    run_sweep(project, spec, say=said.append)
    assert "stopped: the budget" in said[-1]
    assert "No trial has a score yet" in (project / "reports/sweep/s/ranking.md").read_text()


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_random_and_tpe_sweeps_resume_their_optuna_study_without_redrawing(
        monkeypatch, project, method):
    fake = FakeDvc(monkeypatch, project)
    options = ["head.learning_rate=0.001..0.1:log", "finetune.unfreeze_from=mixed8,mixed9"]
    run_sweep(project, _spec(options, method=method, trials=3, seed=1), say=lambda _: None)
    run_sweep(project, _spec(options, method=method, trials=5, seed=1), say=lambda _: None)
    state = json.loads((project / "reports/sweep/s/state.json").read_text())
    rates = [t["params"]["head.learning_rate"] for t in state["trials"]]
    assert len(fake.runs) == 5 and len(set(rates)) == 5
    assert all(0.001 <= r <= 0.1 for r in rates)
    import optuna

    study = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(project / "reports/sweep/s/study.journal"
                                                       ))))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5


def test_a_proposal_equal_to_a_finished_trial_is_not_run_again(monkeypatch, project):
    fake = FakeDvc(monkeypatch, project)
    run_sweep(project, _spec(["head.learning_rate=0.001,0.01"], method="random", trials=6),
              say=lambda _: None)
    state = json.loads((project / "reports/sweep/s/state.json").read_text())
    assert len(state["trials"]) == 6 and len(fake.runs) == 2
    assert {t["status"] for t in state["trials"]} == {"done", "duplicate"}


def test_a_new_sweep_refuses_a_name_whose_experiments_exist(monkeypatch, project):
    fake = FakeDvc(monkeypatch, project)
    fake.made["s-1"] = {}
    with pytest.raises(SweepError, match="experiments s-1 exist"):
        run_sweep(project, _spec(["head.learning_rate=0.01"]), say=lambda _: None)
    with pytest.raises(SweepError, match="--trials is for"):
        run_sweep(project, _spec(["head.learning_rate=0.01"], trials=3), say=lambda _: None)
    with pytest.raises(SweepError, match="--name"):
        run_sweep(project, _spec(["head.learning_rate=0.01"], name="-x"), say=lambda _: None)


def test_the_cli_refuses_a_test_metric_before_anything_runs(project, capsys):
    from unfreeze.cli import main

    code = main(["sweep", "-S", "head.learning_rate=0.001,0.01", "--metric", "test:roc_auc",
                 "--project", str(project)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("unfreeze: error: --metric test:roc_auc: refused")
    assert err.count("\n") == 1  # one line
    assert not (project / "reports").exists()


# --- real DVC experiments (slow) ------------------------------------------------------------

TINY = {
    "data": {"source": "data/images"},
    "split": {"test": 0.25, "val": 0.25},
    "model": {"image_size": 75, "weights": None, "hidden_units": 8},
    "head": {"epochs": 1, "batch_size": 8},
    "train": {"xla": False},
    "cv": {"folds": 2, "phases": ["head"]},  # the cheapest CV: 2 folds of phase one
}
SWEEP = ["-m", "unfreeze.cli", "sweep", "-S", "head.learning_rate=0.001,0.01", "--name", "s"]


def _dvc(project: Path, *args: str) -> str:
    return run_in(project, sys.executable, "-m", "dvc", *args).stdout


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> dict:
    """A tiny project whose images are untracked (so a trial has them only if the sweep
    copies them in), swept over two learning rates: killed (the whole process group) during
    the second trial, then run again to the end. Returns what each run showed."""
    project = make_project(tmp_path_factory.mktemp("sweep"), TINY, {"cat": 12, "dog": 12})
    run_in(project, "git", "rm", "-r", "-q", "--cached", "data/images")
    run_in(project, "git", "commit", "-qm", "the images are untracked")
    state_file = project / "reports/sweep/s/state.json"
    first = subprocess.Popen([sys.executable, *SWEEP], cwd=project, env=project_env(project),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and first.poll() is None:
            log = project / "reports/sweep/s/trial-2.log"
            if log.is_file() and "Running stage 'cv@0'" in log.read_text():
                break  # mid-trial: a TensorFlow fold of trial 2 is training
            time.sleep(0.5)
        killed_state = json.loads(state_file.read_text())
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    second = run_in(project, sys.executable, *SWEEP)
    return {"project": project, "killed_state": killed_state, "first": first.stdout.read(),
            "second": second.stdout, "state": json.loads(state_file.read_text())}


@pytest.mark.slow
def test_a_sweep_runs_each_trial_as_a_dvc_experiment_ranked_by_cv(swept):
    project, state = swept["project"], swept["state"]
    assert [t["status"] for t in state["trials"]] == ["done", "done"]
    for trial in state["trials"]:
        assert len(trial["values"]) == 2 and trial["fold_sizes"] == [9, 9]  # 2 CV folds
        low, high = trial["ci95"]
        assert low <= trial["score"] <= high
    log = (project / "reports/sweep/s/trial-1.log").read_text()
    assert "-C data/images" in log and "24 usable images" in log  # the untracked images
    from unfreeze.training.cache import decoder

    # the trials decoded into the project's own cache (the workspace never ran a stage), the
    # 18 train + val images only: no trial reads a test image
    assert len(list((project / ".unfreeze/cache" / decoder() / "75px").glob("*/*.u8"))) == 18
    ranking = (project / "reports/sweep/s/ranking.md").read_text()
    assert "cv:roc_auc" in ranking and "paired" in ranking and "dvc exp apply s-" in ranking
    assert ranking.strip() in swept["second"]
    shown = json.dumps(json.loads(_dvc(project, "exp", "show", "--json")))
    assert '"name": "s-1"' in shown and '"name": "s-2"' in shown
    assert run_in(project, "git", "status", "--porcelain").stdout == "?? data/images/\n"
    applied = run_in(project, sys.executable, "-m", "dvc", "exp", "apply", "s-2", check=False)
    assert yaml.safe_load((project / "params.yaml").read_text())["head"]["learning_rate"] \
        == 0.01
    # this tiny project never ran head, finetune, evaluate or export: their outputs are in no
    # cache, which `dvc exp apply` reports after it has restored the params and dvc.lock
    assert applied.returncode == 0 or "Checkout failed" in applied.stderr, applied.stderr


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_running_a_finished_trial_again(swept):
    killed = swept["killed_state"]["trials"]
    assert [t["status"] for t in killed] == ["done", "running"]
    assert "trial 1 (s-1)" in swept["first"] and "trial 1 (s-1)" not in swept["second"]
    assert "resuming: 1 done, 1 to run again" in swept["second"]
    assert swept["state"]["trials"][0] == killed[0]  # finished trial untouched
    assert not list((swept["project"] / sweep_dvc.STANDALONE).glob("tmp*"))  # cleared


def test_val_loss_cannot_rank_trials_that_change_label_smoothing():
    space = load_space(None, ["head.label_smoothing=0.0,0.1"])
    with pytest.raises(SweepError, match=r"val:loss.*head.label_smoothing.*smoothed targets"):
        SweepSpec(space, Metric("val", "loss"))
    SweepSpec(space, Metric("val", "accuracy"))  # accuracy does not see the smoothing
    SweepSpec(space, Metric("cv", "roc_auc"))
