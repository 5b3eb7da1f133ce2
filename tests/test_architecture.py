"""The layer map is executable: import-linter's contracts (pyproject.toml) hold for the tree,
and they do fail when a lower layer imports a higher one or TensorFlow."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("config", "dataset", "training", "evaluation", "deploy", "ops", "cli")


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    """`lint-imports` run on ``project`` (its pyproject.toml and src/), without a cache."""
    import os

    env = dict(os.environ, PYTHONPATH=str(project / "src"))
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


def test_every_subpackage_says_its_job_module_by_module():
    """Each package's docstring names every module in it (``name``), so it stays the map."""
    import ast

    for name in PACKAGES:
        folder = ROOT / "src/unfreeze" / name
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        modules = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
        assert modules, name
        missing = [m for m in modules if f"``{m}``" not in doc]
        assert not missing, (name, missing)


def test_the_import_contracts_hold():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_a_back_edge_or_tensorflow_in_the_data_layer_breaks_them(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "src", tmp_path / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    with (tmp_path / "src/unfreeze/dataset/folds.py").open("a") as fh:
        fh.write("\n\ndef _leak():\n    import tensorflow  # noqa\n"
                 "    from unfreeze.evaluation import metrics  # noqa\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "Layers: each package imports only from the layers below it BROKEN" in proc.stdout
    assert "never import TensorFlow" in proc.stdout and "2 broken" in proc.stdout
