import json

import pyarrow.parquet as pq
import pytest

from unfreeze.config.errors import ReleaseError
from unfreeze.ops import promote

# the metric stored with each model, compared point to point: what a promotion without a
# champion to score can do (the retrain flow scores it: test_champion*, test_retrain_e2e)
STORED = promote.Rule("roc_auc", 0.0, "point")
MARGIN = promote.Rule("roc_auc", 0.01, "point")


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
    d1 = promote.promote(first, first / "metrics.json", prod, STORED)
    assert d1.decision == "promoted" and (prod / "current/model.keras").read_bytes() == b"one"
    release1 = (prod / "current").resolve()

    worse = model_dir(tmp_path, "m2", b"two", roc_auc=0.70)
    d2 = promote.promote(worse, worse / "metrics.json", prod, STORED)
    assert d2.decision == "rejected" and "-0.1000 <= 0.0" in d2.reason
    assert (prod / "current").resolve() == release1
    assert (prod / "current/model.keras").read_bytes() == b"one"

    slightly = model_dir(tmp_path, "m3", b"three", roc_auc=0.805)
    d3 = promote.promote(slightly, slightly / "metrics.json", prod, MARGIN)
    assert d3.decision == "rejected"  # not by more than min_improvement

    better = model_dir(tmp_path, "m4", b"four", roc_auc=0.90)
    d4 = promote.promote(better, better / "metrics.json", prod, MARGIN)
    assert d4.decision == "promoted" and (prod / "current/model.keras").read_bytes() == b"four"
    published = json.loads((prod / "current/metrics.json").read_text())
    assert published["roc_auc"] == 0.90 and published["model_sha256"] == d4.model_sha256

    again = promote.promote(better, better / "metrics.json", prod, STORED)
    assert again.decision == "unchanged"

    rows = pq.read_table(prod / "history.parquet").to_pylist()
    assert [r["decision"] for r in rows] == ["promoted", "rejected", "rejected", "promoted",
                                             "unchanged"]
    assert rows[1]["new_value"] == 0.70 and rows[1]["current_value"] == 0.80
    assert sorted(p.name.startswith(".") for p in (prod / "releases").iterdir()) == [False, False]


def test_a_model_without_the_metric_is_rejected(tmp_path):
    m = model_dir(tmp_path, "m", b"x", accuracy=0.9)
    d = promote.promote(m, m / "metrics.json", tmp_path / "prod", STORED)
    assert d.decision == "rejected" and not (tmp_path / "prod/current").exists()


def test_a_release_is_the_whole_bundle(tmp_path):
    bundle = model_dir(tmp_path, "export", b"model", roc_auc=0.8)
    (bundle / "labels.txt").write_text("a\nb\n")
    (bundle / "saved_model/variables").mkdir(parents=True)
    (bundle / "saved_model/saved_model.pb").write_bytes(b"pb")
    (bundle / "model.tflite").write_bytes(b"tflite")
    (bundle / ".model.x1.tmp.keras").write_bytes(b"a killed write's leftover")
    prod = tmp_path / "production"
    promote.promote(bundle, bundle / "metrics.json", prod, STORED)
    release = (prod / "current").resolve()
    released = {p.relative_to(release).as_posix() for p in release.rglob("*")}
    assert json.loads((release / "metrics.json").read_text())["model_sha256"]
    assert released == {"model.keras", "meta.json", "metrics.json", "labels.txt",
                        "model.tflite", "saved_model", "saved_model/variables",
                        "saved_model/saved_model.pb"}


def test_release_use_switches_current_back_and_records_it(tmp_path):
    prod = tmp_path / "production"
    first = model_dir(tmp_path, "m1", b"one", roc_auc=0.80)
    promote.promote(first, first / "metrics.json", prod, STORED)
    second = model_dir(tmp_path, "m2", b"two", roc_auc=0.90)
    promote.promote(second, second / "metrics.json", prod, STORED)
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
    held = promote.promote(third, third / "metrics.json", prod, STORED)
    assert held.decision == "pinned" and "release unpin" in held.reason
    assert (prod / "current/model.keras").read_bytes() == b"one"
    assert promote.unpin(prod, "roc_auc").decision == "unpinned"
    assert promote.promote(third, third / "metrics.json", prod, STORED).decision == \
        "promoted"
    assert (prod / "current/model.keras").read_bytes() == b"three"


def constructed(fixed_by_new: int, broken_by_new: int, n: int = 400, seed: int = 0):
    """Labels and both models' (probabilities, decisions): the current model errs on 80
    images; the new one fixes ``fixed_by_new`` of them and breaks ``broken_by_new`` others."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    order = rng.permutation(n)
    old = y.copy()
    old[order[:80]] = 1 - y[order[:80]]
    new = old.copy()
    new[order[:fixed_by_new]] = y[order[:fixed_by_new]]
    broken = order[80:80 + broken_by_new]
    new[broken] = 1 - y[broken]
    probs = lambda pred: np.eye(2)[pred] * 0.8 + 0.1  # noqa: E731
    return y, (probs(new), new), (probs(old), old)


def comparison(fixed: int, broken: int) -> dict:
    from unfreeze.evaluation.compare import paired_comparison

    y, new, old = constructed(fixed, broken)
    return {"comparable": True} | paired_comparison("accuracy", y, new, old, 1, 2000, 0)


def test_point_promotes_a_noise_level_gain_that_the_paired_interval_refuses():
    noisy = comparison(fixed=6, broken=4)  # +2 images of 400: +0.005, within noise
    assert noisy["difference"] == pytest.approx(0.005)
    assert noisy["ci95"]["low"] < 0 < noisy["ci95"]["high"]
    point = promote.Rule("accuracy", 0.0, "point")
    ci = promote.Rule("accuracy", 0.0, "ci")
    assert promote.decide_promotion(point, 0.805, noisy, False)[0] == "promoted"
    decision, reason = promote.decide_promotion(ci, 0.805, noisy, False)
    assert decision == "rejected" and "lower bound <= 0.0" in reason and "400 images" in reason

    clear = comparison(fixed=30, broken=2)  # +28 images: the interval clears zero
    assert clear["ci95"]["low"] > 0
    assert promote.decide_promotion(ci, 0.87, clear, False)[0] == "promoted"
    margin = promote.Rule("accuracy", clear["ci95"]["low"] + 0.001, "ci")
    assert promote.decide_promotion(margin, 0.87, clear, False)[0] == "rejected"


def test_the_same_images_promote_a_model_that_the_stored_numbers_would_reject(tmp_path):
    """The champion's stored 0.95 came from an easier, older test split; on the new images
    it scores less than the challenger, which the paired rule sees and the stored one not."""
    prod = tmp_path / "production"
    champion = model_dir(tmp_path, "m1", b"one", accuracy=0.95)
    stored = promote.Rule("accuracy", 0.0, "point")
    assert promote.promote(champion, champion / "metrics.json", prod, stored).decision == \
        "promoted"
    challenger = model_dir(tmp_path, "m2", b"two", accuracy=0.90)
    seen = []

    def on_new_images(current):
        seen.append(current)
        return comparison(fixed=30, broken=2) | {"test_fingerprint": "f" * 64}

    kept = promote.promote(challenger, challenger / "metrics.json", prod, stored)
    assert kept.decision == "rejected" and "not on the same images" in kept.reason
    ci = promote.Rule("accuracy", 0.0, "ci")
    won = promote.promote(challenger, challenger / "metrics.json", prod, ci, on_new_images)
    assert seen == [(prod / "releases").resolve() / kept.release]  # the champion was scored
    assert won.decision == "promoted" and (prod / "current/model.keras").read_bytes() == b"two"
    row = promote.read_history(prod)[-1]
    assert row["n"] == 400 and row["rule"] == "ci" and row["test_fingerprint"] == "f" * 64
    assert row["new_value"] - row["current_value"] == pytest.approx(0.07)
    assert 0 < row["ci95_low"] < 0.07 < row["ci95_high"] and row["mcnemar_p"] < 1e-4


@pytest.mark.parametrize("on_incomparable", ["keep", "promote"])
def test_a_champion_with_other_classes_is_incomparable(tmp_path, on_incomparable):
    prod = tmp_path / "production"
    old = model_dir(tmp_path, "m1", b"one", roc_auc=0.8)
    promote.promote(old, old / "metrics.json", prod, STORED)
    new = model_dir(tmp_path, "m2", b"two", roc_auc=0.7)
    rule = promote.Rule("roc_auc", 0.0, "ci", on_incomparable)
    other = {"comparable": False, "reason": "its classes ['a', 'b'] are not the new "
             "model's ['a', 'b', 'c']", "test_fingerprint": "f" * 64}
    d = promote.promote(new, new / "metrics.json", prod, rule, lambda current: other)
    assert ("classes ['a', 'b']" in d.reason) and d.test_fingerprint == "f" * 64
    if on_incomparable == "keep":
        assert d.decision == "incomparable" and "on_incomparable: promote" in d.reason
        assert (prod / "current/model.keras").read_bytes() == b"one"
    else:
        assert d.decision == "promoted" and (prod / "current/model.keras").read_bytes() == b"two"


def test_a_history_written_before_the_new_columns_is_extended(tmp_path):
    import pyarrow as pa

    prod = tmp_path / "production"
    prod.mkdir()
    old_columns = [f for f in promote.HISTORY_SCHEMA if f.name not in (
        "rule", "n", "ci95_low", "ci95_high", "mcnemar_p", "test_fingerprint")]
    pq.write_table(pa.Table.from_pylist([{
        "decision": "promoted", "metric": "roc_auc", "new_value": 0.8, "current_value": None,
        "min_improvement": 0.0, "model_sha256": "ab", "release": "r1", "reason": "first",
        "time": "2026-01-01T00:00:00+00:00"}], schema=pa.schema(old_columns)),
        prod / "history.parquet")
    m = model_dir(tmp_path, "m", b"x", roc_auc=0.9)
    promote.promote(m, m / "metrics.json", prod, STORED)
    rows = promote.read_history(prod)
    assert [r["decision"] for r in rows] == ["promoted", "promoted"]
    assert rows[0]["n"] is None and rows[1]["rule"] == "point"


def test_a_release_keeps_what_it_trained_on_and_a_failed_scoring_is_incomparable(tmp_path):
    from unfreeze.config.errors import DataError

    prod = tmp_path / "production"
    first = model_dir(tmp_path, "m1", b"one", roc_auc=0.8)
    promote.promote(first, first / "metrics.json", prod, STORED, trained_on=["b", "a", "a"])
    assert pq.read_table(prod / "current" / promote.TRAINED_ON)["sha256"].to_pylist() == [
        "a", "b"]

    def broken(current):
        raise DataError("the new model's predictions lack 3 test image(s)")

    second = model_dir(tmp_path, "m2", b"two", roc_auc=0.9)
    d = promote.promote(second, second / "metrics.json", prod,
                        promote.Rule("roc_auc", 0.0, "ci"), broken)
    assert d.decision == "incomparable" and "lack 3 test image(s)" in d.reason
    assert (prod / "current/model.keras").read_bytes() == b"one"


def exported(tmp_path, name: str, content: bytes, **metrics):
    """A bundle with a (fake) SavedModel, as `export` writes one."""
    d = model_dir(tmp_path, name, content, **metrics)
    (d / "saved_model/variables").mkdir(parents=True)
    (d / "saved_model/saved_model.pb").write_bytes(b"pb " + content)
    return d


def served(prod) -> dict:
    """Each version folder of the serving layout: the model.keras of the release it serves."""
    folder = prod / "serving/unfreeze"
    return {int(p.name): (p / "../model.keras").resolve().read_bytes()
            for p in folder.iterdir() if p.name.isdigit()}


def test_every_change_of_current_adds_a_higher_serving_version(tmp_path):
    prod = tmp_path / "production"
    for i, (content, value) in enumerate([(b"one", 0.8), (b"two", 0.9)]):
        m = exported(tmp_path, f"m{i}", content, roc_auc=value)
        assert promote.promote(m, m / "metrics.json", prod, STORED).decision == "promoted"
    first, second = [r["name"] for r in promote.list_releases(prod)]
    folder = prod / "serving/unfreeze"
    assert (folder / "2").resolve() == (prod / "releases" / second / "saved_model").resolve()
    assert (folder / "2/saved_model.pb").read_bytes() == b"pb two"
    assert served(prod) == {1: b"one", 2: b"two"}

    promote.use_release(prod, first, "roc_auc")  # a rollback: TF Serving serves the highest
    assert (folder / "3").resolve() == (prod / "releases" / first / "saved_model").resolve()
    assert served(prod) == {1: b"one", 2: b"two", 3: b"one"}
    assert json.loads((folder / "versions.json").read_text()) == {
        "1": first, "2": second, "3": first}
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp links left


def test_a_release_without_a_saved_model_leaves_the_serving_layout_alone(tmp_path):
    prod = tmp_path / "production"
    plain = model_dir(tmp_path, "m1", b"one", roc_auc=0.8)
    assert promote.promote(plain, plain / "metrics.json", prod, STORED).decision == "promoted"
    assert not (prod / "serving").exists()

    with_export = exported(tmp_path, "m2", b"two", roc_auc=0.9)
    promote.promote(with_export, with_export / "metrics.json", prod, STORED)
    before = json.loads((prod / "serving/unfreeze/versions.json").read_text())
    plain2 = model_dir(tmp_path, "m3", b"three", roc_auc=0.95)
    d = promote.promote(plain2, plain2 / "metrics.json", prod, STORED)
    assert d.decision == "promoted" and (prod / "current/model.keras").read_bytes() == b"three"
    assert served(prod) == {1: b"two"}
    assert json.loads((prod / "serving/unfreeze/versions.json").read_text()) == before


def test_only_the_last_versions_are_kept_and_no_release_is_removed(tmp_path):
    from unfreeze.ops import serving_layout

    prod = tmp_path / "production"
    m = exported(tmp_path, "m", b"one", roc_auc=0.8)
    promote.promote(m, m / "metrics.json", prod, STORED)
    name = promote.list_releases(prod)[0]["name"]
    for _ in range(3):
        promote.use_release(prod, name, "roc_auc")
    assert sorted(served(prod)) == [1, 2, 3, 4]
    assert serving_layout.add_version(prod, name, keep=2) == 5
    assert sorted(served(prod)) == [4, 5]
    assert sorted(json.loads((prod / "serving/unfreeze/versions.json").read_text())) == [
        "4", "5"]
    assert (prod / "releases" / name / "saved_model/saved_model.pb").is_file()
    for _ in range(serving_layout.KEEP + 2):
        promote.use_release(prod, name, "roc_auc")
    assert sorted(served(prod)) == list(range(1, 13))[-serving_layout.KEEP:]


def test_the_version_links_are_relative_and_survive_moving_production(tmp_path):
    import os
    import shutil

    prod = tmp_path / "production"
    m = exported(tmp_path, "m", b"one", roc_auc=0.8)
    promote.promote(m, m / "metrics.json", prod, STORED)
    name = promote.list_releases(prod)[0]["name"]
    target = os.readlink(prod / "serving/unfreeze/1")
    assert not target.startswith("/") and target == f"../../releases/{name}/saved_model"
    moved = tmp_path / "elsewhere" / "prod"
    moved.parent.mkdir()
    shutil.move(prod, moved)
    assert (moved / "serving/unfreeze/1/saved_model.pb").read_bytes() == b"pb one"
    assert served(moved) == {1: b"one"}
