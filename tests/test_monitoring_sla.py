"""SLA signals of niche.monitoring against hand-checked numbers, and their alarms: only when
the whole 95 % interval is above the ceiling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from niche.errors import ValidationError
from niche.monitoring import Signal, sla_signals, wilson_interval

NO_CEILINGS = {"latency_p95_ms": None, "max_error_rate": None, "max_cost_per_1k_usd": None}


def _by_name(signals: list[Signal]) -> dict[str, Signal]:
    return {s.name: s for s in signals}


def test_values_by_hand() -> None:
    latencies = np.arange(10.0, 210.0, 10.0)  # 10, 20, ..., 200: twenty records
    failed = np.array([True, True] + [False] * 18)
    costs = np.array([0.001] * 5 + [0.0] * 15)
    signals = sla_signals(latencies, failed, costs, **NO_CEILINGS)
    assert [s.name for s in signals] == ["latency_p95_ms", "error_rate", "cost_per_1k_usd"]
    latency, errors, cost = signals
    # Linear interpolation at position 0.95 * 19 = 18.05: 190 + 0.05 * 10.
    assert latency.statistic == pytest.approx(190.5)
    assert errors.statistic == pytest.approx(0.1) and errors.detail == {"failed": 2}
    assert errors.interval == pytest.approx(wilson_interval(2, 20))
    # Mean cost 0.00025 USD a request: 0.25 USD per 1,000.
    assert cost.statistic == pytest.approx(0.25)
    t = stats.t.ppf(0.975, 19) * np.std(costs, ddof=1) / np.sqrt(20) * 1000
    assert cost.interval == pytest.approx((max(0.0, 0.25 - t), 0.25 + t))
    assert all(s.n == 20 and not s.alarm and s.threshold is None for s in signals)


def test_latency_interval_is_the_order_statistic_interval() -> None:
    latencies = np.random.default_rng(0).gamma(4.0, 20.0, 500)
    latency = sla_signals(latencies, np.zeros(500, bool), np.zeros(500), **NO_CEILINGS)[0]
    ci = stats.quantile_test(latencies, q=np.percentile(latencies, 95), p=0.95)
    expected = ci.confidence_interval(0.95)
    assert latency.interval == pytest.approx((expected.low, expected.high))
    assert latency.interval is not None
    assert latency.interval[0] < latency.statistic < latency.interval[1]


def test_alarms_fire_when_the_interval_is_above_the_ceiling() -> None:
    rng = np.random.default_rng(1)
    latencies = rng.normal(300.0, 20.0, 500).clip(0)
    failed = np.zeros(500, bool)
    failed[:60] = True  # 12 %
    costs = np.full(500, 0.002)  # 2 USD per 1k
    slow = _by_name(
        sla_signals(
            latencies,
            failed,
            costs,
            latency_p95_ms=250.0,
            max_error_rate=0.05,
            max_cost_per_1k_usd=1.0,
        )
    )
    assert all(s.alarm for s in slow.values())
    fine = _by_name(
        sla_signals(
            latencies,
            failed,
            costs,
            latency_p95_ms=1000.0,
            max_error_rate=0.2,
            max_cost_per_1k_usd=5.0,
        )
    )
    assert not any(s.alarm for s in fine.values())


def test_a_rate_just_above_the_ceiling_within_noise_does_not_alarm() -> None:
    failed = np.zeros(500, bool)
    failed[:27] = True  # 5.4 %: the interval still holds 5 %
    errors = sla_signals(
        np.ones(500),
        failed,
        np.zeros(500),
        latency_p95_ms=None,
        max_error_rate=0.05,
        max_cost_per_1k_usd=None,
    )[1]
    assert errors.interval is not None and errors.interval[0] < 0.05 and not errors.alarm


def test_a_tiny_window_reports_undefined_bounds_as_none_and_does_not_alarm_on_them() -> None:
    latency, _, cost = sla_signals(
        np.array([900.0]),
        np.array([False]),
        np.array([0.5]),
        latency_p95_ms=100.0,
        max_error_rate=None,
        max_cost_per_1k_usd=1.0,
    )
    assert latency.statistic == 900.0
    data = json.loads(json.dumps(latency.to_dict()))
    assert data["interval"][1] is None
    assert not cost.alarm and cost.to_dict()["interval"] == [None, None]


def test_an_empty_window_gives_three_insufficient_signals() -> None:
    signals = sla_signals(np.array([]), np.array([], bool), np.array([]), **NO_CEILINGS)
    assert [s.detail for s in signals] == [{"insufficient": True}] * 3
    assert not any(s.alarm for s in signals) and all(s.statistic is None for s in signals)


@pytest.mark.parametrize(
    ("arrays", "param"),
    [
        ((np.array([1.0, -2.0]), np.zeros(2, bool), np.zeros(2)), "latencies_ms"),
        ((np.array([1.0, np.nan]), np.zeros(2, bool), np.zeros(2)), "latencies_ms"),
        ((np.ones(2), np.array([0, 2]), np.zeros(2)), "failed"),
        ((np.ones(2), np.zeros(3, bool), np.zeros(2)), "failed"),
        ((np.ones(2), np.zeros(2, bool), np.zeros(3)), "costs_usd"),
        ((np.ones(2), np.zeros(2, bool), np.array([0.0, -1.0])), "costs_usd"),
    ],
)
def test_bad_arrays_are_refused_by_name(arrays, param: str) -> None:
    with pytest.raises(ValidationError) as caught:
        sla_signals(*arrays, **NO_CEILINGS)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("ceilings", "param"),
    [
        ({"latency_p95_ms": -1.0}, "latency_p95_ms"),
        ({"max_error_rate": 1.5}, "max_error_rate"),
        ({"max_cost_per_1k_usd": float("inf")}, "max_cost_per_1k_usd"),
    ],
)
def test_bad_ceilings_are_refused_by_name(ceilings: dict[str, float], param: str) -> None:
    with pytest.raises(ValidationError) as caught:
        sla_signals(np.ones(3), np.zeros(3, bool), np.zeros(3), **{**NO_CEILINGS, **ceilings})
    assert caught.value.param == param
