"""The decoded-image cache: each image decoded and resized once, then read by every epoch,
stage and fold, never stale, and bounded in size.

Layout: ``<root>/<decoder>/<size>px/<sha[:2]>/<sha>.u8`` holds ``size*size`` bytes for a
gray image (all channels equal) or ``size*size*3`` for a colour one. ``<sha>`` is the image
file's content hash and ``<decoder>`` (:func:`decoder`) names the version of the decode and
resize code, its settings and the TensorFlow release that decodes: a change of any goes to a
new folder, so pixels decoded otherwise are never read (they are pruned first). Every file is
written atomically, so concurrent writers (CV folds) are safe.

The size limit is not a pipeline param (changing it must retrain nothing): it comes from
``UNFREEZE_CACHE_MAX`` (e.g. ``4G``, ``500M``, ``0`` = no limit; default 4G). Whenever a
stage adds entries, the least recently used ones are removed until the cache fits: other
decoders' first, never those the running stage needs, and never one used in the last
:data:`RECENT` seconds (another stage, a CV fold say, may be reading it). Touching and
pruning hold a lock on the cache, so a prune never removes an entry another process has just
marked as used. Only cache entries are ever removed: other files under the root are left
alone. `unfreeze cache --prune` prunes now. No TensorFlow here: the decoding function is
handed in by :mod:`unfreeze.training.inputs`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from unfreeze.config.errors import ParamsError
from unfreeze.io import write_atomic

# Bump DECODE_VERSION whenever inputs.decode_resize (or what it is given) changes.
DECODE_VERSION = 1
DECODE_SETTINGS = "rgb-bilinear-antialias-round-uint8"
CACHE_ENV = "UNFREEZE_CACHE_DIR"
MAX_ENV = "UNFREEZE_CACHE_MAX"
DEFAULT_CACHE_DIR = ".unfreeze/cache"
DEFAULT_MAX = "4G"
RECENT = 24 * 3600  # automatic pruning spares entries used this recently (concurrent stages)
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# What cache entries look like under the root: decoded images (0.1 had no decoder folder)
# and stored activations (unfreeze.training.activations, keyed by what decides them, so
# never stale by folder). Nothing else is ever removed, in-progress ``.name.tmp`` files
# included, except activation files a killed stage left half-written a day ago or more.
ENTRY = re.compile(r"^(?:(?:(?P<decoder>v\d+-[^/]+)/)?\d+px/[0-9a-f]{2}/[0-9a-f]+\.u8"
                   r"|activations/[0-9a-f]{2}/[0-9a-f]{64}\.npy)$")
ACTIVATIONS = "activations"  # the folder of stored activations under the root
ABANDONED = re.compile(r"^activations/[0-9a-f]{2}/\.[0-9a-f]{64}\.[^/]+\.tmp\.npy$")
LOCK_FILE = ".lock"

Decoder = Callable[[list[str], int], Iterable[np.ndarray]]


@cache
def decoder() -> str:
    """The current decoder's name: code version, settings and the TensorFlow release."""
    try:
        tf = version("tensorflow")
    except PackageNotFoundError:  # a CPU-only or nightly build under another name
        tf = "unknown"
    return f"v{DECODE_VERSION}-{DECODE_SETTINGS}-tf{tf}"


@dataclass(frozen=True)
class Entry:
    """One cached file: its path, bytes and last use (mtime, touched on every use)."""

    path: Path
    size: int
    used: float


def parse_size(text: str, name: str = MAX_ENV) -> int:
    """Bytes in ``4G``, ``500M``, ``1.5G``, ``123`` (binary units); ``0`` means no limit."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    size = int(float(match.group(1)) * UNITS[match.group(2).upper()]) if match else -1
    if size < 0 or (size == 0 and float(match.group(1)) != 0):
        raise ParamsError(f"{name}={text!r}: expected a size such as 4G, 500M or 0 (no limit)")
    return size


class DecodedCache:
    """Decoded images on disk, keyed by content hash, image size and :func:`decoder`."""

    def __init__(self, root: str | Path, max_bytes: int = 0) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes  # 0: no limit

    @property
    def current(self) -> Path:
        """The folder of this decoder's entries."""
        return self.root / decoder()

    def file(self, key: str, image_size: int) -> Path:
        """Where the decoded image of content hash ``key`` at ``image_size`` lives."""
        return self.current / f"{image_size}px" / key[:2] / f"{key}.u8"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock on the cache, held while entries are marked used or pruned."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def fill(self, paths: Sequence[str], keys: Sequence[str], image_size: int,
             decode: Decoder) -> list[str]:
        """Decode the images not cached yet; return the cache file of every row, in order.

        ``decode(paths, size)`` yields each image as a ``(size, size, 3)`` uint8 array. The
        cached files are marked used before anything is decoded (a concurrent prune then
        spares them); a fill that wrote new entries then prunes the cache to its limit (one
        that wrote nothing leaves its size as it was, and does not walk it).
        """
        if len(keys) != len(paths):
            raise ValueError(f"{len(keys)} keys for {len(paths)} paths")
        files = [self.file(key, image_size) for key in keys]
        wanted = dict(zip(files, paths, strict=True))
        sizes = (image_size * image_size, image_size * image_size * 3)
        with self.locked():
            present = {file for file in wanted if _touch(file, sizes)}
        missing = {file: path for file, path in wanted.items() if file not in present}
        if missing:
            for file, image in zip(missing, decode(list(missing.values()), image_size),
                                   strict=True):
                gray = bool((image == image[..., :1]).all())
                data = (image[..., :1] if gray else image).tobytes()
                write_atomic(file, lambda tmp, data=data: tmp.write_bytes(data))
            print(f"decoded cache: {len(missing)} new of {len(wanted)} images at "
                  f"{image_size}px in {self.current}", flush=True)
            self.prune(keep=set(wanted), recent=RECENT)  # only a fill that wrote can overflow
        return [str(file) for file in files]

    def entries(self) -> list[Entry]:
        """Every cache entry under the root, of every decoder and size (nothing else)."""
        out = []
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                path = Path(dirpath) / name
                if not ENTRY.match(path.relative_to(self.root).as_posix()):
                    continue
                with contextlib.suppress(FileNotFoundError):  # pruned or replaced meanwhile
                    st = path.stat()
                    out.append(Entry(path, st.st_size, st.st_mtime))
        return out

    def prune(self, max_bytes: int | None = None, keep: set[Path] = frozenset(),
              drop_stale: bool = False, recent: float = 0.0) -> tuple[int, int]:
        """Remove least recently used entries until the cache holds at most ``max_bytes``
        (default: its limit; 0: no limit), other decoders' entries first. Entries in ``keep``
        (the running stage's) and those used in the last ``recent`` seconds stay;
        ``drop_stale`` removes other decoders' idle entries even under the limit. Returns
        (files removed, bytes freed)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        if not limit and not drop_stale:
            with self.locked():
                for abandoned in self.abandoned(time.time() - RECENT):
                    abandoned.unlink(missing_ok=True)
            return 0, 0
        with self.locked():
            entries = self.entries()
            total = sum(e.size for e in entries)
            idle_since = time.time() - recent
            idle = sorted((e for e in entries if e.path not in keep and e.used < idle_since),
                          key=lambda e: (self.is_current(e.path), e.used))
            removed = freed = 0
            for entry in idle:
                stale = not self.is_current(entry.path)
                if not (limit and total - freed > limit) and not (drop_stale and stale):
                    break
                entry.path.unlink(missing_ok=True)
                removed, freed = removed + 1, freed + entry.size
            for abandoned in self.abandoned(time.time() - RECENT):
                abandoned.unlink(missing_ok=True)
        if limit and total - freed > limit:
            print(f"decoded cache: {(total - freed) / 1e6:.0f} MB, all in use recently, is "
                  f"over {MAX_ENV}={limit / 1e6:.0f} MB; kept", file=sys.stderr)
        return removed, freed

    def is_current(self, path: Path) -> bool:
        """Whether an entry is one the current code can use (other decoders' are stale)."""
        return (path.is_relative_to(self.current)
                or path.is_relative_to(self.root / ACTIVATIONS))

    def abandoned(self, before: float) -> list[Path]:
        """Half-written activation files (a killed stage's) last written before ``before``."""
        folder = self.root / ACTIVATIONS
        out = []
        for path in folder.glob("*/.*.tmp.npy") if folder.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                if (ABANDONED.match(path.relative_to(self.root).as_posix())
                        and path.stat().st_mtime < before):
                    out.append(path)
        return out

    def summary(self) -> dict:
        """Files and bytes per decoder and image size, and in all."""
        groups: dict[str, dict[str, int]] = {}
        for entry in self.entries():
            parts = entry.path.relative_to(self.root).parts
            name = "/".join(parts[:2]) if len(parts) > 3 else parts[0]  # 0.1: <size>px/..
            group = groups.setdefault(name, {"files": 0, "bytes": 0})
            group["files"] += 1
            group["bytes"] += entry.size
        return {"root": str(self.root), "decoder": decoder(), "max_bytes": self.max_bytes,
                "bytes": sum(g["bytes"] for g in groups.values()),
                "files": sum(g["files"] for g in groups.values()), "groups": groups}

    def clear(self) -> int:
        """Remove every cache entry (other files under the root stay); returns how many."""
        with self.locked():
            entries = self.entries()
            for entry in entries:
                entry.path.unlink(missing_ok=True)
        for folder in sorted((p for p in self.root.rglob("*") if p.is_dir()),
                             key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):  # only the emptied folders go
                folder.rmdir()
        return len(entries)


def _touch(file: Path, sizes: tuple[int, ...]) -> bool:
    """Mark ``file`` used now; False when it is missing or of the wrong size (decode it)."""
    try:
        if file.stat().st_size not in sizes:
            return False
        os.utime(file)  # "now": needs write access only, not ownership
    except FileNotFoundError:
        return False
    except PermissionError:  # a shared read-only cache: usable, its owner prunes it
        return True
    return True


def default_cache() -> DecodedCache | None:
    """The cache under ``$UNFREEZE_CACHE_DIR`` (default ``.unfreeze/cache``; "" turns it
    off), limited to ``$UNFREEZE_CACHE_MAX`` (default 4G)."""
    root = os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR)
    if not root:
        return None
    return DecodedCache(root, parse_size(os.environ.get(MAX_ENV, DEFAULT_MAX)))

