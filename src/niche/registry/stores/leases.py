"""Leases: which loop holds a task, so two loops on one registry never retrain it at once.

    >>> lease = registry.leases.acquire("banking77", holder="loop:host:123", ttl_s=1800)
    >>> registry.leases.acquire("banking77", holder="loop:other:9", ttl_s=1800) is None
    True
    >>> registry.leases.release("banking77", holder="loop:host:123")
    True

A lease lapses by itself at ``expires_at`` (a crashed loop's lease is then taken over), so a
holder renews it between long steps. Every call is one write transaction whose outcome rests
on one conditional statement — an INSERT that does nothing on conflict, an UPDATE whose
``WHERE`` says "expired, or mine" — so of two callers racing for one task exactly one wins:
SQLite runs write transactions one at a time (``BEGIN IMMEDIATE``), and PostgreSQL re-checks
an UPDATE's ``WHERE`` on the row as the winner committed it. Times are the registry clock's.
"""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.orm import Session

from niche.errors import ValidationError
from niche.registry.models import LoopLeaseRow
from niche.registry.records import LeaseRecord
from niche.registry.stores.base import Store, insert_ignoring_conflict
from niche.registry.validation import nonempty

__all__ = ["LeaseStore"]

_HOLDER_CHARS = 200
_TASK_CHARS = 64


def _lease_record(row: LoopLeaseRow) -> LeaseRecord:
    return LeaseRecord(
        task=row.task, holder=row.holder, acquired_at=row.acquired_at, expires_at=row.expires_at
    )


def _ttl(ttl_s: float) -> timedelta:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s):
        raise ValidationError(f"ttl_s must be a finite number of seconds, got {ttl_s!r}")
    if ttl_s <= 0:
        raise ValidationError(f"ttl_s must be positive, got {ttl_s!r}")
    return timedelta(seconds=float(ttl_s))


def _bounded(value: str, what: str, most: int) -> str:
    nonempty(value, what)
    if len(value) > most:
        raise ValidationError(f"{what} must be at most {most} characters, got {len(value)}")
    return value


class LeaseStore(Store):
    """Leases on tasks (``registry.leases``): acquire, renew, release, get."""

    def acquire(self, task: str, *, holder: str, ttl_s: float) -> LeaseRecord | None:
        """Take ``task`` for ``holder`` for ``ttl_s`` seconds; None when someone else holds it.

        Granted when nobody holds the task, when its lease has expired (taken over), or when
        ``holder`` holds it already (then it is extended, keeping ``acquired_at``).

            >>> registry.leases.acquire("banking77", holder="loop:host:123", ttl_s=1800)
        """
        _bounded(task, "task", _TASK_CHARS)
        _bounded(holder, "holder", _HOLDER_CHARS)
        ttl = _ttl(ttl_s)
        with self.database.session(write=True) as session:
            now = self.database.now()
            values = {"task": task, "holder": holder, "acquired_at": now, "expires_at": now + ttl}
            if insert_ignoring_conflict(session, LoopLeaseRow, values, "task"):
                return self._read(session, task)
            taken = session.execute(
                update(LoopLeaseRow)
                .where(
                    LoopLeaseRow.task == task,
                    or_(LoopLeaseRow.expires_at <= now, LoopLeaseRow.holder == holder),
                )
                .values(
                    holder=holder,
                    acquired_at=case(
                        (LoopLeaseRow.holder == holder, LoopLeaseRow.acquired_at), else_=now
                    ),
                    expires_at=now + ttl,
                )
                .returning(LoopLeaseRow.task),
                execution_options={"synchronize_session": False},
            ).first()
            return self._read(session, task) if taken is not None else None

    def renew(self, task: str, *, holder: str, ttl_s: float) -> LeaseRecord | None:
        """Extend ``holder``'s lease on ``task`` to ``ttl_s`` seconds from now; None when
        ``holder`` no longer holds it (another loop took it over after it expired).

        A lease that expired but was taken by nobody is still ``holder``'s: nobody else can
        have worked on the task meanwhile, so it is renewed.

            >>> registry.leases.renew("banking77", holder="loop:host:123", ttl_s=1800)
        """
        _bounded(task, "task", _TASK_CHARS)
        _bounded(holder, "holder", _HOLDER_CHARS)
        ttl = _ttl(ttl_s)
        with self.database.session(write=True) as session:
            now = self.database.now()
            renewed = session.execute(
                update(LoopLeaseRow)
                .where(LoopLeaseRow.task == task, LoopLeaseRow.holder == holder)
                .values(expires_at=now + ttl)
                .returning(LoopLeaseRow.task),
                execution_options={"synchronize_session": False},
            ).first()
            return self._read(session, task) if renewed is not None else None

    def release(self, task: str, *, holder: str) -> bool:
        """Give ``task`` up; False when ``holder`` did not hold it (nothing changed).

        >>> registry.leases.release("banking77", holder="loop:host:123")
        True
        """
        _bounded(task, "task", _TASK_CHARS)
        _bounded(holder, "holder", _HOLDER_CHARS)
        with self.database.session(write=True) as session:
            released = session.execute(
                delete(LoopLeaseRow)
                .where(LoopLeaseRow.task == task, LoopLeaseRow.holder == holder)
                .returning(LoopLeaseRow.task),
                execution_options={"synchronize_session": False},
            ).first()
            return released is not None

    def get(self, task: str) -> LeaseRecord | None:
        """The lease stored for ``task``, expired or not (compare ``expires_at`` with now);
        None when none is.

            >>> registry.leases.get("banking77").holder
            'loop:host:123'
        """
        with self.database.session() as session:
            row = session.get(LoopLeaseRow, task)
            return _lease_record(row) if row is not None else None

    @staticmethod
    def _read(session: Session, task: str) -> LeaseRecord:
        row = session.scalars(
            select(LoopLeaseRow)
            .where(LoopLeaseRow.task == task)
            .execution_options(populate_existing=True)
        ).one()
        return _lease_record(row)
