"""How a task is watched and retrained: the ``monitoring`` and ``loop`` sections of its spec.

>>> LoopSpec(min_rows=300, triggers=("first", "drift")).cooldown_s
3600.0
>>> MonitoringSpec(window="1h").input_drift_alpha
0.01
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from niche.errors import ValidationError
from niche.registry.spec_checks import fraction, non_negative, strict

__all__ = ["LOOP_TRIGGERS", "LoopSpec", "MonitoringSpec"]


def _count(value: Any, name: str, *, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _alpha(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValidationError(
            f"{name} must be a false-alarm rate in (0, 1), e.g. 0.01, got {value!r}"
        )


_DURATION = re.compile(r"^\d+[smhdw]$")  # as parse_since reads it: whole units


@dataclass(frozen=True)
class MonitoringSpec:
    """How ``niche monitor`` judges a task's champion; each ``*_alpha`` is the false-alarm
    rate of one check (its p-value threshold), each ``min_*`` a floor.

    ``window``: the latest ``N`` records (an integer) or a duration back from now (``"1h"``).
    A window of fewer than ``min_rows`` records is reported but raises no alarm.
    ``reference_rows``: how many of the champion's training rows (a seeded sample) make the
    reference, with the traffic of its first serving window. ``min_agreement``: live
    agreement with the general model whose Wilson upper bound falls below it alarms.
    ``min_accuracy``: the floor for accuracy on gold labels and its calibrated estimate
    (None: the SLA's ``min_quality``). ``max_error_rate``: share of failed requests.

        >>> MonitoringSpec(window="1h", input_drift_alpha=0.001).window
        '1h'
    """

    window: int | str = 500
    min_rows: int = 50
    reference_rows: int = 2000
    input_drift_alpha: float = 0.01
    prediction_drift_alpha: float = 0.01
    confidence_drift_alpha: float = 0.01
    cascade_rate_alpha: float = 0.01
    min_agreement: float | None = 0.8
    min_accuracy: float | None = None
    max_error_rate: float | None = 0.05

    def __post_init__(self) -> None:
        window = self.window
        if isinstance(window, bool) or not (
            (isinstance(window, int) and window >= 1)
            or (isinstance(window, str) and _DURATION.match(window))
        ):
            raise ValidationError(
                "monitoring.window must be a number of records (>= 1) or a duration such as "
                f"'30m', '1h', '2d', got {window!r}"
            )
        _count(self.min_rows, "monitoring.min_rows", minimum=1)
        _count(self.reference_rows, "monitoring.reference_rows", minimum=10)
        for name in ("input_drift", "prediction_drift", "confidence_drift", "cascade_rate"):
            _alpha(getattr(self, f"{name}_alpha"), f"monitoring.{name}_alpha")
        fraction(self.min_agreement, "monitoring.min_agreement")
        fraction(self.min_accuracy, "monitoring.min_accuracy")
        fraction(self.max_error_rate, "monitoring.max_error_rate")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MonitoringSpec:
        return cls(**strict(cls, data, "monitoring"))


LOOP_TRIGGERS = ("first", "drift", "agreement", "accuracy", "new_rows", "schedule")
"""What may start a retrain: ``first`` (traffic but no champion yet), ``drift`` (an open
drift alarm), ``agreement`` / ``accuracy`` (below the monitoring floor), ``new_rows``
(``loop.new_rows`` teacher-labelled rows since the champion's training), ``schedule``
(``loop.schedule_s`` since the champion's training)."""


@dataclass(frozen=True)
class LoopSpec:
    """What ``niche loop`` may do for a task, on its own.

    ``enabled``: whether the loop touches the task at all. ``triggers``: which of
    :data:`LOOP_TRIGGERS` start a retrain. ``min_rows``: the fewest labelled records (teacher
    or gold) a distilled dataset needs. ``new_rows``: the ``new_rows`` trigger's count.
    ``cooldown_s``: the least time between two trainings of the task; ``max_retrains_per_day``:
    trainings in any 24 hours. ``schedule_s``: the ``schedule`` trigger's period (None: off).
    ``since``: how far back distillation reads (a duration; None: all captured traffic).

        >>> LoopSpec(min_rows=300, triggers=("first", "drift")).cooldown_s
        3600.0
    """

    enabled: bool = True
    triggers: tuple[str, ...] = ("first", "drift", "agreement", "accuracy", "new_rows")
    min_rows: int = 200
    new_rows: int = 1000
    cooldown_s: float = 3600.0
    max_retrains_per_day: int = 6
    schedule_s: float | None = None
    since: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValidationError(f"loop.enabled must be true or false, got {self.enabled!r}")
        triggers = self.triggers
        if isinstance(triggers, str) or not all(isinstance(t, str) for t in triggers):
            raise ValidationError(
                f"loop.triggers must be a list of {', '.join(LOOP_TRIGGERS)}, got {triggers!r}"
            )
        unknown = sorted(set(triggers) - set(LOOP_TRIGGERS))
        if unknown:
            raise ValidationError(
                f"loop.triggers: unknown trigger(s) {', '.join(unknown)}; known: "
                f"{', '.join(LOOP_TRIGGERS)}"
            )
        object.__setattr__(self, "triggers", tuple(dict.fromkeys(triggers)))
        _count(self.min_rows, "loop.min_rows", minimum=2)
        _count(self.new_rows, "loop.new_rows", minimum=1)
        _count(self.max_retrains_per_day, "loop.max_retrains_per_day", minimum=0)
        non_negative(self.cooldown_s, "loop.cooldown_s")
        object.__setattr__(self, "cooldown_s", float(self.cooldown_s))
        if self.schedule_s is not None:
            if isinstance(self.schedule_s, bool) or not isinstance(self.schedule_s, int | float):
                raise ValidationError(f"loop.schedule_s must be seconds, got {self.schedule_s!r}")
            if self.schedule_s <= 0:
                raise ValidationError(f"loop.schedule_s must be positive, got {self.schedule_s}")
        if self.since is not None and not (
            isinstance(self.since, str) and _DURATION.match(self.since)
        ):
            raise ValidationError(f"loop.since must be a duration such as '7d', got {self.since!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopSpec:
        data = dict(strict(cls, data, "loop"))
        if isinstance(data.get("triggers"), list):
            data["triggers"] = tuple(data["triggers"])
        return cls(**data)
