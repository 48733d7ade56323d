"""Remove stored artifacts that no registered model or dataset version references.

>>> result = collect_garbage(dry_run=True)
>>> result.removed
['9b1c…']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from niche.settings import Settings
from niche.workflows._context import resolve

if TYPE_CHECKING:
    from niche.registry import Registry

__all__ = ["GarbageCollected", "collect_garbage"]


@dataclass(frozen=True)
class GarbageCollected:
    """What was removed (in a dry run: would be): digests, and ``tmp/<name>`` of crashed puts."""

    removed: list[str]
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        """What ``niche gc --json`` prints."""
        return {"removed": self.removed, "dry_run": self.dry_run}


def collect_garbage(
    settings: Settings | None = None, *, dry_run: bool = False, registry: Registry | None = None
) -> GarbageCollected:
    """Delete every artifact no model or dataset version references (unless ``dry_run``).

    The referenced set is read before anything is deleted, so an artifact a concurrent
    registration has not committed yet may go: register again to store it again.

    >>> collect_garbage().removed
    []
    """
    from niche.registry.artifacts import ArtifactStore

    settings, registry = resolve(settings, registry)
    referenced = registry.referenced_digests()
    removed = ArtifactStore.from_settings(settings).gc(referenced, dry_run=dry_run)
    return GarbageCollected(removed=removed, dry_run=dry_run)
