"""The cascade curve: how much traffic a specialist can take, and at what quality.

At threshold ``t`` the specialist answers the rows where its confidence is at least ``t``;
the general model answers the rest. Sweeping ``t`` trades coverage (cheap answers) against
accuracy.

>>> for point in cascade_curve(y_true, spec.labels, spec.confidences, general.labels):
...     print(point.threshold, point.coverage, point.accuracy)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from niche.evaluation.metrics import Labels

__all__ = ["DEFAULT_THRESHOLDS", "CascadePoint", "cascade_curve"]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class CascadePoint:
    """At ``threshold``: the share of rows the specialist answers, and overall accuracy."""

    threshold: float
    coverage: float
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def cascade_curve(
    y_true: Labels,
    specialist_labels: Labels,
    specialist_confidences: Sequence[float] | np.ndarray,
    general_labels: Labels,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> list[CascadePoint]:
    """One :class:`CascadePoint` per threshold, in the order given.

    ``coverage`` is the share of rows with specialist confidence ≥ threshold; ``accuracy`` is
    the accuracy of the combined answers (specialist on those rows, general model elsewhere).

    >>> cascade_curve(["a", "b"], ["a", "a"], [0.9, 0.4], ["b", "b"], thresholds=[0.5])
    [CascadePoint(threshold=0.5, coverage=0.5, accuracy=1.0)]
    """
    true = np.asarray(y_true)
    spec = np.asarray(specialist_labels)
    conf = np.asarray(specialist_confidences, dtype=float)
    general = np.asarray(general_labels)
    n = len(true)
    if n == 0:
        raise ValueError("y_true is empty")
    for name, array in (
        ("specialist_labels", spec),
        ("specialist_confidences", conf),
        ("general_labels", general),
    ):
        if array.ndim != 1 or len(array) != n:
            raise ValueError(f"{name} must be one-dimensional with {n} rows like y_true")
    if np.isnan(conf).any():
        raise ValueError("specialist_confidences contain NaN")
    spec_right = spec == true
    general_right = general == true
    points = []
    for threshold in thresholds:
        taken = conf >= threshold
        right = np.where(taken, spec_right, general_right)
        points.append(
            CascadePoint(
                threshold=float(threshold),
                coverage=float(taken.mean()),
                accuracy=float(right.mean()),
            )
        )
    return points
