"""Who changed what, when: the registry's audit events, for ``niche audit``.

    >>> [e.to_dict()["action"] for e in audit_events("banking77", since="1d")]
    ['task.edited', 'alias.moved']

Written against the registry's audit store (``registry.audit.events(task, since=...)``),
which lands with the registry's stores; until then this module is not wired into the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from niche.settings import Settings
from niche.workflows._context import resolve
from niche.workflows.traffic import parse_since

if TYPE_CHECKING:
    from niche.registry import Registry

__all__ = ["AuditEvent", "audit_events"]


class AuditEvent(Protocol):
    """One audit record: ``to_dict()`` gives id, at, actor, action, task, subject, detail."""

    def to_dict(self) -> dict[str, Any]: ...


def audit_events(
    task: str | None = None,
    settings: Settings | None = None,
    *,
    since: str | None = None,
    registry: Registry | None = None,
) -> Sequence[AuditEvent]:
    """Audit events (of ``task``, after ``since``: ISO-8601 or ``30m``, ``2d``), oldest first.

    >>> audit_events(since="1h")[0].to_dict()["actor"]
    'cli:ana'
    """
    start = parse_since(since)
    _, registry = resolve(settings, registry)
    # The audit store lands with the registry's stores; drop this ignore then (mypy will ask).
    events: Sequence[AuditEvent] = registry.audit.events(task, since=start)  # type: ignore[attr-defined]
    return events
