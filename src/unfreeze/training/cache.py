"""The decoded-image cache: each image decoded and resized once, then read by every epoch,
stage and fold, never stale, and bounded in size.

Layout: ``<root>/<decoder>/<size>px/<sha[:2]>/<sha>.u8`` holds ``size*size`` bytes for a
gray image (all channels equal) or ``size*size*3`` for a colour one. ``<sha>`` is the image
file's content hash and ``<decoder>`` (:data:`DECODER`) names the version of the decode and
resize code and its settings: a change of either goes to a new folder, so pixels decoded by
older code are never read (they are pruned first). Every file is written atomically, so
concurrent writers (CV folds) are safe.

The size limit is not a pipeline param (changing it must retrain nothing): it comes from
``UNFREEZE_CACHE_MAX`` (e.g. ``4G``, ``500M``, ``0`` = no limit; default 4G). After each use
the least recently used entries are removed until the cache fits: older decoders' first,
never those the running stage needs, and never one used in the last :data:`RECENT` seconds
(another stage, a CV fold say, may be reading it). `unfreeze cache --prune` prunes now. No
TensorFlow here: the decoding function is handed in by :mod:`unfreeze.training.inputs`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unfreeze.config.errors import ParamsError
from unfreeze.io import write_atomic

# Bump DECODE_VERSION whenever inputs.decode_resize (or what it is given) changes.
DECODE_VERSION = 1
DECODE_SETTINGS = "rgb-bilinear-antialias-round-uint8"
DECODER = f"v{DECODE_VERSION}-{DECODE_SETTINGS}"
CACHE_ENV = "UNFREEZE_CACHE_DIR"
MAX_ENV = "UNFREEZE_CACHE_MAX"
DEFAULT_CACHE_DIR = ".unfreeze/cache"
DEFAULT_MAX = "4G"
RECENT = 24 * 3600  # automatic pruning spares entries used this recently (concurrent stages)
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

Decoder = Callable[[list[str], int], Iterable[np.ndarray]]


@dataclass(frozen=True)
class Entry:
    """One cached file: its path, bytes and last use (mtime, touched on every use)."""

    path: Path
    size: int
    used: float


def parse_size(text: str) -> int:
    """Bytes in ``4G``, ``500M``, ``1.5G``, ``123`` (binary units); ``0`` means no limit."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ParamsError(f"{MAX_ENV}={text!r}: expected a size such as 4G, 500M or 0 (no "
                          "limit)")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


class DecodedCache:
    """Decoded images on disk, keyed by content hash, image size and :data:`DECODER`."""

    def __init__(self, root: str | Path, max_bytes: int = 0) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes  # 0: no limit

    @property
    def current(self) -> Path:
        """The folder of this decoder version's entries."""
        return self.root / DECODER

    def file(self, key: str, image_size: int) -> Path:
        """Where the decoded image of content hash ``key`` at ``image_size`` lives."""
        return self.current / f"{image_size}px" / key[:2] / f"{key}.u8"

    def fill(self, paths: Sequence[str], keys: Sequence[str], image_size: int,
             decode: Decoder) -> list[str]:
        """Decode the images not cached yet; return the cache file of every row, in order.

        ``decode(paths, size)`` yields each image as a ``(size, size, 3)`` uint8 array. The
        files used are marked as used now, then the cache is pruned to its limit.
        """
        if len(keys) != len(paths):
            raise ValueError(f"{len(keys)} keys for {len(paths)} paths")
        files = [self.file(key, image_size) for key in keys]
        sizes = (image_size * image_size, image_size * image_size * 3)
        missing: dict[Path, str] = {}
        for path, file in zip(paths, files, strict=True):
            if file not in missing and not (file.is_file() and file.stat().st_size in sizes):
                missing[file] = path
        for file, image in zip(missing, decode(list(missing.values()), image_size),
                               strict=True):
            gray = bool((image == image[..., :1]).all())
            data = (image[..., :1] if gray else image).tobytes()
            write_atomic(file, lambda tmp, data=data: tmp.write_bytes(data))
        if missing:
            print(f"decoded cache: {len(missing)} new of {len(set(files))} images at "
                  f"{image_size}px in {self.current}", flush=True)
        now = time.time()
        for file in set(files):
            os.utime(file, (now, now))
        self.prune(keep=set(files), recent=RECENT)
        return [str(file) for file in files]

    def entries(self) -> list[Entry]:
        """Every cached file, of every decoder version and size."""
        out = []
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:  # pruned or replaced meanwhile
                    continue
                out.append(Entry(path, st.st_size, st.st_mtime))
        return out

    def prune(self, max_bytes: int | None = None, keep: set[Path] = frozenset(),
              drop_stale: bool = False, recent: float = 0.0) -> tuple[int, int]:
        """Remove least recently used entries until the cache holds at most ``max_bytes``
        (default: its limit; 0: no limit), other decoders' entries first; entries in ``keep``
        (the running stage's) and those used in the last ``recent`` seconds stay.
        ``drop_stale`` removes other decoders' entries in any case. Returns (files removed,
        bytes freed)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        entries = self.entries()
        total = sum(e.size for e in entries)
        stale = [e for e in entries if not e.path.is_relative_to(self.current)]
        idle_since = time.time() - recent
        fresh = sorted((e for e in entries if e.path.is_relative_to(self.current)
                        and e.path not in keep and e.used < idle_since), key=lambda e: e.used)
        removed = freed = 0
        for i, entry in enumerate([*stale, *fresh]):
            over = limit and total - freed > limit
            if not over and not (drop_stale and i < len(stale)):
                break
            entry.path.unlink(missing_ok=True)
            removed, freed = removed + 1, freed + entry.size
        if limit and total - freed > limit:
            print(f"decoded cache: {(total - freed) / 1e6:.0f} MB, all in use recently, is "
                  f"over {MAX_ENV}={limit / 1e6:.0f} MB; kept", file=sys.stderr)
        return removed, freed

    def summary(self) -> dict:
        """Files and bytes per decoder version and image size, and in all."""
        groups: dict[str, dict[str, int]] = {}
        for entry in self.entries():
            parts = entry.path.relative_to(self.root).parts
            name = "/".join(parts[:2]) if len(parts) > 3 else parts[0]  # 0.1: <size>px/..
            group = groups.setdefault(name, {"files": 0, "bytes": 0})
            group["files"] += 1
            group["bytes"] += entry.size
        return {"root": str(self.root), "decoder": DECODER, "max_bytes": self.max_bytes,
                "bytes": sum(g["bytes"] for g in groups.values()),
                "files": sum(g["files"] for g in groups.values()), "groups": groups}

    def clear(self) -> None:
        """Remove every entry."""
        shutil.rmtree(self.root, ignore_errors=True)


def default_cache() -> DecodedCache | None:
    """The cache under ``$UNFREEZE_CACHE_DIR`` (default ``.unfreeze/cache``; "" turns it
    off), limited to ``$UNFREEZE_CACHE_MAX`` (default 4G)."""
    root = os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR)
    if not root:
        return None
    return DecodedCache(root, parse_size(os.environ.get(MAX_ENV, DEFAULT_MAX)))
