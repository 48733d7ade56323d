"""Latency, throughput, cost and energy of a predictor.

Clocks are arguments (``clock`` for wall time, ``cpu_clock`` for process CPU time) so tests
use fake clocks and get exact numbers.

>>> latency = measure_latency(lambda text: predictor.predict([text]), texts, n=200)
>>> latency.p95_ms
4.1
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from niche.evaluation.cost import Prices, cost_usd, energy_wh
from niche.specialists.base import Usage

__all__ = [
    "Latency",
    "Throughput",
    "cost_per_1m_usd",
    "measure_latency",
    "measure_throughput",
    "wh_per_query",
]

Clock = Callable[[], float]


@dataclass(frozen=True)
class Latency:
    """Single-request latency percentiles over ``n`` timed calls, in milliseconds."""

    p50_ms: float
    p95_ms: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class Throughput:
    """One batch call: ``items`` predicted in ``wall_s`` seconds using ``cpu_s`` CPU seconds.

    ``cpu_s`` is the process's CPU time over the call, summed over all its threads, so a
    4-thread encoder busy for 1 s of wall time counts about 4 CPU seconds.
    """

    items: int
    wall_s: float
    cpu_s: float
    items_per_s: float
    cpu_s_per_item: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def measure_latency(
    predict_one: Callable[[str], object],
    texts: Sequence[str],
    *,
    n: int = 200,
    warmup: int = 10,
    clock: Clock = time.perf_counter,
) -> Latency:
    """Time ``n`` single-request calls of ``predict_one``, cycling through ``texts``.

    ``warmup`` untimed calls come first (lazy loading, caches); timed calls then start again
    from ``texts[0]``. Percentiles use numpy's default linear interpolation.

    >>> measure_latency(lambda t: predictor.predict([t]), texts, n=200).p50_ms
    """
    if len(texts) == 0:
        raise ValueError("texts is empty: latency needs at least one text")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if warmup < 0:
        raise ValueError(f"warmup must not be negative, got {warmup}")
    for i in range(warmup):
        predict_one(texts[i % len(texts)])
    elapsed = np.empty(n)
    for i in range(n):
        text = texts[i % len(texts)]
        start = clock()
        predict_one(text)
        elapsed[i] = clock() - start
    p50, p95 = np.percentile(elapsed * 1000.0, [50, 95])
    return Latency(p50_ms=float(p50), p95_ms=float(p95), n=n)


def measure_throughput(
    predict_batch: Callable[[Sequence[str]], object],
    texts: Sequence[str],
    *,
    clock: Clock = time.perf_counter,
    cpu_clock: Clock = time.process_time,
) -> Throughput:
    """Time one ``predict_batch(texts)`` call: wall time, process CPU time, items per second.

    Measure a batch large enough for the CPU clock's resolution (coarse on some platforms).
    CPU spent outside this process (a remote model) is not seen.

    >>> measure_throughput(predictor.predict, texts).cpu_s_per_item
    """
    if len(texts) == 0:
        raise ValueError("texts is empty: throughput needs at least one text")
    wall_start, cpu_start = clock(), cpu_clock()
    predict_batch(texts)
    wall_s = clock() - wall_start
    cpu_s = cpu_clock() - cpu_start
    if wall_s <= 0:
        raise ValueError(
            f"the wall clock did not advance during the batch call ({wall_s} s); "
            "use a higher-resolution clock or a larger batch"
        )
    items = len(texts)
    return Throughput(
        items=items,
        wall_s=wall_s,
        cpu_s=cpu_s,
        items_per_s=items / wall_s,
        cpu_s_per_item=cpu_s / items,
    )


def cost_per_1m_usd(cpu_s_per_item: float, cpu_hour_usd: float) -> float:
    """USD for one million predictions at ``cpu_hour_usd`` per CPU-core hour.

    The same as :func:`~niche.evaluation.cost_usd` of a million items' compute seconds.

    >>> cost_per_1m_usd(0.0036, 0.05)  # 1M x 3.6 ms = 1 core-hour
    0.05
    """
    return cost_usd(Usage(compute_s=cpu_s_per_item * 1e6), Prices(cpu_hour_usd=cpu_hour_usd))


def wh_per_query(cpu_s_per_item: float, watts_per_core: float) -> float:
    """Watt-hours per prediction: CPU seconds x watts per busy core / 3600.

    The same as :func:`~niche.evaluation.energy_wh` of one item's compute seconds.

    >>> wh_per_query(0.0018, 2.0)  # 1.8 ms on a 2 W core = 3.6 mJ
    1e-06
    """
    return energy_wh(Usage(compute_s=cpu_s_per_item), watts_per_core=watts_per_core)
