"""The registry: one store per concept behind one :class:`Registry` to build, pass and pickle.

    >>> registry = Registry()  # NICHE_DATABASE_URL; migrated on first use
    >>> registry.tasks.ensure(TaskSpec(name="banking77"))
    >>> record = registry.models.register("banking77", kind="text", artifact_digest=digest,
    ...     artifact_uri=uri, dataset_fingerprint=fp, lineage={})
    >>> registry.promotions.promote("banking77", "champion", record.version, decision=result)
    >>> [e.action for e in registry.audit.events("banking77")]

``registry.tasks``, ``.datasets``, ``.models``, ``.promotions``, ``.keys``, ``.traffic``,
``.audit`` and ``.monitoring`` share one database; every method is one transaction returning frozen records, and
every change writes its audit event in that transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from niche.registry import db
from niche.registry.records import (
    AliasEventRecord,
    AuditEventRecord,
    DatasetRecord,
    EvaluationRecord,
    GateRecord,
    KeyRecord,
    ModelVersionRecord,
    PromotionRecord,
    StoredTrafficRecord,
    TaskRecord,
    TrafficRecord,
)
from niche.registry.since import parse_since
from niche.registry.stores import (
    GUARDED_ALIASES,
    UNSET,
    AuditStore,
    Database,
    DatasetStore,
    KeyStore,
    LeaseStore,
    ModelStore,
    MonitoringStore,
    PromotionStore,
    TaskStore,
    TrafficStore,
    default_actor,
)
from niche.registry.stores.datasets import MIN_PREFIX
from niche.registry.stores.keys import KEY_PREFIX_CHARS, KEY_SCOPES, SECRET_PREFIX
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.registry.artifacts import ArtifactStore

__all__ = [
    "GUARDED_ALIASES",
    "KEY_PREFIX_CHARS",
    "KEY_SCOPES",
    "MIN_PREFIX",
    "SECRET_PREFIX",
    "UNSET",
    "AliasEventRecord",
    "AuditEventRecord",
    "DatasetRecord",
    "EvaluationRecord",
    "GateRecord",
    "KeyRecord",
    "ModelVersionRecord",
    "PromotionRecord",
    "Registry",
    "StoredTrafficRecord",
    "TaskRecord",
    "TrafficRecord",
    "default_actor",
    "parse_since",
]


class Registry:
    """Tasks, dataset versions, model versions, aliases and gates, API keys, traffic, audit.

    ``url`` defaults to ``NICHE_DATABASE_URL`` from ``settings``; ``clock`` returns aware
    datetimes (default: now, UTC); ``actor`` is who changes are recorded as when a call does
    not say (default ``cli:<user>``); ``artifacts`` holds dataset files (default: the store
    named by ``NICHE_ARTIFACTS_URL``). Nothing is connected until first use, which also
    applies pending migrations. Build one per process (it is pickled as its arguments only).

        >>> registry = Registry("postgresql+psycopg://niche@db/niche")
        >>> registry.models.get("banking77", "champion").version
        3
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Callable[[], datetime] | None = None,
        actor: str | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.url = url
        self.settings = settings
        self.clock = clock
        self.actor = actor
        self.artifacts = artifacts
        self.database = Database(url, settings=settings, clock=clock)
        self.tasks = TaskStore(self.database, actor=actor)
        self.datasets = DatasetStore(
            self.database, actor=actor, artifacts=artifacts, settings=settings
        )
        self.models = ModelStore(self.database, actor=actor)
        self.promotions = PromotionStore(self.database, actor=actor)
        self.keys = KeyStore(self.database, actor=actor)
        self.traffic = TrafficStore(self.database, actor=actor)
        self.audit = AuditStore(self.database, actor=actor)
        self.leases = LeaseStore(self.database, actor=actor)
        self.monitoring = MonitoringStore(self.database, actor=actor)

    def __repr__(self) -> str:
        return f"Registry({db.mask_url(self.database_url)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "settings": self.settings,
            "clock": self.clock,
            "actor": self.actor,
            "artifacts": self.artifacts,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["url"],
            settings=state["settings"],
            clock=state["clock"],
            actor=state.get("actor"),
            artifacts=state.get("artifacts"),
        )

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def database_url(self) -> str:
        """The URL in use: ``url``, else ``NICHE_DATABASE_URL``."""
        return self.database.database_url

    def upgrade(self) -> str:
        """Apply pending migrations (a no-op when up to date); return the head revision.

        >>> Registry().upgrade()
        '0009'
        """
        return self.database.upgrade()

    def close(self) -> None:
        """Close pooled connections; the next call reconnects."""
        self.database.close()

    def referenced_digests(self) -> set[str]:
        """Artifact digests of every model version and dataset version (what gc keeps).

        >>> store.gc(registry.referenced_digests())
        """
        return self.models.artifact_digests() | self.datasets.artifact_digests()
