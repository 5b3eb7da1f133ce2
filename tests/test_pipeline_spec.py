"""Static checks of dvc.yaml: scripts, library and params each stage depends on."""

import ast
from pathlib import Path

import yaml

from unfreeze.params import Params

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def unfreeze_imports(path: Path) -> set[str]:
    """Modules of the `unfreeze` package imported anywhere in a file (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unfreeze"):
            if node.module == "unfreeze":
                found |= {f"unfreeze.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("unfreeze.")}
    return found


def closure(path: Path) -> set[str]:
    seen: set[str] = set()
    todo = list(unfreeze_imports(path))
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo += unfreeze_imports(ROOT / "src" / (mod.replace(".", "/") + ".py"))
    return {f"src/{m.replace('.', '/')}.py" for m in seen}


def stages():
    """(name, definition) of every stage; a foreach stage gives its `do` template."""
    for name, stage in SPEC.items():
        yield name, stage.get("do", stage)


def test_every_stage_depends_on_its_script_and_the_whole_library():
    """One folder dependency, src/unfreeze, covers every module a stage imports (and the
    modules those import), so no code change can go unnoticed."""
    for name, stage in stages():
        script = f"stages/{name}.py"
        assert script in stage["cmd"] and script in stage["deps"], name
        assert [d for d in stage["deps"] if d.startswith("src/")] == ["src/unfreeze"], name
        modules = closure(ROOT / script)
        assert modules and all((ROOT / m).is_file() for m in modules), name


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
    from unfreeze.params import MAX_FOLDS

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
