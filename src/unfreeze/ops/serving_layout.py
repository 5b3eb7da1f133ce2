"""TensorFlow Serving's versioned layout of the promoted model.

TF Serving serves ``<base>/<model>/<integer version>/saved_model.pb`` and, by default, the
highest version, polling the folder. Each time ``production/current`` changes,
:func:`add_version` links a new version, one higher than any there, to the release's
``saved_model/``::

    production/serving/unfreeze/<N>            relative symlink to
                                               ../../releases/<name>/saved_model
    production/serving/unfreeze/versions.json  version -> release name

So the highest version is always the current release (a rollback adds a higher version that
points at the older release). The links are relative, so a bind mount of the whole
production folder (or a moved one) still resolves them. Only the last :data:`KEEP` version
links are kept; release folders are never removed here.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from unfreeze.io import write_json

MODEL_NAME = "unfreeze"
KEEP = 5
VERSIONS_FILE = "versions.json"


def serving_folder(production: Path) -> Path:
    """``production/serving/unfreeze``: the model folder TF Serving polls."""
    return production / "serving" / MODEL_NAME


def versions(folder: Path) -> list[int]:
    """The integer versions in ``folder`` (links or folders named by a number), ascending."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def add_version(production: Path, name: str, keep: int = KEEP) -> int | None:
    """Link a new highest version to ``releases/<name>/saved_model`` (atomically), keep the
    last ``keep`` links and rewrite ``versions.json``; return the version. None, and nothing
    changed, where the release has no ``saved_model/saved_model.pb`` (no export)."""
    if not (production / "releases" / name / "saved_model" / "saved_model.pb").is_file():
        return None
    folder = serving_folder(production)
    folder.mkdir(parents=True, exist_ok=True)
    version = max(versions(folder), default=0) + 1
    tmp_link = folder / f".{version}.tmp-{uuid.uuid4().hex[:6]}"
    os.symlink(Path("..", "..", "releases", name, "saved_model"), tmp_link)
    os.replace(tmp_link, folder / str(version))
    prune(folder, keep)
    write_json(folder / VERSIONS_FILE, version_releases(folder))
    return version


def prune(folder: Path, keep: int = KEEP) -> list[int]:
    """Remove the version links older than the last ``keep`` (links only: a real folder
    stays); return the versions removed."""
    old = [v for v in versions(folder)[:-max(keep, 1)] if (folder / str(v)).is_symlink()]
    for v in old:
        (folder / str(v)).unlink()
    return old


def version_releases(folder: Path) -> dict[str, str]:
    """Each version link's release name (``"3": "<release>"``)."""
    return {str(v): Path(os.readlink(folder / str(v))).parent.name
            for v in versions(folder) if (folder / str(v)).is_symlink()}
