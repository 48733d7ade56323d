"""The :class:`Signal` every monitoring check returns, and the input checks they share.

A signal is one verdict on one window of traffic: a two-sample test (statistic, p-value,
``threshold`` = its alpha) or an estimate (value, 95 % interval, ``threshold`` = the floor or
ceiling it is held to), and whether it alarms. A window too small to judge is still reported,
with ``alarm`` false and ``detail["insufficient"]`` true.

    >>> Signal("accuracy", 0.91, None, (0.88, 0.93), 0.85, False, "wilson", n=500).to_dict()["interval"]
    [0.88, 0.93]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from niche.errors import ValidationError

__all__ = ["MIN_ROWS", "Signal"]

MIN_ROWS = 30
"""The fewest rows (in the current window, and in the reference) a two-sample test judges.

Below it a test is not run: its signal has ``alarm`` false and ``detail["insufficient"]``
true. A task's ``monitoring.min_rows`` may ask for more (every test takes ``min_rows=``)."""


@dataclass(frozen=True)
class Signal:
    """One monitoring verdict on one window: a test's statistic and p-value, or an estimate's
    value and 95 % interval, the threshold it was held to and whether it alarms.

    ``name``: what is watched (``"input_drift"``, ``"prediction_drift"``, ``"agreement"``,
    ``"latency_p95_ms"`` …). ``statistic``: the test statistic or the measured value (None
    when there was nothing to measure). ``p_value``: for tests. ``interval``: for estimates,
    95 %. ``threshold``: a test's alpha, an estimate's floor or ceiling (None: not judged).
    ``method``: how (``"knn-novelty"``, ``"chi-square"``, ``"wilson"`` …). ``n``: rows of the
    current window the signal used. ``detail``: what explains the verdict (reference size,
    the labels that moved most, ``"insufficient": True`` …).

        >>> signal = accuracy(455, 500, floor=0.85)
        >>> signal.alarm, signal.to_dict()["interval"]
        (False, [0.8817..., 0.9321...])
    """

    name: str
    statistic: float | None
    p_value: float | None
    interval: tuple[float, float] | None
    threshold: float | None
    alarm: bool
    method: str
    n: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: plain floats, ``interval`` as a list, NaN and infinities as None.

        >>> Signal("error_rate", float("nan"), None, None, 0.05, False, "wilson").to_dict()["statistic"]
        None
        """
        return {
            "name": self.name,
            "statistic": _plain(self.statistic),
            "p_value": _plain(self.p_value),
            "interval": None if self.interval is None else [_plain(x) for x in self.interval],
            "threshold": _plain(self.threshold),
            "alarm": bool(self.alarm),
            "method": self.method,
            "n": None if self.n is None else int(self.n),
            "detail": _plain(self.detail),
        }


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made plain Python and non-finite floats None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


def insufficient(name: str, method: str, threshold: float | None, n: int, **detail: Any) -> Signal:
    """The signal of a check that had too few rows to judge: reported, never alarming."""
    return Signal(
        name=name,
        statistic=None,
        p_value=None,
        interval=None,
        threshold=threshold,
        alarm=False,
        method=method,
        n=n,
        detail={"insufficient": True, **detail},
    )


def check_alpha(alpha: float, param: str = "alpha") -> float:
    """``alpha`` as a float in (0, 1), or a ValidationError naming ``param``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
        raise ValidationError(f"{param} must be a number in (0, 1), got {alpha!r}", param=param)
    value = float(alpha)
    if not 0.0 < value < 1.0:
        raise ValidationError(f"{param} must be in (0, 1), got {alpha!r}", param=param)
    return value


def check_fraction(value: float | None, param: str, *, open_low: bool = False) -> float | None:
    """``value`` as a float in [0, 1] ((0, 1) when ``open_low``), None passed through."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ValidationError(f"{param} must be a number in [0, 1], got {value!r}", param=param)
    number = float(value)
    low_ok = number > 0.0 if open_low else number >= 0.0
    if not (low_ok and number <= 1.0):
        bounds = "(0, 1]" if open_low else "[0, 1]"
        raise ValidationError(f"{param} must be in {bounds}, got {value!r}", param=param)
    return number


def check_ceiling(value: float | None, param: str) -> float | None:
    """A finite non-negative ceiling (a latency, a cost), None passed through."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ValidationError(f"{param} must be a number >= 0, got {value!r}", param=param)
    number = float(value)
    if not (math.isfinite(number) and number >= 0.0):
        raise ValidationError(f"{param} must be a finite number >= 0, got {value!r}", param=param)
    return number


def check_count(value: int, param: str, *, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum`` (bools refused), or a ValidationError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValidationError(f"{param} must be an integer, got {value!r}", param=param)
    if value < minimum:
        raise ValidationError(f"{param} must be >= {minimum}, got {value!r}", param=param)
    return int(value)


def check_matrix(value: Any, param: str, *, dim: int | None = None) -> np.ndarray:
    """A 2-D float array of finite values (``dim`` columns when given) as float32."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{param} must be a numeric array: {exc}", param=param) from exc
    if array.ndim != 2:
        raise ValidationError(
            f"{param} must be a 2-D array (rows, dimensions), got shape {array.shape}", param=param
        )
    if array.shape[1] == 0:
        raise ValidationError(f"{param} has no columns", param=param)
    if dim is not None and array.shape[1] != dim:
        raise ValidationError(
            f"{param} has {array.shape[1]} dimensions but the reference has {dim}", param=param
        )
    _check_finite(array, param)
    return array


def check_vector(
    value: Any,
    param: str,
    *,
    low: float | None = None,
    high: float | None = None,
    dtype: Any = np.float64,
) -> np.ndarray:
    """A 1-D array of finite values within [``low``, ``high``] (bounds optional)."""
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{param} must be a numeric array: {exc}", param=param) from exc
    if array.ndim != 1:
        raise ValidationError(f"{param} must be a 1-D array, got shape {array.shape}", param=param)
    _check_finite(array, param)
    if low is not None and array.size and array.min() < low:
        row = int(np.argmin(array))
        raise ValidationError(
            f"{param} must be >= {low}, got {array[row]!r} at position {row}", param=param
        )
    if high is not None and array.size and array.max() > high:
        row = int(np.argmax(array))
        raise ValidationError(
            f"{param} must be <= {high}, got {array[row]!r} at position {row}", param=param
        )
    return array


def check_labels(values: Sequence[str], known: Mapping[str, int], param: str) -> np.ndarray:
    """Positions of ``values`` in ``known``; a ValidationError names the first unknown one."""
    if isinstance(values, str):
        raise ValidationError(f"{param} must be a sequence of labels, not a string", param=param)
    try:
        return np.fromiter((known[v] for v in values), dtype=np.int64)
    except KeyError as exc:
        raise ValidationError(
            f"{param} holds the label {exc.args[0]!r}, which is not in labels", param=param
        ) from None
    except TypeError as exc:
        raise ValidationError(f"{param} must be a sequence of labels: {exc}", param=param) from exc


def _check_finite(array: np.ndarray, param: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        position = np.argwhere(~np.isfinite(array))[0]
        where = ", ".join(str(int(i)) for i in position)
        raise ValidationError(
            f"{param} holds NaN or infinite values (first at index {where})", param=param
        )
