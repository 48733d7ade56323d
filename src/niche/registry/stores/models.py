"""Model versions, their evaluations and lineage.

>>> record = registry.models.register("banking77", kind="text", artifact_digest=digest,
...     artifact_uri=uri, dataset_fingerprint=fp, lineage=trained.lineage)
>>> registry.models.get("banking77", "champion").version
3
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from niche.registry.models import (
    DatasetVersionRow,
    EvaluationRow,
    GateDecisionRow,
    ModelVersionRow,
    TaskRow,
)
from niche.registry.records import EvaluationRecord, GateRecord, ModelVersionRecord
from niche.registry.stores.audit import write_event
from niche.registry.stores.base import Store, aliases_of, model_row, task_row
from niche.registry.stores.datasets import dataset_record
from niche.registry.validation import json_value, nonempty

__all__ = ["ModelStore", "gate_record", "model_record"]


def model_record(row: ModelVersionRow, task: str) -> ModelVersionRecord:
    return ModelVersionRecord(
        task=task,
        version=row.version,
        kind=row.kind,
        artifact_digest=row.artifact_digest,
        artifact_uri=row.artifact_uri,
        dataset_fingerprint=row.dataset_fingerprint,
        lineage=row.lineage,
        created_at=row.created_at,
    )


def evaluation_record(row: EvaluationRow, task: str, version: int) -> EvaluationRecord:
    return EvaluationRecord(
        id=row.id,
        task=task,
        version=version,
        dataset_fingerprint=row.dataset_fingerprint,
        split=row.split,
        metrics=row.metrics,
        general=row.general,
        comparison=row.comparison,
        created_at=row.created_at,
        usage=row.usage,
        general_usage=row.general_usage,
    )


def gate_record(row: GateDecisionRow, task: str, version: int) -> GateRecord:
    return GateRecord(
        id=row.id,
        task=task,
        version=version,
        alias=row.alias,
        passed=row.passed,
        forced=row.forced,
        why=row.why,
        checks=row.checks,
        actor=row.actor,
        at=row.at,
        spec_fingerprint=row.spec_fingerprint,
    )


class ModelStore(Store):
    """The registry's model versions and their evaluations (``registry.models``)."""

    def register(
        self,
        task: str,
        *,
        kind: str,
        artifact_digest: str,
        artifact_uri: str,
        dataset_fingerprint: str,
        lineage: Mapping[str, Any],
        actor: str | None = None,
    ) -> ModelVersionRecord:
        """Register the task's next model version (1, 2, 3 …: dense, also under concurrency).

        Store the artifact first: a crash before this call's commit leaves an unreferenced
        artifact, never a version without one.

            >>> registry.models.register("banking77", kind="text", artifact_digest=digest,
            ...     artifact_uri=uri, dataset_fingerprint=fp, lineage=trained.lineage).version
            4
        """
        values = {
            "kind": nonempty(kind, "kind"),
            "artifact_digest": nonempty(artifact_digest, "artifact_digest"),
            "artifact_uri": nonempty(artifact_uri, "artifact_uri"),
            "dataset_fingerprint": nonempty(dataset_fingerprint, "dataset_fingerprint"),
            "lineage": json_value(dict(lineage), "lineage"),
        }
        who = self._actor(actor)
        now = self.database.now()
        with self.database.session(write=True) as session:
            # The row lock queues concurrent registrations for this task (PostgreSQL); on
            # SQLite the IMMEDIATE transaction already holds the database's write lock.
            task_ = task_row(session, task, lock=True)
            latest = session.scalar(
                select(func.max(ModelVersionRow.version)).where(ModelVersionRow.task_id == task_.id)
            )
            row = ModelVersionRow(
                task_id=task_.id, version=(latest or 0) + 1, created_at=now, **values
            )
            session.add(row)
            write_event(
                session,
                at=now,
                actor=who,
                action="model.registered",
                task=task_.name,
                subject=f"v{row.version}",
                detail={
                    "version": row.version,
                    "kind": row.kind,
                    "artifact_digest": row.artifact_digest,
                    "dataset_fingerprint": row.dataset_fingerprint,
                },
            )
            session.flush()
            return model_record(row, task_.name)

    def get(self, task: str, ref: int | str) -> ModelVersionRecord:
        """A model version by number (``3``, ``"3"``, ``"v3"``) or alias (``"champion"``).

        >>> registry.models.get("banking77", "champion").artifact_digest
        """
        with self.database.session() as session:
            task_ = task_row(session, task)
            return model_record(model_row(session, task_, ref), task_.name)

    def all(self, task: str | None = None) -> list[ModelVersionRecord]:
        """Model versions of ``task`` (or of every task), by task name then version."""
        with self.database.session() as session:
            query = (
                select(ModelVersionRow, TaskRow.name)
                .join(TaskRow, ModelVersionRow.task_id == TaskRow.id)
                .order_by(TaskRow.name, ModelVersionRow.version)
            )
            if task is not None:
                query = query.where(ModelVersionRow.task_id == task_row(session, task).id)
            return [model_record(row, name) for row, name in session.execute(query)]

    def lineage(self, task: str, version: int | str) -> dict[str, Any]:
        """Where a model version came from and how it fared, as one JSON-ready dict.

        ``model`` → ``dataset`` (fingerprint, source, curation report, rows per split, or
        ``registered: False`` when only its fingerprint is known) → ``evaluations``, plus the
        ``aliases`` pointing at it now and its ``gates``.

            >>> registry.models.lineage("banking77", 3)["dataset"]["fingerprint"]
        """
        with self.database.session() as session:
            task_ = task_row(session, task)
            row = model_row(session, task_, version)
            dataset_row = session.scalars(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.fingerprint == row.dataset_fingerprint
                )
            ).one_or_none()
            dataset: dict[str, Any] = (
                {"registered": True, **dataset_record(dataset_row).to_dict()}
                if dataset_row is not None
                else {"registered": False, "fingerprint": row.dataset_fingerprint}
            )
            evaluations = session.scalars(
                select(EvaluationRow)
                .where(EvaluationRow.model_version_id == row.id)
                .order_by(EvaluationRow.id)
            )
            gates = session.scalars(
                select(GateDecisionRow)
                .where(GateDecisionRow.model_version_id == row.id)
                .order_by(GateDecisionRow.id)
            )
            aliases = sorted(
                name for name, v in aliases_of(session, task_).items() if v == row.version
            )
            return {
                "task": task_.name,
                "model": model_record(row, task_.name).to_dict(),
                "dataset": dataset,
                "evaluations": [
                    evaluation_record(e, task_.name, row.version).to_dict() for e in evaluations
                ],
                "aliases": aliases,
                "gates": [gate_record(g, task_.name, row.version).to_dict() for g in gates],
            }

    def artifact_digests(self) -> set[str]:
        """Artifact digests of every registered model version."""
        with self.database.session() as session:
            return set(session.scalars(select(ModelVersionRow.artifact_digest).distinct()))

    # -- evaluations -----------------------------------------------------------------------

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
        usage: Mapping[str, Any] | None = None,
        general_usage: Mapping[str, Any] | None = None,
    ) -> EvaluationRecord:
        """Store an evaluation of a model version (and the general model on the same rows).

        ``usage`` and ``general_usage`` are what each side consumed (``{"compute_s",
        "input_tokens", "output_tokens", "rows"}``), the costs' source.

        >>> registry.models.record_evaluation("banking77", 3, dataset_fingerprint=fp,
        ...     split="test", metrics=report.specialist.to_dict(),
        ...     general=report.general.to_dict(), comparison=report.comparison.to_dict())
        """
        values = {
            "dataset_fingerprint": nonempty(dataset_fingerprint, "dataset_fingerprint"),
            "split": nonempty(split, "split"),
            "metrics": json_value(dict(metrics), "metrics"),
            "general": json_value(dict(general), "general") if general is not None else None,
            "comparison": (
                json_value(dict(comparison), "comparison") if comparison is not None else None
            ),
            "usage": json_value(dict(usage), "usage") if usage is not None else None,
            "general_usage": (
                json_value(dict(general_usage), "general_usage")
                if general_usage is not None
                else None
            ),
        }
        now = self.database.now()
        with self.database.session(write=True) as session:
            task_ = task_row(session, task)
            model = model_row(session, task_, version)
            row = EvaluationRow(model_version_id=model.id, created_at=now, **values)
            session.add(row)
            session.flush()
            return evaluation_record(row, task_.name, model.version)

    def evaluations(self, task: str, version: int | str) -> list[EvaluationRecord]:
        """Evaluations of a model version, oldest first."""
        with self.database.session() as session:
            task_ = task_row(session, task)
            model = model_row(session, task_, version)
            rows = session.scalars(
                select(EvaluationRow)
                .where(EvaluationRow.model_version_id == model.id)
                .order_by(EvaluationRow.id)
            )
            return [evaluation_record(row, task_.name, model.version) for row in rows]
