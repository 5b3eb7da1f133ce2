import json

import pyarrow.parquet as pq
import pytest

from unfreeze.config.errors import ReleaseError
from unfreeze.ops import promote


def model_dir(tmp_path, name: str, content: bytes, **metrics):
    d = tmp_path / name
    d.mkdir()
    (d / "model.keras").write_bytes(content)
    (d / "meta.json").write_text('{"classes": ["a", "b"]}')
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def test_first_promotes_worse_is_rejected_better_promoted_same_is_unchanged(tmp_path):
    prod = tmp_path / "production"
    first = model_dir(tmp_path, "m1", b"one", roc_auc=0.80)
    d1 = promote.promote(first, first / "metrics.json", prod, "roc_auc", 0.0)
    assert d1.decision == "promoted" and (prod / "current/model.keras").read_bytes() == b"one"
    release1 = (prod / "current").resolve()

    worse = model_dir(tmp_path, "m2", b"two", roc_auc=0.70)
    d2 = promote.promote(worse, worse / "metrics.json", prod, "roc_auc", 0.0)
    assert d2.decision == "rejected" and "does not beat" in d2.reason
    assert (prod / "current").resolve() == release1
    assert (prod / "current/model.keras").read_bytes() == b"one"

    slightly = model_dir(tmp_path, "m3", b"three", roc_auc=0.805)
    d3 = promote.promote(slightly, slightly / "metrics.json", prod, "roc_auc", 0.01)
    assert d3.decision == "rejected"  # not by more than min_improvement

    better = model_dir(tmp_path, "m4", b"four", roc_auc=0.90)
    d4 = promote.promote(better, better / "metrics.json", prod, "roc_auc", 0.01)
    assert d4.decision == "promoted" and (prod / "current/model.keras").read_bytes() == b"four"
    published = json.loads((prod / "current/metrics.json").read_text())
    assert published["roc_auc"] == 0.90 and published["model_sha256"] == d4.model_sha256

    again = promote.promote(better, better / "metrics.json", prod, "roc_auc", 0.0)
    assert again.decision == "unchanged"

    rows = pq.read_table(prod / "history.parquet").to_pylist()
    assert [r["decision"] for r in rows] == ["promoted", "rejected", "rejected", "promoted",
                                             "unchanged"]
    assert rows[1]["new_value"] == 0.70 and rows[1]["current_value"] == 0.80
    assert sorted(p.name.startswith(".") for p in (prod / "releases").iterdir()) == [False, False]


def test_a_model_without_the_metric_is_rejected(tmp_path):
    m = model_dir(tmp_path, "m", b"x", accuracy=0.9)
    d = promote.promote(m, m / "metrics.json", tmp_path / "prod", "roc_auc", 0.0)
    assert d.decision == "rejected" and not (tmp_path / "prod/current").exists()


def test_a_release_is_the_whole_bundle(tmp_path):
    bundle = model_dir(tmp_path, "export", b"model", roc_auc=0.8)
    (bundle / "labels.txt").write_text("a\nb\n")
    (bundle / "saved_model/variables").mkdir(parents=True)
    (bundle / "saved_model/saved_model.pb").write_bytes(b"pb")
    (bundle / "model.tflite").write_bytes(b"tflite")
    (bundle / ".model.x1.tmp.keras").write_bytes(b"a killed write's leftover")
    prod = tmp_path / "production"
    promote.promote(bundle, bundle / "metrics.json", prod, "roc_auc", 0.0)
    release = (prod / "current").resolve()
    released = {p.relative_to(release).as_posix() for p in release.rglob("*")}
    assert json.loads((release / "metrics.json").read_text())["model_sha256"]
    assert released == {"model.keras", "meta.json", "metrics.json", "labels.txt",
                        "model.tflite", "saved_model", "saved_model/variables",
                        "saved_model/saved_model.pb"}


def test_release_use_switches_current_back_and_records_it(tmp_path):
    prod = tmp_path / "production"
    first = model_dir(tmp_path, "m1", b"one", roc_auc=0.80)
    promote.promote(first, first / "metrics.json", prod, "roc_auc", 0.0)
    second = model_dir(tmp_path, "m2", b"two", roc_auc=0.90)
    promote.promote(second, second / "metrics.json", prod, "roc_auc", 0.0)
    releases = promote.list_releases(prod)
    assert [r["current"] for r in releases] == [False, True]
    back = promote.use_release(prod, releases[0]["name"], "roc_auc")
    assert (prod / "current/model.keras").read_bytes() == b"one"
    assert back.decision == "switched" and back.new_value == 0.80 and back.current_value == 0.90
    assert releases[1]["name"] in back.reason
    assert [r["decision"] for r in promote.read_history(prod)] == ["promoted", "promoted",
                                                                   "switched"]
    with pytest.raises(ReleaseError, match="releases: " + releases[0]["name"]):
        promote.use_release(prod, "20990101T000000Z-nothere", "roc_auc")

    # the rollback stays: a retrain of a better model is recorded as pinned, not promoted
    third = model_dir(tmp_path, "m3", b"three", roc_auc=0.95)
    held = promote.promote(third, third / "metrics.json", prod, "roc_auc", 0.0)
    assert held.decision == "pinned" and "release unpin" in held.reason
    assert (prod / "current/model.keras").read_bytes() == b"one"
    assert promote.unpin(prod, "roc_auc").decision == "unpinned"
    assert promote.promote(third, third / "metrics.json", prod, "roc_auc", 0.0).decision == \
        "promoted"
    assert (prod / "current/model.keras").read_bytes() == b"three"
