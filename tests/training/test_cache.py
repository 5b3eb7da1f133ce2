"""The decoded-image cache: exact pixels, never stale (decoder version), bounded (LRU)."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unfreeze.config.errors import ParamsError
from unfreeze.training import cache as cache_lib
from unfreeze.training import inputs
from unfreeze.training.cache import DecodedCache


def test_decoded_cache_holds_exactly_the_freshly_decoded_images(tmp_path):
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    Image.fromarray(rng.integers(0, 255, (25, 25), dtype=np.uint8)).save(tmp_path / "g.png")
    paths = [str(tmp_path / n) for n in ("c.png", "g.png", "c.png")]  # a repeat shares a file
    keys = ["aa11", "bb22", "aa11"]
    cache = DecodedCache(tmp_path / "cache")
    fresh = inputs.load_images(paths, 16)
    files = cache.fill(paths, keys, 16, inputs.decode_all)
    assert files[0] == files[2] and Path(files[0]).parent.parent.name == "16px"
    assert Path(files[0]).stat().st_size == 16 * 16 * 3  # colour
    assert Path(files[1]).stat().st_size == 16 * 16  # gray: one channel stored
    cached = np.concatenate(list(inputs.make_dataset(paths, None, 16, 2, keys=keys,
                                                     cache=cache).as_numpy_iterator()))
    np.testing.assert_array_equal(cached, fresh)
    assert np.array_equal(fresh, np.round(fresh))  # both are whole uint8 levels

    Path(files[1]).write_bytes(b"truncated")  # a damaged entry is decoded again
    cache.fill(paths, keys, 16, inputs.decode_all)
    assert Path(files[1]).stat().st_size == 16 * 16
    np.testing.assert_array_equal(np.concatenate(list(inputs.make_dataset(
        paths, None, 16, 3, keys=keys, cache=cache).as_numpy_iterator())), fresh)
    assert cache.fill(paths, keys, 8, inputs.decode_all)[0] != files[0]  # another size


def test_stages_use_the_default_cache_and_an_empty_setting_turns_it_off(monkeypatch, tmp_path):
    monkeypatch.delenv(cache_lib.CACHE_ENV, raising=False)
    monkeypatch.delenv(cache_lib.MAX_ENV, raising=False)
    default = cache_lib.default_cache()
    assert default.root == Path(".unfreeze/cache") and default.max_bytes == 4 << 30
    monkeypatch.setenv(cache_lib.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(cache_lib.MAX_ENV, "500M")
    assert cache_lib.default_cache().root == tmp_path
    assert cache_lib.default_cache().max_bytes == 500 << 20
    monkeypatch.setenv(cache_lib.CACHE_ENV, "")
    assert cache_lib.default_cache() is None
    monkeypatch.setenv(cache_lib.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(cache_lib.MAX_ENV, "lots")
    with pytest.raises(ParamsError, match="UNFREEZE_CACHE_MAX='lots'"):
        cache_lib.default_cache()


def images(folder: Path, n: int, size: int = 20) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(n)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths, [f"{i:02x}{'ab' * 4}" for i in range(n)]  # content hashes are hex


def test_a_new_decoder_version_decodes_afresh_and_never_reads_old_pixels(
        tmp_path, monkeypatch, capsys):
    paths, keys = images(tmp_path, 3)
    cache = DecodedCache(tmp_path / "cache")
    first = cache.fill(paths, keys, 8, inputs.decode_all)
    assert "3 new of 3" in capsys.readouterr().out
    cache.fill(paths, keys, 8, inputs.decode_all)
    assert "new" not in capsys.readouterr().out  # all from the cache
    monkeypatch.setattr(cache_lib, "decoder", lambda: "v2-changed-resize-tf9")
    second = cache.fill(paths, keys, 8, inputs.decode_all)
    assert "3 new of 3" in capsys.readouterr().out  # decoded again by the "new code"
    assert not set(first) & set(second) and all(Path(f).is_file() for f in first)
    assert cache.prune(drop_stale=True) == (3, 3 * 8 * 8 * 3)  # the old decoder's files
    assert not any(Path(f).exists() for f in first)


def test_the_decoder_name_carries_the_code_version_and_the_tensorflow_release():
    import tensorflow as tf

    assert cache_lib.decoder() == (f"v{cache_lib.DECODE_VERSION}-{cache_lib.DECODE_SETTINGS}"
                                   f"-tf{tf.__version__}")


def test_only_cache_entries_are_ever_removed(tmp_path):
    paths, keys = images(tmp_path, 2)
    root = tmp_path / "shared"
    cache = DecodedCache(root, max_bytes=1)
    other = root / "notes.txt"
    other.parent.mkdir(parents=True)
    other.write_text("not a cache entry")
    tmp_write = root / cache_lib.decoder() / "8px/00/.00abab.tmp.u8"  # another's write
    tmp_write.parent.mkdir(parents=True)
    tmp_write.write_bytes(b"half")
    cache.fill(paths, keys, 8, inputs.decode_all)
    assert cache.prune(recent=0) == (2, 2 * 8 * 8 * 3)
    assert cache.clear() == 0 and other.read_text() and tmp_write.exists()


def test_the_least_recently_used_entries_go_first_and_the_running_set_stays(tmp_path):
    paths, keys = images(tmp_path, 6)
    entry = 8 * 8 * 3
    cache = DecodedCache(tmp_path / "cache", max_bytes=4 * entry)
    old = cache.fill(paths[:3], keys[:3], 8, inputs.decode_all)
    for hours, file in ((49, old[0]), (48, old[1]), (2, old[2])):
        past = time.time() - hours * 3600
        os.utime(file, (past, past))
    new = cache.fill(paths[3:], keys[3:], 8, inputs.decode_all)  # 6 entries > limit of 4
    left = {e.path for e in cache.entries()}
    assert left == {Path(f) for f in [old[2], *new]}  # the two idle for two days went
    # an entry used two hours ago may be read by another stage: the automatic prune keeps it
    assert cache.prune(max_bytes=3 * entry, recent=cache_lib.RECENT) == (0, 0)
    assert cache.summary()["bytes"] == 4 * entry
    assert cache.prune(max_bytes=3 * entry, keep={Path(f) for f in new}) == (1, entry)
    cache.fill(paths, keys, 8, inputs.decode_all)  # all six needed now: none goes
    assert len(cache.entries()) == 6


def test_stored_activations_share_the_limit_and_a_killed_writers_file_goes_after_a_day(
        tmp_path):
    paths, keys = images(tmp_path, 2)
    cache = DecodedCache(tmp_path / "cache", max_bytes=0)
    cache.fill(paths, keys, 8, inputs.decode_all)
    folder = cache.root / cache_lib.ACTIVATIONS / "ab"
    folder.mkdir(parents=True)
    view = folder / f"{'ab' * 32}.npy"
    np.save(view, np.zeros((100,), np.float32))
    half = folder / f".{'cd' * 32}.x1y2.tmp.npy"  # a pass killed while writing
    half.write_bytes(b"half")
    day_ago = time.time() - cache_lib.RECENT - 60
    for file in (view, half):
        os.utime(file, (day_ago, day_ago))
    assert view in {e.path for e in cache.entries()} and cache.is_current(view)
    assert cache.summary()["groups"]["activations"]["files"] == 1
    unlimited = DecodedCache(cache.root, max_bytes=0)
    assert unlimited.prune() == (0, 0) and not half.exists()  # a day old: gone, limit or not
    assert cache.prune(drop_stale=True) == (0, 0)  # activations are never stale by folder
    writing = folder / f".{'ef' * 32}.z9.tmp.npy"  # another stage's write in progress
    writing.write_bytes(b"writing")
    assert cache.prune(max_bytes=1, recent=0) == (3, 400 + 128 + 2 * 8 * 8 * 3)
    assert writing.exists() and not view.exists()  # over the limit: the view goes, LRU


@pytest.mark.parametrize(("text", "size"), [("4G", 4 << 30), ("500M", 500 << 20),
                                             ("1.5g", 3 << 29), ("0", 0), ("2048", 2048)])
def test_sizes_are_read_in_binary_units(text, size):
    assert cache_lib.parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1G", "0.5", "4X"])
def test_a_size_that_is_not_one_is_refused_by_name(text):
    with pytest.raises(ParamsError, match=f"UNFREEZE_CACHE_MAX={text!r}"):
        cache_lib.parse_size(text)
