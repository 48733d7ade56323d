"""Monitoring checks and the alerts they open and resolve (``registry.monitoring``).

    >>> report, opened, resolved = registry.monitoring.record(
    ...     "banking77", model_version=3, window={"rows": 500}, signals=signals, alarm=True)
    >>> [a.signal for a in opened]
    ['input_drift']
    >>> registry.monitoring.latest_all()["banking77"].alarm
    True

A check is stored in one transaction with the alerts it changes: an alarming signal opens an
alert unless one is open already for that task and signal; a signal back in bounds (not
alarming, and computed on enough data) resolves it. Each alert change writes its audit event
in the same transaction. Checks of one task serialise on the task's row (PostgreSQL's
``SELECT … FOR UPDATE``; SQLite's write lock), so two checks racing never open two alerts
for one signal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import aliased

from niche.errors import ValidationError
from niche.registry.models import AlertRow, DriftReportRow, TaskRow
from niche.registry.records import AlertRecord, DriftReportRecord
from niche.registry.stores.audit import write_event
from niche.registry.stores.base import Store, oldest_first, task_row
from niche.registry.validation import aware, json_value, limit_count

__all__ = ["ALERT_STATES", "MonitoringStore", "is_insufficient"]

ALERT_STATES: Final = ("open", "resolved")
"""The states an alert can be in."""

_SIGNAL_NAME_CHARS: Final = 64  # alerts.signal is String(64)


def is_insufficient(signal: Mapping[str, Any]) -> bool:
    """Whether ``signal`` (a stored signal dict) was computed on too little data to judge:
    it says so in its ``detail`` (``insufficient``), or it has neither a statistic nor a
    p-value nor an interval. Such a signal neither opens nor resolves an alert.

        >>> is_insufficient({"name": "input_drift", "statistic": None, "p_value": None,
        ...               "interval": None, "alarm": False})
        True
    """
    detail = signal.get("detail")
    if isinstance(detail, Mapping) and detail.get("insufficient"):
        return True
    return all(signal.get(key) is None for key in ("statistic", "p_value", "interval"))


def _report_record(row: DriftReportRow) -> DriftReportRecord:
    return DriftReportRecord(
        id=row.id,
        task=row.task,
        model_version=row.model_version,
        at=row.at,
        window=row.window,
        signals=row.signals,
        alarm=row.alarm,
    )


def _alert_record(row: AlertRow) -> AlertRecord:
    return AlertRecord(
        id=row.id,
        task=row.task,
        signal=row.signal,
        model_version=row.model_version,
        state=row.state,
        opened_at=row.opened_at,
        resolved_at=row.resolved_at,
        report_id=row.report_id,
        detail=row.detail,
    )


def _checked_signals(signals: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``signals`` as JSON-ready dicts; each needs a unique ``name`` and a boolean ``alarm``."""
    if isinstance(signals, str | bytes | Mapping) or not isinstance(signals, Sequence):
        raise ValidationError(f"signals must be a list of signal dicts, got {signals!r}")
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, signal in enumerate(signals):
        if not isinstance(signal, Mapping):
            raise ValidationError(f"signals[{index}] must be a dict, got {signal!r}")
        name = signal.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > _SIGNAL_NAME_CHARS:
            raise ValidationError(
                f"signals[{index}].name must be a non-empty string of at most "
                f"{_SIGNAL_NAME_CHARS} characters, got {name!r}"
            )
        if name in seen:
            raise ValidationError(f"signals[{index}]: signal {name!r} is listed twice")
        seen.add(name)
        if not isinstance(signal.get("alarm"), bool):
            raise ValidationError(
                f"signals[{index}] ({name}): alarm must be true or false, got "
                f"{signal.get('alarm')!r}"
            )
        checked.append(json_value(dict(signal), f"signals[{index}] ({name})"))
    return checked


def _alert_detail(signal: Mapping[str, Any]) -> dict[str, Any]:
    """What an alert keeps of the signal that opened or resolved it (its numbers)."""
    keys = ("statistic", "p_value", "interval", "threshold", "method", "n")
    return {key: signal.get(key) for key in keys if key in signal}


class MonitoringStore(Store):
    """Drift reports and alerts (``registry.monitoring``)."""

    def record(
        self,
        task: str,
        *,
        model_version: int | None,
        window: Mapping[str, Any],
        signals: Sequence[Mapping[str, Any]],
        alarm: bool,
        at: datetime | None = None,
        actor: str | None = None,
    ) -> tuple[DriftReportRecord, list[AlertRecord], list[AlertRecord]]:
        """Store one check of ``task`` and the alerts it opens and resolves, in one
        transaction; return (report, opened, resolved).

        ``signals`` are dicts, each with at least ``name`` and ``alarm`` (as
        :meth:`niche.monitoring.Signal.to_dict` gives them); ``at`` defaults to the
        registry clock's now.

            >>> report, opened, resolved = registry.monitoring.record("banking77",
            ...     model_version=3, window={"rows": 500}, signals=signals, alarm=True)
        """
        if model_version is not None and (
            isinstance(model_version, bool) or not isinstance(model_version, int)
        ):
            raise ValidationError(f"model_version must be a version number, got {model_version!r}")
        if not isinstance(alarm, bool):
            raise ValidationError(f"alarm must be true or false, got {alarm!r}")
        if not isinstance(window, Mapping):
            raise ValidationError(f"window must be a dict, got {window!r}")
        checked = _checked_signals(signals)
        window_value = json_value(dict(window), "window")
        who = self._actor(actor)
        now = aware(at, "at") if at is not None else self.database.now()
        with self.database.session(write=True) as session:
            # Checks of one task queue here, so the open alerts read below stay true.
            task_ = task_row(session, task, lock=True)
            report = DriftReportRow(
                task=task_.name,
                model_version=model_version,
                at=now,
                window=window_value,
                signals=checked,
                alarm=alarm,
            )
            session.add(report)
            session.flush()
            open_rows = {
                row.signal: row
                for row in session.scalars(
                    select(AlertRow)
                    .where(AlertRow.task == task_.name, AlertRow.state == "open")
                    .order_by(AlertRow.id)
                )
            }
            opened: list[AlertRow] = []
            resolved: list[AlertRow] = []
            for signal in checked:
                name = signal["name"]
                current = open_rows.get(name)
                if signal["alarm"] and current is None:
                    row = AlertRow(
                        task=task_.name,
                        signal=name,
                        model_version=model_version,
                        state="open",
                        opened_at=now,
                        resolved_at=None,
                        report_id=report.id,
                        detail=_alert_detail(signal),
                    )
                    session.add(row)
                    opened.append(row)
                elif not signal["alarm"] and current is not None and not is_insufficient(signal):
                    current.state = "resolved"
                    current.resolved_at = now
                    resolved.append(current)
            session.flush()
            for action, rows in (("alert.opened", opened), ("alert.resolved", resolved)):
                for row in rows:
                    write_event(
                        session,
                        at=now,
                        actor=who,
                        action=action,
                        task=task_.name,
                        subject=row.signal,
                        detail={
                            "alert_id": row.id,
                            "model_version": model_version,
                            "report_id": report.id,
                            **next(_alert_detail(s) for s in checked if s["name"] == row.signal),
                        },
                    )
            return (
                _report_record(report),
                [_alert_record(row) for row in opened],
                [_alert_record(row) for row in resolved],
            )

    def latest(self, task: str) -> DriftReportRecord | None:
        """``task``'s newest stored check, or None when it has none.

        >>> registry.monitoring.latest("banking77").alarm
        False
        """
        with self.database.session() as session:
            row = session.scalars(
                select(DriftReportRow)
                .where(DriftReportRow.task == task)
                .order_by(DriftReportRow.at.desc(), DriftReportRow.id.desc())
                .limit(1)
            ).one_or_none()
            return _report_record(row) if row is not None else None

    def latest_all(self) -> dict[str, DriftReportRecord]:
        """The newest check of every task that has one, by task name, in one query.

        Read through the ``(task, at)`` index once per task, so it stays cheap however many
        reports are stored (the gateway reads it every refresh).

            >>> registry.monitoring.latest_all()["banking77"].signals[0]["name"]
            'input_drift'
        """
        inner = aliased(DriftReportRow)
        newest = (
            select(inner.id)
            .where(inner.task == TaskRow.name)
            .order_by(inner.at.desc(), inner.id.desc())
            .limit(1)
            .correlate(TaskRow)
            .scalar_subquery()
        )
        query = (
            select(DriftReportRow)
            .select_from(TaskRow)
            .join(DriftReportRow, DriftReportRow.id == newest)
            .order_by(TaskRow.name)
        )
        with self.database.session() as session:
            return {row.task: _report_record(row) for row in session.scalars(query)}

    def reports(
        self, task: str | None = None, *, since: datetime | None = None, limit: int | None = None
    ) -> list[DriftReportRecord]:
        """Stored checks of ``task`` (or all) at or after ``since``, oldest first; with
        ``limit``, the newest ``limit`` of them (still oldest first).

            >>> [r.alarm for r in registry.monitoring.reports("banking77", limit=10)]
        """
        limit_count(limit)
        query = select(DriftReportRow)
        if task is not None:
            query = query.where(DriftReportRow.task == task)
        if since is not None:
            query = query.where(DriftReportRow.at >= aware(since, "since"))
        with self.database.session() as session:
            rows = oldest_first(session, query, DriftReportRow.at, DriftReportRow.id, limit)
            return [_report_record(row) for row in rows]

    def alerts(
        self,
        task: str | None = None,
        *,
        state: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[AlertRecord]:
        """Alerts of ``task`` (or all) in ``state`` (``open`` or ``resolved``; None: both),
        opened at or after ``since``, oldest first; with ``limit``, the newest ``limit``.

            >>> [(a.signal, a.state) for a in registry.monitoring.alerts(state="open")]
            [('input_drift', 'open')]
        """
        limit_count(limit)
        if state is not None and state not in ALERT_STATES:
            raise ValidationError(
                f"alert state must be one of {', '.join(ALERT_STATES)}, got {state!r}",
                param="state",
            )
        query = select(AlertRow)
        if task is not None:
            query = query.where(AlertRow.task == task)
        if state is not None:
            query = query.where(AlertRow.state == state)
        if since is not None:
            query = query.where(AlertRow.opened_at >= aware(since, "since"))
        with self.database.session() as session:
            rows = oldest_first(session, query, AlertRow.opened_at, AlertRow.id, limit)
            return [_alert_record(row) for row in rows]
