"""Requests the gateway captured: which of them, how many, and which answer each client got.

>>> records = list_traffic("banking77", since="1h")
>>> [answered(r) for r in records]
['card_arrival', 'lost_or_stolen_card']
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from niche.settings import Settings
from niche.workflows._context import resolve

if TYPE_CHECKING:
    from niche.registry import Registry, StoredTrafficRecord

__all__ = ["GENERAL_ROUTES", "answered", "count_traffic", "list_traffic", "parse_since"]

GENERAL_ROUTES = frozenset({"general", "general-fallback", "passthrough"})
"""Routes on which the client got the general model's answer rather than the specialist's."""


def answered(record: StoredTrafficRecord) -> str | None:
    """The answer the client got: the general model's on general routes, else the specialist's.

    >>> answered(record)  # route "general-fallback": the specialist was not confident enough
    'refund_not_showing_up'
    """
    if record.route in GENERAL_ROUTES:
        return record.general_label or record.general_answer
    return record.specialist_label


def parse_since(
    text: str | None, *, clock: Callable[[], datetime] | None = None
) -> datetime | None:
    """``--since`` as a time: ISO-8601, or a duration back from ``clock()`` (``30m``, ``2d``).

    >>> parse_since("1h", clock=lambda: datetime(2026, 3, 1, 12, tzinfo=UTC)).isoformat()
    '2026-03-01T11:00:00+00:00'
    """
    from niche.registry.since import parse_since as registry_parse_since

    if text is None:
        return None
    now = (clock or _utcnow)()
    return registry_parse_since(text, now)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def list_traffic(
    task: str | None = None,
    settings: Settings | None = None,
    *,
    since: str | None = None,
    limit: int | None = None,
    registry: Registry | None = None,
) -> list[StoredTrafficRecord]:
    """Captured requests (of ``task``, after ``since``, the latest ``limit``), oldest first.

    >>> list_traffic("banking77", since="30m", limit=10)
    """
    start = parse_since(since)
    _, registry = resolve(settings, registry)
    return registry.traffic.query(task, since=start, limit=limit)


def count_traffic(
    task: str | None = None,
    settings: Settings | None = None,
    *,
    since: str | None = None,
    registry: Registry | None = None,
) -> int:
    """How many requests were captured (of ``task``, after ``since``).

    >>> count_traffic(since="1d")
    1204
    """
    start = parse_since(since)
    _, registry = resolve(settings, registry)
    return registry.traffic.count(task, since=start)
