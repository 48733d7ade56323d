"""The audit trail: every change to the registry, written in the transaction that makes it.

    >>> [(e.action, e.subject, e.actor) for e in registry.audit.events("banking77")]
    [('task.created', 'banking77', 'cli:ana'), ('model.registered', 'v1', 'cli:ana')]

Stores call :func:`write_event` inside their own session, so an event exists exactly when its
change was committed: a refused or failed change leaves neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from niche.errors import ValidationError
from niche.registry.models import AuditEventRow
from niche.registry.records import AuditEventRecord
from niche.registry.stores.base import Store, oldest_first
from niche.registry.validation import aware, json_value, limit_count

__all__ = ["ACTIONS", "DECISION_ACTIONS", "AuditStore", "write_event"]

ACTIONS: Final = (
    "task.created",
    "task.updated",
    "dataset.registered",
    "dataset.files_added",
    "model.registered",
    "alias.moved",
    "gate.decided",
    "key.created",
    "key.revoked",
    "traffic.labelled",
    "alert.opened",
    "alert.resolved",
    "loop.decided",
)
"""Every ``action`` an audit event can have."""

DECISION_ACTIONS: Final = ("loop.decided",)
"""The actions :meth:`AuditStore.record` writes: decisions made outside a registry change
(the loop's "retrained, because …" and "did nothing, because …")."""


def write_event(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    task: str | None = None,
    subject: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditEventRow:
    """Add an audit event to ``session``'s transaction (committed or rolled back with it)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")  # a bug in a store, not input
    row = AuditEventRow(
        at=at,
        actor=actor,
        action=action,
        task=task,
        subject=subject,
        detail=json_value(dict(detail or {}), "detail"),
    )
    session.add(row)
    return row


def event_record(row: AuditEventRow) -> AuditEventRecord:
    return AuditEventRecord(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        task=row.task,
        subject=row.subject,
        detail=row.detail,
    )


class AuditStore(Store):
    """Reads the audit trail (stores write it).

    >>> registry.audit.events(since=parse_since("1d", now))
    """

    def events(
        self, task: str | None = None, *, since: datetime | None = None, limit: int | None = None
    ) -> list[AuditEventRecord]:
        """Events of ``task`` (or all) at or after ``since``, oldest first.

        With ``limit``, the most recent ``limit`` of them (still oldest first).

            >>> registry.audit.events("banking77", limit=20)
        """
        limit_count(limit)
        query = select(AuditEventRow)
        if task is not None:
            query = query.where(AuditEventRow.task == task)
        if since is not None:
            query = query.where(AuditEventRow.at >= aware(since, "since"))
        with self.database.session() as session:
            rows = oldest_first(session, query, AuditEventRow.at, AuditEventRow.id, limit)
            return [event_record(row) for row in rows]

    def record(
        self,
        action: str,
        *,
        task: str | None = None,
        subject: str | None = None,
        detail: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> AuditEventRecord:
        """Write a decision that changed nothing in the registry by itself (one of
        :data:`DECISION_ACTIONS`), with its numbers in ``detail``.

            >>> registry.audit.record("loop.decided", task="banking77", subject="skip",
            ...     detail={"reason": "cooldown", "seconds_left": 1200.0}, actor="loop")
        """
        if action not in DECISION_ACTIONS:
            raise ValidationError(
                f"audit.record writes decisions ({', '.join(DECISION_ACTIONS)}), not {action!r}: "
                "changes write their own events"
            )
        with self.database.session(write=True) as session:
            row = write_event(
                session,
                at=self.database.now(),
                actor=self._actor(actor),
                action=action,
                task=task,
                subject=subject,
                detail=detail,
            )
            session.flush()
            return event_record(row)
