"""Metrics: exact values on hand-computed cases, and agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from niche.evaluation import (
    ClassMetrics,
    accuracy,
    expected_calibration_error,
    macro_f1,
    per_class,
)

# a: tp 2 of 2 predicted, 3 true -> P 1, R 2/3, F1 0.8
# b: tp 1 of 2 predicted, 2 true -> P 1/2, R 1/2, F1 1/2
# c: tp 1 of 2 predicted, 1 true -> P 1/2, R 1, F1 2/3
Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", "b", "b", "c", "c"]


def test_accuracy_exact() -> None:
    assert accuracy(Y_TRUE, Y_PRED) == 4 / 6
    assert accuracy(np.array(["x", "y"]), ["x", "y"]) == 1.0


def test_per_class_exact() -> None:
    scores = per_class(Y_TRUE, Y_PRED)
    assert list(scores) == ["a", "b", "c"]
    assert scores["a"] == ClassMetrics(
        precision=1.0, recall=pytest.approx(2 / 3), f1=0.8, support=3
    )
    assert scores["b"] == ClassMetrics(precision=0.5, recall=0.5, f1=0.5, support=2)
    assert scores["c"] == ClassMetrics(
        precision=0.5, recall=1.0, f1=pytest.approx(2 / 3), support=1
    )
    assert scores["a"].to_dict() == {
        "precision": 1.0,
        "recall": scores["a"].recall,
        "f1": 0.8,
        "support": 3,
    }


def test_per_class_zero_division_is_zero() -> None:
    scores = per_class(["a", "b"], ["a", "a"], labels=["a", "b", "z"])
    assert scores["b"] == ClassMetrics(0.0, 0.0, 0.0, 1)  # never predicted
    assert scores["z"] == ClassMetrics(0.0, 0.0, 0.0, 0)  # never seen at all


def test_per_class_default_labels_are_those_in_y_true() -> None:
    assert list(per_class(["b", "a", "b"], ["x", "a", "y"])) == ["a", "b"]


def test_macro_f1_exact() -> None:
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_averages_over_labels_in_y_true_only() -> None:
    # "x" is only ever predicted: it costs "a" recall but is not averaged itself.
    assert macro_f1(["a", "a"], ["a", "x"]) == pytest.approx(2 / 3)
    assert macro_f1(["a", "a"], ["a", "x"], labels=["a", "x"]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    names = np.array([f"label_{i}" for i in range(12)])
    y_true = names[rng.integers(0, 10, n)]  # label_10 and label_11 only ever predicted
    y_pred = np.where(rng.random(n) < 0.6, y_true, names[rng.integers(0, 12, n)])
    labels = sorted(set(y_true))

    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))
    assert macro_f1(list(y_true), list(y_pred)) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0.0)
    )
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0.0
    )
    scores = per_class(y_true, y_pred)
    assert list(scores) == labels
    assert [s.precision for s in scores.values()] == pytest.approx(precision)
    assert [s.recall for s in scores.values()] == pytest.approx(recall)
    assert [s.f1 for s in scores.values()] == pytest.approx(f1)
    assert [s.support for s in scores.values()] == list(support)


def test_ece_exact() -> None:
    correct = [True, True, False, False]
    confidences = [0.95, 0.85, 0.75, 0.15]
    # 2 bins: [0, 0.5) holds 0.15 (wrong): 1/4 * |0 - 0.15|;
    # [0.5, 1] holds 0.95, 0.85, 0.75 (2 of 3 right): 3/4 * |2/3 - 0.85|.
    assert expected_calibration_error(correct, confidences, n_bins=2) == pytest.approx(
        0.25 * 0.15 + 0.75 * abs(2 / 3 - 0.85)
    )
    # 10 bins: each row alone.
    assert expected_calibration_error(correct, confidences, n_bins=10) == pytest.approx(
        (0.05 + 0.15 + 0.75 + 0.15) / 4
    )


def test_ece_edges() -> None:
    # 1.0 falls in the last bin, 0.0 in the first: perfectly calibrated.
    assert expected_calibration_error([1, 0], [1.0, 0.0], n_bins=2) == 0.0
    assert expected_calibration_error([0], [1.0]) == 1.0
    # 0.5 sits on the inner edge of 2 bins and goes up: both rows share the bin [0.5, 1].
    assert expected_calibration_error([1, 0], [0.5, 1.0], n_bins=2) == pytest.approx(0.25)


def _ece_by_loop(correct: np.ndarray, conf: np.ndarray, n_bins: int) -> float:
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= hi))
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


@pytest.mark.parametrize("n_bins", [1, 7, 15])
def test_ece_matches_a_plain_loop(n_bins: int) -> None:
    rng = np.random.default_rng(n_bins)
    conf = rng.random(500)
    correct = rng.random(500) < conf**2
    assert expected_calibration_error(correct, conf, n_bins=n_bins) == pytest.approx(
        _ece_by_loop(correct, conf, n_bins)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: accuracy(["a"], ["a", "b"]), "differ in length: 1 != 2"),
        (lambda: accuracy([], []), "empty"),
        (lambda: macro_f1(["a"], ["a"], labels=[]), "labels"),
        (lambda: per_class(["a"], ["a"], labels=["a", "a"]), "duplicates"),
        (lambda: expected_calibration_error([1], [1.5]), r"\[0, 1\]"),
        (lambda: expected_calibration_error([1], [float("nan")]), r"\[0, 1\]"),
        (lambda: expected_calibration_error([2], [0.5]), "booleans or 0/1"),
        (lambda: expected_calibration_error([1], [0.5], n_bins=0), "n_bins"),
        (lambda: expected_calibration_error([1, 0], [0.5]), "differ in length"),
    ],
)
def test_bad_input_is_a_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
