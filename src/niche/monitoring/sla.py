"""SLA compliance of a window of traffic records: latency p95, error rate, cost per 1k requests.

Each is a measured value with a 95 % interval, held to a ceiling from the task's SLA: it
alarms only when the whole interval lies above the ceiling (the lower bound > ceiling), so
the false-alarm rate of a compliant service stays near 2.5 % however small the window.

    >>> [s.name for s in sla_signals(latencies, failed, costs, latency_p95_ms=250.0,
    ...                               max_error_rate=0.05, max_cost_per_1k_usd=0.5)]
    ['latency_p95_ms', 'error_rate', 'cost_per_1k_usd']
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from niche.errors import ValidationError
from niche.monitoring.accuracy import CONFIDENCE_LEVEL, wilson_interval
from niche.monitoring.signals import (
    Signal,
    check_ceiling,
    check_fraction,
    check_vector,
    insufficient,
)

__all__ = ["sla_signals"]


def sla_signals(
    latencies_ms: np.ndarray,
    failed: np.ndarray,
    costs_usd: np.ndarray,
    *,
    latency_p95_ms: float | None,
    max_error_rate: float | None,
    max_cost_per_1k_usd: float | None,
    confidence_level: float = CONFIDENCE_LEVEL,
) -> list[Signal]:
    """Three signals over one window's records (arrays of equal length, one entry a record).

    * ``latency_p95_ms``: ``numpy.percentile(latencies_ms, 95)`` with the distribution-free
      interval of ``scipy.stats.quantile_test`` (order statistics; its upper end is None for
      windows too small to bound it).
    * ``error_rate``: the share of ``failed`` records, with a Wilson interval.
    * ``cost_per_1k_usd``: 1000 x the mean cost, with a t interval
      (``scipy.stats.ttest_1samp(...).confidence_interval``).

    A ceiling of None reports the value without judging it. An empty window gives three
    signals with ``detail["insufficient"]``.

        >>> latency, errors, cost = sla_signals(
        ...     np.array([10.0, 20.0, 30.0]), np.array([False, True, False]), np.zeros(3),
        ...     latency_p95_ms=None, max_error_rate=0.05, max_cost_per_1k_usd=None)
        >>> latency.statistic, errors.statistic
        (29.0, 0.333...)
    """
    from scipy import stats

    ceiling_latency = check_ceiling(latency_p95_ms, "latency_p95_ms")
    ceiling_errors = check_fraction(max_error_rate, "max_error_rate")
    ceiling_cost = check_ceiling(max_cost_per_1k_usd, "max_cost_per_1k_usd")
    check_fraction(confidence_level, "confidence_level", open_low=True)
    latencies = check_vector(latencies_ms, "latencies_ms", low=0.0)
    costs = check_vector(costs_usd, "costs_usd", low=0.0)
    failures = _check_flags(failed, "failed")
    n = int(latencies.size)
    if failures.size != n or costs.size != n:
        raise ValidationError(
            "latencies_ms, failed and costs_usd must have one entry per record: got "
            f"{n}, {failures.size} and {costs.size}",
            param="failed" if failures.size != n else "costs_usd",
        )
    if n == 0:
        return [
            insufficient("latency_p95_ms", "quantile-ci", ceiling_latency, 0),
            insufficient("error_rate", "wilson", ceiling_errors, 0),
            insufficient("cost_per_1k_usd", "t-interval", ceiling_cost, 0),
        ]

    p95 = float(np.percentile(latencies, 95))
    quantile: Any = stats.quantile_test(latencies, q=p95, p=0.95)
    ci = quantile.confidence_interval(confidence_level)
    latency_interval = (float(ci.low), float(ci.high))

    errors = int(failures.sum())
    error_interval = wilson_interval(errors, n, confidence_level=confidence_level)

    mean_cost = float(costs.mean()) * 1000.0
    if n >= 2 and float(np.ptp(costs)) > 0:
        test: Any = stats.ttest_1samp(costs, popmean=0.0)
        cost_ci = test.confidence_interval(confidence_level)
        cost_interval = (max(0.0, float(cost_ci.low) * 1000.0), float(cost_ci.high) * 1000.0)
    elif n >= 2:
        cost_interval = (mean_cost, mean_cost)
    else:
        cost_interval = (math.nan, math.nan)

    return [
        _above("latency_p95_ms", p95, latency_interval, ceiling_latency, "quantile-ci", n, {}),
        _above(
            "error_rate",
            errors / n,
            error_interval,
            ceiling_errors,
            "wilson",
            n,
            {"failed": errors},
        ),
        _above(
            "cost_per_1k_usd",
            mean_cost,
            cost_interval,
            ceiling_cost,
            "t-interval",
            n,
            {"total_usd": float(costs.sum())},
        ),
    ]


def _above(
    name: str,
    value: float,
    interval: tuple[float, float],
    ceiling: float | None,
    method: str,
    n: int,
    detail: dict[str, float | int],
) -> Signal:
    low = interval[0]
    return Signal(
        name=name,
        statistic=value,
        p_value=None,
        interval=interval,
        threshold=ceiling,
        # An undefined lower bound (NaN: too few rows) never alarms.
        alarm=ceiling is not None and math.isfinite(low) and low > ceiling,
        method=method,
        n=n,
        detail=dict(detail),
    )


def _check_flags(value: np.ndarray, param: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValidationError(f"{param} must be a 1-D array, got shape {array.shape}", param=param)
    if array.dtype == np.bool_:
        return array
    if array.size and not (array.dtype.kind in "iuf" and np.isin(array, (0, 1)).all()):
        raise ValidationError(f"{param} must hold booleans (or 0 / 1)", param=param)
    return array.astype(bool)
