import numpy as np
import pytest

from unfreeze.config.errors import ParamsError
from unfreeze.evaluation import metrics as ev
from unfreeze.evaluation import plots


def test_perfect_binary_predictions():
    y = np.array([0, 0, 1, 1, 1])
    probs = np.array([[.9, .1], [.8, .2], [.1, .9], [.3, .7], [.4, .6]])
    m = ev.compute_metrics(y, probs, ["defective", "functional"])
    assert m["n_test"] == 5 and m["accuracy"] == m["balanced_accuracy"] == m["f1"] == 1.0
    assert m["roc_auc"] == 1.0 and m["average_precision"] == 1.0
    assert m["positive_class"] == "defective"  # the rarer class of the test split
    assert m["per_class"]["functional"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                            "support": 3}


def test_known_confusion_gives_known_numbers():
    y = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 0])
    probs = np.eye(2)[pred] * 0.8 + 0.1
    m = ev.compute_metrics(y, probs, ["a", "b"], positive="b")
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["per_class"]["a"]["precision"] == pytest.approx(3 / 4)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1 / 2)
    assert m["precision"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["positive_class"] == "b"
    with pytest.raises(ValueError, match=r"positive_class.*'z'"):
        ev.compute_metrics(y, probs, ["a", "b"], positive="z")


def test_multiclass_auc_is_one_vs_rest_macro():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    probs = rng.dirichlet([1, 1, 1], 60)
    m = ev.compute_metrics(y, probs, ["a", "b", "c"])
    from sklearn.metrics import roc_auc_score

    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert 0 <= m["average_precision"] <= 1 and "positive_class" not in m


def test_curves_and_prediction_table_line_up():
    y = np.array([0, 1, 1, 0])
    probs = np.array([[.7, .3], [.2, .8], [.6, .4], [.9, .1]])
    roc, pr = ev.curve_rows(y, probs, ["a", "b"], positive="b")
    assert roc[0] == {"class": "b", "fpr": 0.0, "tpr": 0.0} and roc[-1]["tpr"] == 1.0
    assert {r["class"] for r in pr} == {"b"}
    t = ev.predictions_table(["p0", "p1", "p2", "p3"], y, probs, ["a", "b"])
    assert t.column_names == ["path", "label", "predicted", "prob_a", "prob_b"]
    assert t["predicted"].to_pylist() == ["a", "b", "a", "a"]
    assert t["label"].to_pylist() == ["a", "b", "b", "a"]


def test_png_plots_are_written(tmp_path):
    y = np.array([0, 1, 2, 1])
    probs = np.eye(3)[[0, 1, 1, 1]] * 0.7 + 0.1
    roc, pr = ev.curve_rows(y, probs, ["a", "b", "c"])
    written = plots.plot_test_pngs(tmp_path, y, probs.argmax(axis=1), ["a", "b", "c"], roc, pr)
    assert sorted(p.name for p in written) == ["confusion.png", "pr.png", "roc.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_positive_class_rule_for_test_and_cv():
    classes = ["a", "b"]
    assert ev.positive_class(["a", "b", "b"], classes, None) == "a"  # the rarer class
    assert ev.positive_class(["a", "b"], classes, None) == "b"  # a tie: the later class
    assert ev.positive_class(["a", "a"], classes, "b") == "b"  # configured wins
    assert ev.positive_class(["a", "b", "c"], ["a", "b", "c"], None) is None  # multi-class
    with pytest.raises(ParamsError, match=r"evaluate.positive_class: 'z' is not one of"):
        ev.positive_class(["a"], classes, "z")
    assert ev.positive_index(np.array([0, 1, 1]), classes, None) == 0

