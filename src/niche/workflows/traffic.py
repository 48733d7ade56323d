"""Requests the gateway captured: which of them, how many, which answer each client got;
pruning old ones; and what capture could not store (the dead-letter file).

>>> records = list_traffic("banking77", since="1h")
>>> [answered(r) for r in records]
['card_arrival', 'lost_or_stolen_card']
>>> prune_traffic(older_than="30d").deleted
120000
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from niche.errors import ConfigurationError, ValidationError
from niche.settings import Settings
from niche.workflows._context import resolve

if TYPE_CHECKING:
    from niche.registry import Registry, StoredTrafficRecord
    from niche.registry.deadletters import DeadLetter

__all__ = [
    "GENERAL_ROUTES",
    "PrunedTraffic",
    "answered",
    "count_traffic",
    "dead_letters",
    "list_traffic",
    "parse_since",
    "prune_traffic",
]

PRUNE_BATCH: Final = 10_000
"""Records deleted per transaction by :func:`prune_traffic` unless told otherwise."""

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


@dataclass(frozen=True)
class PrunedTraffic:
    """What :func:`prune_traffic` deleted: records from before ``before``, ``deleted`` of them.

    >>> prune_traffic(older_than="30d").to_dict()
    {'before': '2026-02-01T12:00:00+00:00', 'deleted': 120000, 'batch_size': 10000}
    """

    before: datetime
    deleted: int
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``before`` as ISO-8601)."""
        return {
            "before": self.before.isoformat(),
            "deleted": self.deleted,
            "batch_size": self.batch_size,
        }


def prune_traffic(
    settings: Settings | None = None,
    *,
    older_than: str | None = None,
    batch_size: int = PRUNE_BATCH,
    registry: Registry | None = None,
    clock: Callable[[], datetime] | None = None,
) -> PrunedTraffic:
    """Delete captured requests older than ``older_than`` (``30d``, or an ISO time), in
    batches of ``batch_size``; without it, older than ``NICHE_TRAFFIC_RETENTION_DAYS``.

    >>> prune_traffic(older_than="30d", batch_size=10_000).deleted
    120000
    """
    from niche.registry.since import parse_since as registry_parse_since

    settings, registry = resolve(settings, registry)
    now = (clock or _utcnow)()
    if older_than is None:
        days = settings.get("NICHE_TRAFFIC_RETENTION_DAYS")
        if days is None:
            raise ValidationError(
                "say how old the records to delete are (--older-than 30d), or set "
                "NICHE_TRAFFIC_RETENTION_DAYS",
                param="older_than",
            )
        if days < 1:
            raise ConfigurationError(
                f"NICHE_TRAFFIC_RETENTION_DAYS must be at least 1, got {days!r}",
                setting="NICHE_TRAFFIC_RETENTION_DAYS",
            )
        older_than = f"{days}d"
    try:
        before = registry_parse_since(older_than, now)
    except ValidationError:
        raise ValidationError(
            f"--older-than {older_than!r} is neither a duration like 30d, 12h or 1w nor an "
            "ISO-8601 time (2026-03-01T00:00:00Z)",
            param="older_than",
        ) from None
    deleted = registry.traffic.prune(before, batch_size=batch_size)
    return PrunedTraffic(before=before, deleted=deleted, batch_size=batch_size)


def dead_letters(settings: Settings | None = None, *, limit: int | None = None) -> list[DeadLetter]:
    """What capture could not store, oldest first (the newest ``limit``), from the dead-letter
    file in ``NICHE_TRAFFIC_DEAD_LETTER_DIR``.

    >>> [letter.reason for letter in dead_letters(limit=10)]
    ['data-error']
    """
    from niche.registry.deadletters import DeadLetterFile

    settings = settings or Settings()
    return DeadLetterFile(Path(settings.get("NICHE_TRAFFIC_DEAD_LETTER_DIR"))).read(limit=limit)
