"""Drift and agreement over time: each task's stored monitoring checks (``niche monitor``,
the loop), as the points the report and the dashboard plot.

    >>> timelines(registry=registry)["banking77"][-1]["signals"]["agreement"]["statistic"]
    0.93

Each point is one stored check, oldest first: ``{"at", "model_version", "alarm",
"signals": {name: {"statistic", "p_value", "interval", "threshold", "alarm", "n"}}}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from niche.registry.stores.monitoring import is_insufficient

if TYPE_CHECKING:
    from niche.registry import DriftReportRecord, Registry

__all__ = ["timeline", "timelines"]

_FIELDS = ("statistic", "p_value", "interval", "threshold", "alarm", "n")


def timelines(
    *,
    registry: Registry,
    tasks: list[str] | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> dict[str, list[dict[str, Any]]]:
    """``{task: points}`` for ``tasks`` (default: every task with a stored check): the newest
    ``limit`` checks of each at or after ``since``, oldest first."""
    names = tasks if tasks is not None else sorted(registry.monitoring.latest_all())
    return {name: timeline(registry, name, since=since, limit=limit) for name in names}


def timeline(
    registry: Registry, task: str, *, since: datetime | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """One task's points (see the module)."""
    return [_point(r) for r in registry.monitoring.reports(task, since=since, limit=limit)]


def _point(report: DriftReportRecord) -> dict[str, Any]:
    signals = {
        str(s["name"]): {key: s.get(key) for key in _FIELDS}
        for s in report.signals
        if not is_insufficient(s)
    }
    return {
        "at": report.at.isoformat(),
        "model_version": report.model_version,
        "alarm": report.alarm,
        "signals": signals,
    }
