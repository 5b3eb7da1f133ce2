"""Static checks of dvc.yaml and data/dvc.yaml: scripts, library and params each stage
depends on."""

import ast
from pathlib import Path

import yaml

from unfreeze.config.params import Params

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
DATA = yaml.safe_load((ROOT / "data/dvc.yaml").read_text())["stages"]
SPEC = PIPELINE | DATA


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def stages():
    """(name, definition) of every stage; a foreach stage gives its `do` template."""
    for name, stage in SPEC.items():
        yield name, stage.get("do", stage)


def test_every_stage_depends_on_its_script_and_the_whole_library():
    """Each stage depends on its script and on src/unfreeze as one folder; the script imports
    no project file outside that folder (which DVC would not watch)."""
    import importlib.util

    for name, stage in stages():
        script = f"stages/{name}.py"
        assert script in stage["cmd"] and script in stage["deps"], name
        assert [d for d in stage["deps"] if d.startswith("src/")] == ["src/unfreeze"], name
        modules = imported_modules(ROOT / script)
        assert any(m.startswith("unfreeze.") for m in modules), name
        for module in modules:
            origin = importlib.util.find_spec(module).origin
            if origin in (None, "built-in", "frozen"):
                continue
            origin = Path(origin).resolve()
            inside_project = origin.is_relative_to(ROOT) and ".venv" not in origin.parts
            assert not inside_project or origin.is_relative_to(ROOT / "src/unfreeze"), (
                name, module)


def test_the_always_changed_source_stage_is_alone_in_its_dvc_yaml_with_root_paths():
    """`source` runs on every `dvc repro`; DVC then rewrites its dvc.yaml's lock file, so it
    has a small one of its own. Its paths and params.yaml are the project root's."""
    assert list(DATA) == ["source"] and "source" not in PIPELINE
    assert DATA["source"]["wdir"] == ".." and DATA["source"]["always_changed"] is True
    assert not any(s.get("always_changed") for s in PIPELINE.values())
    assert "data/source.json" in PIPELINE["prepare"]["deps"]


def test_bytecode_caches_are_not_part_of_the_library_dependency():
    ignored = (ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


def test_params_sections_named_by_stages_exist():
    params = Params()
    for name, stage in stages():
        for key in stage.get("params", []):
            section, _, field = key.partition(".")
            assert hasattr(params, section), (name, key)
            assert not field or hasattr(getattr(params, section), field), (name, key)


def test_training_stages_do_not_depend_on_test_only_outputs():
    for name in ("head", "finetune"):
        assert not any("evaluate" in d for d in SPEC[name]["deps"])


def test_fold_stages_cover_every_allowed_fold_count():
    from unfreeze.config.params import MAX_FOLDS

    assert SPEC["cv"]["foreach"] == list(range(MAX_FOLDS))
    report = SPEC["cv_report"]
    fold_dirs = [f"reports/cv/fold_{k}" for k in range(MAX_FOLDS)]
    assert all(d in report["deps"] for d in fold_dirs)
    assert " ".join(fold_dirs) in report["cmd"]


def test_dvc_parses_yaml_with_the_c_parser():
    """ruamel.yaml.clib is installed, so DVC's no-op `dvc repro` parses dvc.lock in C
    (benchmarks/noop_repro.py measures the difference)."""
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__module__.endswith("_ruamel_yaml")  # CParser
