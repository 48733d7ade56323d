"""How good the champion is on live traffic: agreement with the general model, accuracy on
gold labels, and an estimate of accuracy from calibrated confidences when there are none.

Each is an estimate with a 95 % interval, held to a floor: it alarms only when the whole
interval lies below the floor (the upper bound < ``floor``), so a small window with a wide
interval does not alarm on noise. ``floor=None`` reports without judging.

    >>> agreement(412, 500, floor=0.8).interval
    (0.788..., 0.855...)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from niche.monitoring.signals import (
    Signal,
    check_count,
    check_fraction,
    check_vector,
    insufficient,
)

__all__ = ["accuracy", "agreement", "estimated_accuracy", "wilson_interval"]

CONFIDENCE_LEVEL = 0.95


def wilson_interval(
    successes: int, n: int, *, confidence_level: float = CONFIDENCE_LEVEL
) -> tuple[float, float]:
    """The Wilson score interval of ``successes / n`` (``scipy.stats.binomtest``), n >= 1.

    >>> wilson_interval(455, 500)
    (0.8817..., 0.9321...)
    """
    from scipy import stats

    successes = check_count(successes, "successes")
    n = check_count(n, "n", minimum=1)
    _check_not_above(successes, n, "successes", "n")
    ci = stats.binomtest(successes, n).proportion_ci(
        confidence_level=confidence_level, method="wilson"
    )
    return float(ci.low), float(ci.high)


def agreement(agreed: int, n: int, *, floor: float | None) -> Signal:
    """Live agreement with the general model on the ``n`` requests both answered.

    Shadowed and cascaded requests count: the general model's answer is the teacher's
    label. Alarms when the Wilson upper bound is below ``floor``.

        >>> agreement(350, 500, floor=0.8).alarm
        True
    """
    return _proportion("agreement", agreed, n, floor, param=("agreed", "n"))


def accuracy(correct: int, n: int, *, floor: float | None) -> Signal:
    """Accuracy on the ``n`` gold-labelled requests of the window, with a Wilson interval.

    >>> accuracy(455, 500, floor=0.85).interval
    (0.8817..., 0.9321...)
    """
    return _proportion("accuracy", correct, n, floor, param=("correct", "n"))


def estimated_accuracy(
    confidences: np.ndarray,
    *,
    floor: float | None,
    confidence_level: float = CONFIDENCE_LEVEL,
) -> Signal:
    """Accuracy estimated from calibrated top-class confidences (NannyML's CBPE idea).

    If a confidence of ``p`` is right with probability ``p``, the window's accuracy is a sum
    of independent Bernoulli(``p_i``) over ``n``: its expectation is the mean confidence, its
    variance ``sum(p_i (1 - p_i)) / n**2``; the interval is the normal one around it
    (``scipy.stats.norm.interval``), clipped to [0, 1]. Only as good as the calibration:
    confidences of an overconfident model overstate accuracy, most of all under drift.

        >>> estimated_accuracy(np.array([0.9, 0.8, 0.95] * 100), floor=0.8).statistic
        0.8833...
    """
    from scipy import stats

    floor = check_fraction(floor, "floor")
    check_fraction(confidence_level, "confidence_level", open_low=True)
    values = check_vector(confidences, "confidences", low=0.0, high=1.0)
    n = int(values.size)
    if n == 0:
        return insufficient("estimated_accuracy", "cbpe", floor, 0)
    estimate = float(values.mean())
    scale = float(np.sqrt(np.sum(values * (1.0 - values)))) / n
    if scale > 0:
        low, high = stats.norm.interval(confidence_level, loc=estimate, scale=scale)
    else:
        low = high = estimate
    interval = (max(0.0, float(low)), min(1.0, float(high)))
    return Signal(
        name="estimated_accuracy",
        statistic=estimate,
        p_value=None,
        interval=interval,
        threshold=floor,
        alarm=floor is not None and interval[1] < floor,
        method="cbpe",
        n=n,
        detail={"assumes": "calibrated confidences"},
    )


def _proportion(
    name: str, successes: int, n: int, floor: float | None, *, param: tuple[str, str]
) -> Signal:
    floor = check_fraction(floor, "floor")
    successes = check_count(successes, param[0])
    n = check_count(n, param[1])
    _check_not_above(successes, n, *param)
    if n == 0:
        return insufficient(name, "wilson", floor, 0)
    interval = wilson_interval(successes, n)
    detail: dict[str, Any] = {"successes": successes}
    return Signal(
        name=name,
        statistic=successes / n,
        p_value=None,
        interval=interval,
        threshold=floor,
        alarm=floor is not None and interval[1] < floor,
        method="wilson",
        n=n,
        detail=detail,
    )


def _check_not_above(successes: int, n: int, successes_param: str, n_param: str) -> None:
    from niche.errors import ValidationError

    if successes > n:
        raise ValidationError(
            f"{successes_param} ({successes}) exceeds {n_param} ({n})", param=successes_param
        )
