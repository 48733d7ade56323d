"""Who changed what, when: the registry's audit events, for ``niche audit``.

    >>> [e.action for e in audit_events("banking77", since="1d")]
    ['task.updated', 'gate.decided', 'alias.moved']

Each event was written in the transaction of the change it records (a task created or
edited, a dataset or model version registered, a gate decided, an alias moved, a key created
or revoked), with the actor the change was made as.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from niche.settings import Settings
from niche.workflows._context import resolve
from niche.workflows.traffic import parse_since

if TYPE_CHECKING:
    from niche.registry import AuditEventRecord, Registry

__all__ = ["audit_events"]


def audit_events(
    task: str | None = None,
    settings: Settings | None = None,
    *,
    since: str | None = None,
    registry: Registry | None = None,
) -> list[AuditEventRecord]:
    """Audit events (of ``task``, after ``since``: ISO-8601 or ``30m``, ``2d``), oldest first.

    Events that name no task (a dataset registered, a key created) are listed only when
    ``task`` is not given.

    >>> audit_events(since="1h")[0].actor
    'cli:ana'
    """
    start = parse_since(since)
    _, registry = resolve(settings, registry)
    return registry.audit.events(task, since=start)
