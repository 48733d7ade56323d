"""Latency, throughput, cost and energy, with fake clocks so every number is exact."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from niche.evaluation import (
    Latency,
    Throughput,
    cost_per_1m_usd,
    measure_latency,
    measure_throughput,
    wh_per_query,
)


class FakeClock:
    """Returns the given readings in order; counts how often it was read."""

    def __init__(self, readings: Iterable[float]) -> None:
        self._readings = iter(readings)
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return next(self._readings)


def _readings_for(durations_s: list[float]) -> list[float]:
    readings, now = [], 100.0
    for duration in durations_s:
        readings += [now, now + duration]
        now += duration + 1.0
    return readings


def test_latency_percentiles_exact() -> None:
    clock = FakeClock(_readings_for([0.001, 0.002, 0.003, 0.004, 0.010]))
    latency = measure_latency(lambda text: None, ["a"], n=5, warmup=0, clock=clock)
    # p95 by linear interpolation: position 0.95 * 4 = 3.8 -> 4 + 0.8 * (10 - 4) ms.
    assert latency == Latency(p50_ms=pytest.approx(3.0), p95_ms=pytest.approx(8.8), n=5)
    assert latency.to_dict() == {"p50_ms": latency.p50_ms, "p95_ms": latency.p95_ms, "n": 5}


def test_latency_cycles_through_texts_after_untimed_warmup() -> None:
    calls: list[str] = []
    clock = FakeClock(_readings_for([0.5] * 5))
    latency = measure_latency(calls.append, ["a", "b", "c"], n=5, warmup=2, clock=clock)
    assert calls == ["a", "b", "a", "b", "c", "a", "b"]
    assert clock.reads == 10  # warm-up calls are not timed
    assert (latency.p50_ms, latency.p95_ms) == (500.0, 500.0)


def test_throughput_exact() -> None:
    batches: list[list[str]] = []
    result = measure_throughput(
        batches.append,
        ["a", "b", "c", "d", "e", "f"],
        clock=FakeClock([10.0, 12.0]),
        cpu_clock=FakeClock([1.0, 4.0]),
    )
    assert batches == [["a", "b", "c", "d", "e", "f"]]  # one batch call
    assert result == Throughput(items=6, wall_s=2.0, cpu_s=3.0, items_per_s=3.0, cpu_s_per_item=0.5)
    assert result.to_dict()["cpu_s_per_item"] == 0.5


def test_cost_and_energy_exact() -> None:
    # 3.6 ms of CPU per item: a million items is one core-hour.
    assert cost_per_1m_usd(0.0036, 0.05) == pytest.approx(0.05)
    assert cost_per_1m_usd(0.001, 0.045) == pytest.approx(1000 / 3600 * 0.045)
    assert cost_per_1m_usd(0.0, 0.045) == 0.0
    assert wh_per_query(0.0018, 2.0) == pytest.approx(1e-6)
    assert wh_per_query(0.5, 10.0) == pytest.approx(5 / 3600)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: measure_latency(print, [], n=1), "texts is empty"),
        (lambda: measure_latency(print, ["a"], n=0), "n must be at least 1"),
        (lambda: measure_latency(print, ["a"], warmup=-1), "warmup"),
        (lambda: measure_throughput(print, []), "texts is empty"),
        (
            lambda: measure_throughput(
                len, ["a"], clock=FakeClock([1.0, 1.0]), cpu_clock=FakeClock([0.0, 0.0])
            ),
            "did not advance",
        ),
    ],
)
def test_bad_input_is_a_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
