"""Live-quality estimates of niche.monitoring: Wilson intervals as scipy computes them, alarms
only when the whole interval is below the floor, and a CBPE estimate whose interval covers the
true accuracy of calibrated windows about 95 % of the time."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from niche.errors import ValidationError
from niche.monitoring import accuracy, agreement, estimated_accuracy, wilson_interval


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(455, 500), (0, 20), (20, 20), (1, 3), (412, 500)])
def test_wilson_interval_matches_scipy_and_the_formula(k: int, n: int) -> None:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high))
    assert wilson_interval(k, n) == pytest.approx(_wilson_by_hand(k, n), abs=1e-12)


@pytest.mark.parametrize("check", [agreement, accuracy])
def test_alarm_only_when_the_whole_interval_is_below_the_floor(check) -> None:
    below = check(350, 500, floor=0.8)  # 0.70, interval about (0.658, 0.739)
    assert below.alarm and below.interval is not None and below.interval[1] < 0.8
    straddling = check(395, 500, floor=0.8)  # 0.79: the interval holds 0.8
    assert straddling.interval is not None and straddling.interval[1] > 0.8
    assert not straddling.alarm
    few = check(7, 10, floor=0.8)  # 0.7, but ten rows cannot rule 0.8 out
    assert not few.alarm
    unjudged = check(350, 500, floor=None)
    assert not unjudged.alarm and unjudged.threshold is None
    assert below.statistic == pytest.approx(0.7) and below.n == 500
    assert below.method == "wilson" and below.name == check.__name__


@pytest.mark.parametrize("check", [agreement, accuracy])
def test_no_rows_is_insufficient(check) -> None:
    signal = check(0, 0, floor=0.8)
    assert not signal.alarm and signal.statistic is None and signal.interval is None
    assert signal.detail == {"insufficient": True} and signal.threshold == 0.8


def test_bad_counts_and_floors_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"agreed \(11\) exceeds n \(10\)") as caught:
        agreement(11, 10, floor=0.8)
    assert caught.value.param == "agreed"
    with pytest.raises(ValidationError) as caught:
        accuracy(-1, 10, floor=0.8)
    assert caught.value.param == "correct"
    with pytest.raises(ValidationError) as caught:
        accuracy(5, 10, floor=1.5)
    assert caught.value.param == "floor"
    with pytest.raises(ValidationError) as caught:
        agreement(5.0, 10, floor=0.5)  # type: ignore[arg-type]
    assert caught.value.param == "agreed"


def test_estimated_accuracy_is_the_mean_confidence_with_a_poisson_binomial_interval() -> None:
    confidences = np.array([0.9, 0.8, 0.95] * 100)
    signal = estimated_accuracy(confidences, floor=0.8)
    assert signal.statistic == pytest.approx(0.88333333)
    sd = math.sqrt(float(np.sum(confidences * (1 - confidences)))) / 300
    assert signal.interval == pytest.approx(
        (0.88333333 - 1.959964 * sd, 0.88333333 + 1.959964 * sd)
    )
    assert not signal.alarm and signal.method == "cbpe" and signal.n == 300
    low = estimated_accuracy(np.full(200, 0.6), floor=0.8)
    assert low.alarm
    assert estimated_accuracy(np.ones(50), floor=0.9).interval == (1.0, 1.0)


def test_estimated_accuracy_covers_the_true_accuracy_of_calibrated_windows() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        confidences = rng.beta(6, 1.5, 300)
        correct = rng.random(300) < confidences  # calibrated: right with probability p
        interval = estimated_accuracy(confidences, floor=None).interval
        assert interval is not None
        covered += interval[0] <= correct.mean() <= interval[1]
    # Binomial(400, 0.95) lies in 366..394 with probability > 0.999.
    assert 366 <= covered <= 394


def test_estimated_accuracy_refuses_bad_confidences() -> None:
    for bad in (np.array([0.5, 1.5]), np.array([0.5, np.nan]), np.ones((3, 2))):
        with pytest.raises(ValidationError) as caught:
            estimated_accuracy(bad, floor=0.8)
        assert caught.value.param == "confidences"
    empty = estimated_accuracy(np.array([]), floor=0.8)
    assert empty.detail["insufficient"] is True and not empty.alarm


def test_estimates_are_json_ready() -> None:
    data = json.loads(json.dumps(agreement(412, 500, floor=0.8).to_dict()))
    assert data["interval"] == pytest.approx([0.78818583, 0.8548736])
    assert data["p_value"] is None and data["alarm"] is False
