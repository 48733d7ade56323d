"""Cascade curve: coverage and combined accuracy per threshold, on a hand-checked case."""

from __future__ import annotations

import pytest

from niche.evaluation import DEFAULT_THRESHOLDS, CascadePoint, cascade_curve

Y_TRUE = ["a", "b", "c", "d"]
SPECIALIST = ["a", "b", "x", "x"]  # right, right, wrong, wrong
CONFIDENCES = [0.95, 0.6, 0.8, 0.2]
GENERAL = ["y", "b", "c", "d"]  # wrong, right, right, right


def test_cascade_curve_exact() -> None:
    points = cascade_curve(
        Y_TRUE, SPECIALIST, CONFIDENCES, GENERAL, thresholds=[0.0, 0.5, 0.8, 0.9, 1.0]
    )
    assert points == [
        CascadePoint(0.0, coverage=1.0, accuracy=0.5),  # specialist everywhere
        CascadePoint(0.5, coverage=0.75, accuracy=0.75),  # rows 0-2 specialist, 3 general
        CascadePoint(0.8, coverage=0.5, accuracy=0.75),  # 0.8 >= 0.8: row 2 still taken
        CascadePoint(0.9, coverage=0.25, accuracy=1.0),  # only row 0 kept
        CascadePoint(1.0, coverage=0.0, accuracy=0.75),  # general everywhere
    ]
    assert points[1].to_dict() == {"threshold": 0.5, "coverage": 0.75, "accuracy": 0.75}


def test_default_thresholds() -> None:
    assert DEFAULT_THRESHOLDS == (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
    points = cascade_curve(Y_TRUE, SPECIALIST, CONFIDENCES, GENERAL)
    assert [p.threshold for p in points] == list(DEFAULT_THRESHOLDS)
    assert [p.coverage for p in points] == [1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([], [], [], []), "y_true is empty"),
        ((Y_TRUE, SPECIALIST[:3], CONFIDENCES, GENERAL), "specialist_labels"),
        ((Y_TRUE, SPECIALIST, CONFIDENCES[:3], GENERAL), "specialist_confidences"),
        ((Y_TRUE, SPECIALIST, CONFIDENCES, [*GENERAL, "e"]), "general_labels"),
        ((Y_TRUE, SPECIALIST, [0.1, float("nan"), 0.2, 0.3], GENERAL), "NaN"),
    ],
)
def test_bad_input_is_a_value_error(args, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cascade_curve(*args)
