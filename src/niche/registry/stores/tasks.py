"""Tasks: create, ensure, look up and edit, each change on the audit trail.

>>> registry.tasks.create(TaskSpec(name="banking77", labels=["a", "b"]))
>>> registry.tasks.update("banking77", sla={"latency_p95_ms": 20}, actor="cli:ana")
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from niche.errors import AlreadyExistsError, ValidationError
from niche.registry.models import TaskRow
from niche.registry.records import TaskRecord
from niche.registry.stores.audit import write_event
from niche.registry.stores.base import Store, insert_ignoring_conflict, task_row
from niche.registry.tasks import TaskSpec

__all__ = ["TaskStore", "task_record"]


def task_record(row: TaskRow) -> TaskRecord:
    return TaskRecord(
        name=row.name,
        spec=TaskSpec.from_dict(row.spec),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{field: {"from": old, "to": new}}`` for each top-level field that differs."""
    return {
        name: {"from": before.get(name), "to": after.get(name)}
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


class TaskStore(Store):
    """The registry's tasks (``registry.tasks``)."""

    def create(self, spec: TaskSpec, *, actor: str | None = None) -> TaskRecord:
        """Register a new task; :class:`~niche.errors.AlreadyExistsError` if the name is taken.

        >>> registry.tasks.create(TaskSpec(name="banking77", labels=["a", "b"]))
        """
        who = self._actor(actor)
        now = self.database.now()
        with self.database.session(write=True) as session:
            row = TaskRow(name=spec.name, spec=spec.to_dict(), created_at=now, updated_at=now)
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:
                raise AlreadyExistsError(
                    f"task {spec.name!r} exists already; change it with `niche tasks edit`"
                ) from exc
            self._created(session, row, who)
            return task_record(row)

    def ensure(self, spec: TaskSpec, *, actor: str | None = None) -> TaskRecord:
        """The task named ``spec.name``, created from ``spec`` when missing (safe under races).

        An existing task is returned as it is, and nothing is written.

            >>> registry.tasks.ensure(TaskSpec(name="banking77")).name
            'banking77'
        """
        who = self._actor(actor)
        now = self.database.now()
        values = {"name": spec.name, "spec": spec.to_dict(), "created_at": now, "updated_at": now}
        with self.database.session(write=True) as session:
            inserted = insert_ignoring_conflict(session, TaskRow, values, "name")
            row = task_row(session, spec.name)
            if inserted:
                self._created(session, row, who)
            return task_record(row)

    def get(self, name: str) -> TaskRecord:
        """The task ``name``; :class:`~niche.errors.TaskNotFoundError` lists the known ones."""
        with self.database.session() as session:
            return task_record(task_row(session, name))

    def all(self) -> list[TaskRecord]:
        """Every task, by name."""
        with self.database.session() as session:
            rows = session.scalars(select(TaskRow).order_by(TaskRow.name))
            return [task_record(row) for row in rows]

    def update(self, name: str, /, *, actor: str | None = None, **changes: Any) -> TaskRecord:
        """Change fields of a task's spec (``sla``/``general``/``serving`` accept partial dicts).

        The audit event lists each changed field with its old and new value; an edit that
        changes nothing writes nothing.

            >>> registry.tasks.update("banking77", sla={"latency_p95_ms": 20})
        """
        if "name" in changes and changes["name"] != name:
            raise ValidationError(
                f"task {name!r} cannot be renamed: versions, aliases and traffic refer to it"
            )
        who = self._actor(actor)
        now = self.database.now()
        with self.database.session(write=True) as session:
            row = task_row(session, name, lock=True)
            before = TaskSpec.from_dict(row.spec).to_dict()
            after = TaskSpec.from_dict(row.spec).with_changes(**changes).to_dict()
            changed = _changed(before, after)
            if not changed:
                return task_record(row)
            row.spec = after
            row.updated_at = now
            write_event(
                session,
                at=now,
                actor=who,
                action="task.updated",
                task=row.name,
                subject=row.name,
                detail={"changed": changed},
            )
            session.flush()
            return task_record(row)

    @staticmethod
    def _created(session: Any, row: TaskRow, actor: str) -> None:
        write_event(
            session,
            at=row.created_at,
            actor=actor,
            action="task.created",
            task=row.name,
            subject=row.name,
            detail={"spec": row.spec},
        )
