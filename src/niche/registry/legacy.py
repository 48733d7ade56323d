"""The registry's method names from before the stores: one-line delegations (issue 8).

    >>> registry.get_task("banking77") == registry.tasks.get("banking77")
    True

Callers move to ``registry.<store>.<verb>``; each name here goes once its last call site has.
Writers here act as the registry's default actor, except where the old name took ``actor``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from niche.registry.stores.promotions import UNSET, _HasToDict, _Unset

if TYPE_CHECKING:
    from niche.data.version import DatasetVersion
    from niche.registry.records import (
        AliasEventRecord,
        DatasetRecord,
        EvaluationRecord,
        GateRecord,
        KeyRecord,
        ModelVersionRecord,
        StoredTrafficRecord,
        TaskRecord,
        TrafficRecord,
    )
    from niche.registry.stores import (
        DatasetStore,
        KeyStore,
        ModelStore,
        PromotionStore,
        TaskStore,
        TrafficStore,
    )
    from niche.registry.tasks import TaskSpec

__all__ = ["LegacyNames"]


class LegacyNames:
    """Mixin of :class:`~niche.registry.Registry`: the old flat method names."""

    tasks: TaskStore
    datasets: DatasetStore
    models: ModelStore
    promotions: PromotionStore
    keys: KeyStore
    traffic: TrafficStore

    # -- legacy names: removed when call sites move (issue 8) --

    def create_task(self, spec: TaskSpec) -> TaskRecord:
        """``registry.tasks.create``."""
        return self.tasks.create(spec)

    def ensure_task(self, spec: TaskSpec) -> TaskRecord:
        """``registry.tasks.ensure``."""
        return self.tasks.ensure(spec)

    def get_task(self, name: str) -> TaskRecord:
        """``registry.tasks.get``."""
        return self.tasks.get(name)

    def list_tasks(self) -> list[TaskRecord]:
        """``registry.tasks.all``."""
        return self.tasks.all()

    def update_task(self, name: str, /, **changes: Any) -> TaskRecord:
        """``registry.tasks.update``."""
        return self.tasks.update(name, **changes)

    def register_dataset(
        self, version: DatasetVersion, *, uri: str | os.PathLike[str] | None = None
    ) -> DatasetRecord:
        """``registry.datasets.register_path``: records ``uri`` as given (no artifact store)."""
        return self.datasets.register_path(version, uri=uri)

    def get_dataset(self, ref: str) -> DatasetRecord:
        """``registry.datasets.get``."""
        return self.datasets.get(ref)

    def list_datasets(self) -> list[DatasetRecord]:
        """``registry.datasets.all``."""
        return self.datasets.all()

    def register_model(
        self,
        task: str,
        *,
        kind: str,
        artifact_digest: str,
        artifact_uri: str,
        dataset_fingerprint: str,
        lineage: Mapping[str, Any],
    ) -> ModelVersionRecord:
        """``registry.models.register``."""
        return self.models.register(
            task,
            kind=kind,
            artifact_digest=artifact_digest,
            artifact_uri=artifact_uri,
            dataset_fingerprint=dataset_fingerprint,
            lineage=lineage,
        )

    def get_model(self, task: str, ref: int | str) -> ModelVersionRecord:
        """``registry.models.get``."""
        return self.models.get(task, ref)

    def list_models(self, task: str | None = None) -> list[ModelVersionRecord]:
        """``registry.models.all``."""
        return self.models.all(task)

    def lineage(self, task: str, version: int | str) -> dict[str, Any]:
        """``registry.models.lineage``."""
        return self.models.lineage(task, version)

    def record_evaluation(
        self,
        task: str,
        version: int | str,
        *,
        dataset_fingerprint: str,
        split: str,
        metrics: Mapping[str, Any],
        general: Mapping[str, Any] | None = None,
        comparison: Mapping[str, Any] | None = None,
    ) -> EvaluationRecord:
        """``registry.models.record_evaluation``."""
        return self.models.record_evaluation(
            task,
            version,
            dataset_fingerprint=dataset_fingerprint,
            split=split,
            metrics=metrics,
            general=general,
            comparison=comparison,
        )

    def list_evaluations(self, task: str, version: int | str) -> list[EvaluationRecord]:
        """``registry.models.evaluations``."""
        return self.models.evaluations(task, version)

    def get_alias(self, task: str, alias: str) -> ModelVersionRecord | None:
        """``registry.promotions.get``."""
        return self.promotions.get(task, alias)

    def set_alias(
        self,
        task: str,
        alias: str,
        version: int | str,
        *,
        actor: str,
        reason: str | None = None,
        expected_current: int | _Unset | None = UNSET,
    ) -> AliasEventRecord:
        """``registry.promotions.move``."""
        return self.promotions.move(
            task, alias, version, actor=actor, reason=reason, expected_current=expected_current
        )

    def list_aliases(self, task: str) -> dict[str, int]:
        """``registry.promotions.aliases``."""
        return self.promotions.aliases(task)

    def alias_history(self, task: str, alias: str | None = None) -> list[AliasEventRecord]:
        """``registry.promotions.history``."""
        return self.promotions.history(task, alias)

    def aliased_models(self) -> dict[str, dict[str, ModelVersionRecord]]:
        """``registry.promotions.served``."""
        return self.promotions.served()

    def record_gate(
        self,
        task: str,
        version: int | str,
        *,
        alias: str,
        passed: bool,
        checks: Sequence[Mapping[str, Any] | _HasToDict],
        forced: bool = False,
        why: str | None = None,
        actor: str,
    ) -> GateRecord:
        """``registry.promotions.record_gate``."""
        return self.promotions.record_gate(
            task,
            version,
            alias=alias,
            passed=passed,
            checks=checks,
            forced=forced,
            why=why,
            actor=actor,
        )

    def gate_decisions(self, task: str) -> list[GateRecord]:
        """``registry.promotions.gates``."""
        return self.promotions.gates(task)

    def create_key(
        self, *, scope: str, budget_usd: float | None = None, name: str | None = None
    ) -> tuple[KeyRecord, str]:
        """``registry.keys.create``."""
        return self.keys.create(scope=scope, budget_usd=budget_usd, name=name)

    def verify_key(self, secret: str) -> KeyRecord | None:
        """``registry.keys.verify``."""
        return self.keys.verify(secret)

    def list_keys(self) -> list[KeyRecord]:
        """``registry.keys.all``."""
        return self.keys.all()

    def revoke_key(self, key_id_or_prefix: int | str) -> KeyRecord:
        """``registry.keys.revoke``."""
        return self.keys.revoke(key_id_or_prefix)

    def add_spend(self, key_id: int, usd: float) -> KeyRecord:
        """``registry.keys.add_spend``."""
        return self.keys.add_spend(key_id, usd)

    def record_traffic(self, records: Sequence[TrafficRecord]) -> int:
        """``registry.traffic.record``."""
        return self.traffic.record(records)

    def list_traffic(
        self, task: str | None = None, *, since: datetime | None = None, limit: int | None = None
    ) -> list[StoredTrafficRecord]:
        """``registry.traffic.query``."""
        return self.traffic.query(task, since=since, limit=limit)

    def count_traffic(self, task: str | None = None, *, since: datetime | None = None) -> int:
        """``registry.traffic.count``."""
        return self.traffic.count(task, since=since)
