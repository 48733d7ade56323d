"""The registry: tasks, dataset versions, model versions, evaluations, aliases and gates.

    >>> registry = Registry()  # NICHE_DATABASE_URL; migrated on first use
    >>> registry.ensure_task(TaskSpec(name="banking77"))
    >>> record = registry.register_model("banking77", kind="text", artifact_digest=digest,
    ...                                  artifact_uri=uri, dataset_fingerprint=fp, lineage={})
    >>> registry.set_alias("banking77", "champion", record.version, actor="cli:ana",
    ...                    reason="gate passed", expected_current=None)

Every public method runs in one transaction and returns frozen records, never ORM objects.
Writers that depend on what is already there (the next version number, an alias's current
target) serialise per task: PostgreSQL locks the task's row (``SELECT … FOR UPDATE``), SQLite
takes the database write lock at ``BEGIN IMMEDIATE``. Versions are therefore dense (1, 2, 3 …)
and alias history is a chain, whatever the number of processes writing at once.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from niche.errors import (
    AlreadyExistsError,
    ConfigurationError,
    ConflictError,
    DatasetNotFoundError,
    DataValidationError,
    ModelNotFoundError,
    TaskNotFoundError,
)
from niche.registry import db
from niche.registry.models import (
    AliasEventRow,
    AliasRow,
    Base,
    DatasetVersionRow,
    EvaluationRow,
    GateDecisionRow,
    ModelVersionRow,
    TaskRow,
)
from niche.registry.tasks import TaskSpec
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.data.version import DatasetVersion

__all__ = [
    "UNSET",
    "AliasEventRecord",
    "DatasetRecord",
    "EvaluationRecord",
    "GateRecord",
    "ModelVersionRecord",
    "Registry",
    "TaskRecord",
]

_ALIAS = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
_HEX_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")
MIN_PREFIX = 6
_LISTED = 10


class _Unset:
    """Type of :data:`UNSET`: "no expectation given", distinct from ``None`` ("not set")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()
"""``set_alias(..., expected_current=UNSET)``: move the alias whatever it points to now."""


class _HasToDict(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def _iso(value: datetime) -> str:
    return value.isoformat()


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRecord:
    """A registered task: its spec and when it was created and last changed."""

    name: str
    spec: TaskSpec
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec.to_dict(),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True)
class DatasetRecord:
    """A registered dataset version: fingerprint, source, curation report, rows per split."""

    fingerprint: str
    source: str
    report: dict[str, Any]
    splits: dict[str, int]
    uri: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "source": self.source,
            "report": self.report,
            "splits": self.splits,
            "uri": self.uri,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class ModelVersionRecord:
    """Version ``version`` of ``task``'s specialists: its artifact and lineage."""

    task: str
    version: int
    kind: str
    artifact_digest: str
    artifact_uri: str
    dataset_fingerprint: str
    lineage: dict[str, Any]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "version": self.version,
            "kind": self.kind,
            "artifact_digest": self.artifact_digest,
            "artifact_uri": self.artifact_uri,
            "dataset_fingerprint": self.dataset_fingerprint,
            "lineage": self.lineage,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class EvaluationRecord:
    """A model version measured on a dataset split, with the general model on the same rows."""

    id: int
    task: str
    version: int
    dataset_fingerprint: str
    split: str
    metrics: dict[str, Any]
    general: dict[str, Any] | None
    comparison: dict[str, Any] | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "version": self.version,
            "dataset_fingerprint": self.dataset_fingerprint,
            "split": self.split,
            "metrics": self.metrics,
            "general": self.general,
            "comparison": self.comparison,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class AliasEventRecord:
    """One move of an alias: from which version (None: it was unset) to which, who and why."""

    id: int
    task: str
    alias: str
    from_version: int | None
    to_version: int
    actor: str
    reason: str | None
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "actor": self.actor,
            "reason": self.reason,
            "at": _iso(self.at),
        }


@dataclass(frozen=True)
class GateRecord:
    """A stored promotion decision, passed or not, with every check behind it."""

    id: int
    task: str
    version: int
    alias: str
    passed: bool
    forced: bool
    why: str | None
    checks: list[dict[str, Any]]
    actor: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "version": self.version,
            "alias": self.alias,
            "passed": self.passed,
            "forced": self.forced,
            "why": self.why,
            "checks": self.checks,
            "actor": self.actor,
            "at": _iso(self.at),
        }


def _task_record(row: TaskRow) -> TaskRecord:
    return TaskRecord(
        name=row.name,
        spec=TaskSpec.from_dict(row.spec),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _dataset_record(row: DatasetVersionRow) -> DatasetRecord:
    return DatasetRecord(
        fingerprint=row.fingerprint,
        source=row.source,
        report=row.report,
        splits=row.splits,
        uri=row.uri,
        created_at=row.created_at,
    )


def _model_record(row: ModelVersionRow, task: str) -> ModelVersionRecord:
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


def _evaluation_record(row: EvaluationRow, task: str, version: int) -> EvaluationRecord:
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
    )


def _event_record(row: AliasEventRow, task: str) -> AliasEventRecord:
    return AliasEventRecord(
        id=row.id,
        task=task,
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        reason=row.reason,
        at=row.at,
    )


def _gate_record(row: GateDecisionRow, task: str, version: int) -> GateRecord:
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
    )


# -- input checks ----------------------------------------------------------------------------


def _plain(value: Any, what: str) -> Any:
    """``value`` as it will read back from a JSON column (numpy scalars become numbers)."""
    try:
        return orjson.loads(db.json_dumps(value))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise DataValidationError(f"{what} is not JSON-serialisable ({exc})", column=what) from None


def _text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        # Digit-only names are refused: get_model reads "3" as version 3, not an alias.
        raise ConfigurationError(
            f"alias {alias!r} must be 1-64 lower-case letters, digits, '_' or '-', starting "
            "with a letter (e.g. champion, challenger)"
        )
    return alias


def _version_ref(ref: int | str) -> int | str:
    """An int version from ``3``, ``"3"`` or ``"v3"``; otherwise the alias name."""
    if isinstance(ref, bool):
        raise ConfigurationError(f"model version must be a number or an alias, got {ref!r}")
    if isinstance(ref, int):
        return ref
    text = str(ref).strip()
    digits = text[1:] if text[:1] in ("v", "V") else text
    if digits.isdecimal():
        return int(digits)
    return text


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _listing(items: Sequence[str], empty: str) -> str:
    if not items:
        return empty
    shown = ", ".join(items[:_LISTED])
    return shown + (f", … ({len(items)} in all)" if len(items) > _LISTED else "")


# -- the registry ----------------------------------------------------------------------------


class Registry:
    """Tasks, dataset versions, model versions, evaluations, aliases and gate decisions.

    ``url`` defaults to ``NICHE_DATABASE_URL`` from ``settings``; ``clock`` returns aware
    datetimes (default: now, UTC). Nothing is connected until first use, which also applies
    pending migrations. Build one per process (it is pickled as its arguments only).

        >>> registry = Registry("postgresql+psycopg://niche@db/niche")
        >>> registry.get_model("banking77", "champion").version
        3
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.url = url
        self.settings = settings
        self.clock = clock
        self.engine_: Engine | None = None
        self.revision_: str | None = None
        self._writer: Engine | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Registry({db.mask_url(self.database_url)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "settings": self.settings, "clock": self.clock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], settings=state["settings"], clock=state["clock"])  # type: ignore[misc]

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def database_url(self) -> str:
        """The URL in use: ``url``, else ``NICHE_DATABASE_URL``."""
        if self.url is not None:
            return self.url
        return str((self.settings or Settings()).get("NICHE_DATABASE_URL"))

    # -- connection ------------------------------------------------------------------------

    def _engine(self) -> Engine:
        engine = self.engine_
        if engine is not None:
            return engine
        with self._lock:
            if self.engine_ is None:
                engine = db.create_engine_for(self.database_url)
                try:
                    self.revision_ = db.upgrade(engine)
                except BaseException:
                    engine.dispose()
                    raise
                self._writer = engine.execution_options(**db.WRITE)
                self.engine_ = engine
                # A registry dropped without close() still returns its connections.
                weakref.finalize(self, engine.dispose)
            return self.engine_

    def upgrade(self) -> str:
        """Apply pending migrations (a no-op when up to date); return the head revision.

        >>> Registry().upgrade()
        '0001'
        """
        if self.engine_ is None:
            self._engine()
        else:
            self.revision_ = db.upgrade(self.engine_)
        if self.revision_ is None:
            raise ConfigurationError("the registry database has no schema revision")
        return self.revision_

    def close(self) -> None:
        """Close pooled connections; the next call reconnects."""
        with self._lock:
            if self.engine_ is not None:
                self.engine_.dispose()
            self.engine_ = None
            self._writer = None

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        engine = self._engine()
        bind = self._writer if write and self._writer is not None else engine
        with (
            db.database_errors(engine.url),
            Session(bind, expire_on_commit=False, autoflush=False) as session,
            session.begin(),
        ):
            yield session

    def _now(self) -> datetime:
        now = (self.clock or _utcnow)()
        if now.tzinfo is None:
            raise ConfigurationError("the registry's clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    # -- lookups shared by the methods -----------------------------------------------------

    def _task_row(self, session: Session, name: str, *, lock: bool = False) -> TaskRow:
        query = select(TaskRow).where(TaskRow.name == name)
        if lock:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None:
            known = list(session.scalars(select(TaskRow.name).order_by(TaskRow.name)))
            raise TaskNotFoundError(
                f"no task {name!r} (known: {_listing(known, 'none yet; create one first')})",
                task=name,
            )
        return row

    def _model_row(self, session: Session, task: TaskRow, ref: int | str) -> ModelVersionRow:
        key = _version_ref(ref)
        row: ModelVersionRow | None
        if isinstance(key, int):
            row = session.scalars(
                select(ModelVersionRow).where(
                    ModelVersionRow.task_id == task.id, ModelVersionRow.version == key
                )
            ).one_or_none()
        else:
            row = session.scalars(
                select(ModelVersionRow)
                .join(AliasRow, AliasRow.model_version_id == ModelVersionRow.id)
                .where(AliasRow.task_id == task.id, AliasRow.name == key)
            ).one_or_none()
        if row is None:
            versions = list(
                session.scalars(
                    select(ModelVersionRow.version)
                    .where(ModelVersionRow.task_id == task.id)
                    .order_by(ModelVersionRow.version)
                )
            )
            aliases = self._aliases(session, task)
            what = f"version {key}" if isinstance(key, int) else f"alias or version {key!r}"
            known = [f"v{v}" for v in versions] + [f"{a} → v{v}" for a, v in aliases.items()]
            raise ModelNotFoundError(
                f"task {task.name!r} has no model {what} "
                f"(known: {_listing(known, 'no versions registered yet')})",
                task=task.name,
                ref=ref,
            )
        return row

    @staticmethod
    def _aliases(session: Session, task: TaskRow) -> dict[str, int]:
        rows = session.execute(
            select(AliasRow.name, ModelVersionRow.version)
            .join(ModelVersionRow, AliasRow.model_version_id == ModelVersionRow.id)
            .where(AliasRow.task_id == task.id)
            .order_by(AliasRow.name)
        )
        return {name: version for name, version in rows}

    @staticmethod
    def _insert_ignoring_conflict(
        session: Session, model: type[Base], values: dict[str, Any], key: str
    ) -> None:
        """INSERT, or nothing when a row with the same unique ``key`` exists (no race)."""
        if session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            session.execute(
                pg_insert(model).values(values).on_conflict_do_nothing(index_elements=[key])
            )
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            session.execute(
                sqlite_insert(model).values(values).on_conflict_do_nothing(index_elements=[key])
            )

    # -- tasks -----------------------------------------------------------------------------

    def create_task(self, spec: TaskSpec) -> TaskRecord:
        """Register a new task; :class:`~niche.errors.AlreadyExistsError` if the name is taken.

        >>> registry.create_task(TaskSpec(name="banking77", labels=["a", "b"]))
        """
        now = self._now()
        with self._session(write=True) as session:
            row = TaskRow(name=spec.name, spec=spec.to_dict(), created_at=now, updated_at=now)
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:
                raise AlreadyExistsError(
                    f"task {spec.name!r} exists already; change it with update_task "
                    "(`niche task update`)"
                ) from exc
            return _task_record(row)

    def ensure_task(self, spec: TaskSpec) -> TaskRecord:
        """The task named ``spec.name``, created from ``spec`` when missing (safe under races).

        >>> registry.ensure_task(TaskSpec(name="banking77")).name
        'banking77'
        """
        now = self._now()
        values = {"name": spec.name, "spec": spec.to_dict(), "created_at": now, "updated_at": now}
        with self._session(write=True) as session:
            self._insert_ignoring_conflict(session, TaskRow, values, "name")
            return _task_record(self._task_row(session, spec.name))

    def get_task(self, name: str) -> TaskRecord:
        """The task ``name``; :class:`~niche.errors.TaskNotFoundError` lists the known ones."""
        with self._session() as session:
            return _task_record(self._task_row(session, name))

    def list_tasks(self) -> list[TaskRecord]:
        """Every task, by name."""
        with self._session() as session:
            rows = session.scalars(select(TaskRow).order_by(TaskRow.name))
            return [_task_record(row) for row in rows]

    def update_task(self, name: str, /, **changes: Any) -> TaskRecord:
        """Change fields of a task's spec (``sla``/``general`` accept partial dicts).

        >>> registry.update_task("banking77", sla={"latency_p95_ms": 20})
        """
        if "name" in changes and changes["name"] != name:
            raise ConfigurationError(
                f"task {name!r} cannot be renamed: versions, aliases and traffic refer to it"
            )
        now = self._now()
        with self._session(write=True) as session:
            row = self._task_row(session, name, lock=True)
            spec = TaskSpec.from_dict(row.spec).with_changes(**changes)
            row.spec = spec.to_dict()
            row.updated_at = now
            session.flush()
            return _task_record(row)

    # -- dataset versions ------------------------------------------------------------------

    def register_dataset(
        self, version: DatasetVersion, *, uri: str | os.PathLike[str] | None = None
    ) -> DatasetRecord:
        """Record a dataset version; idempotent by fingerprint, also when racing.

        ``uri`` says where its files are (a directory written by ``DatasetVersion.save``);
        a later call can fill it in when the first one had none.

            >>> registry.register_dataset(version, uri=".niche/datasets/3f2a9c0d")
        """
        location = os.fspath(uri) if uri is not None else None
        values = {
            "fingerprint": version.fingerprint,
            "source": version.source,
            "report": _plain(version.report.to_dict(), "report"),
            "splits": {split: len(rows) for split, rows in version.splits.items()},
            "uri": location,
            "created_at": self._now(),
        }
        with self._session(write=True) as session:
            self._insert_ignoring_conflict(session, DatasetVersionRow, values, "fingerprint")
            row = session.scalars(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.fingerprint == version.fingerprint
                )
            ).one()
            if row.uri is None and location is not None:
                row.uri = location
                session.flush()
            return _dataset_record(row)

    def get_dataset(self, ref: str) -> DatasetRecord:
        """The dataset version whose fingerprint is ``ref`` or starts with it (≥ 6 hex digits).

        >>> registry.get_dataset("3f2a9c").source
        'banking77'
        """
        prefix = ref.strip().lower() if isinstance(ref, str) else ""
        if not _HEX_PREFIX.match(prefix):
            raise DatasetNotFoundError(
                f"dataset version {ref!r}: give its fingerprint or a unique prefix of at "
                f"least {MIN_PREFIX} hex digits"
            )
        with self._session() as session:
            rows = list(
                session.scalars(
                    select(DatasetVersionRow)
                    .where(DatasetVersionRow.fingerprint.startswith(prefix, autoescape=True))
                    .order_by(DatasetVersionRow.fingerprint)
                    .limit(_LISTED)
                )
            )
            if len(rows) == 1:
                return _dataset_record(rows[0])
            if rows:
                matches = ", ".join(row.fingerprint[:16] for row in rows)
                raise DatasetNotFoundError(
                    f"dataset version {prefix!r} is ambiguous ({matches}); give more digits"
                )
            known = list(
                session.scalars(
                    select(DatasetVersionRow.fingerprint)
                    .order_by(DatasetVersionRow.created_at.desc())
                    .limit(_LISTED + 1)
                )
            )
            listing = _listing([fp[:12] for fp in known], "none registered yet")
            raise DatasetNotFoundError(f"no dataset version {prefix!r} (latest: {listing})")

    def list_datasets(self) -> list[DatasetRecord]:
        """Every registered dataset version, oldest first."""
        with self._session() as session:
            rows = session.scalars(
                select(DatasetVersionRow).order_by(
                    DatasetVersionRow.created_at, DatasetVersionRow.id
                )
            )
            return [_dataset_record(row) for row in rows]

    # -- model versions --------------------------------------------------------------------

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
        """Register the task's next model version (1, 2, 3 …: dense, also under concurrency).

        Store the artifact first: a crash before this call's commit leaves an unreferenced
        artifact, never a version without one.

            >>> registry.register_model("banking77", kind="text", artifact_digest=digest,
            ...                         artifact_uri=uri, dataset_fingerprint=fp,
            ...                         lineage=trained.lineage).version
            4
        """
        values = {
            "kind": _text(kind, "kind"),
            "artifact_digest": _text(artifact_digest, "artifact_digest"),
            "artifact_uri": _text(artifact_uri, "artifact_uri"),
            "dataset_fingerprint": _text(dataset_fingerprint, "dataset_fingerprint"),
            "lineage": _plain(dict(lineage), "lineage"),
        }
        now = self._now()
        with self._session(write=True) as session:
            # The row lock queues concurrent registrations for this task (PostgreSQL); on
            # SQLite the IMMEDIATE transaction already holds the database's write lock.
            task_row = self._task_row(session, task, lock=True)
            latest = session.scalar(
                select(func.max(ModelVersionRow.version)).where(
                    ModelVersionRow.task_id == task_row.id
                )
            )
            row = ModelVersionRow(
                task_id=task_row.id, version=(latest or 0) + 1, created_at=now, **values
            )
            session.add(row)
            session.flush()
            return _model_record(row, task_row.name)

    def get_model(self, task: str, ref: int | str) -> ModelVersionRecord:
        """A model version by number (``3``, ``"3"``, ``"v3"``) or alias (``"champion"``).

        >>> registry.get_model("banking77", "champion").artifact_digest
        """
        with self._session() as session:
            task_row = self._task_row(session, task)
            return _model_record(self._model_row(session, task_row, ref), task_row.name)

    def list_models(self, task: str | None = None) -> list[ModelVersionRecord]:
        """Model versions of ``task`` (or of every task), by task name then version."""
        with self._session() as session:
            query = (
                select(ModelVersionRow, TaskRow.name)
                .join(TaskRow, ModelVersionRow.task_id == TaskRow.id)
                .order_by(TaskRow.name, ModelVersionRow.version)
            )
            if task is not None:
                query = query.where(ModelVersionRow.task_id == self._task_row(session, task).id)
            return [_model_record(row, name) for row, name in session.execute(query)]

    def lineage(self, task: str, version: int | str) -> dict[str, Any]:
        """Where a model version came from and how it fared, as one JSON-ready dict.

        ``model`` → ``dataset`` (fingerprint, source, curation report, rows per split, or
        ``registered: False`` when only its fingerprint is known) → ``evaluations``, plus the
        ``aliases`` pointing at it now and its ``gates``.

            >>> registry.lineage("banking77", 3)["dataset"]["fingerprint"]
        """
        with self._session() as session:
            task_row = self._task_row(session, task)
            row = self._model_row(session, task_row, version)
            model = _model_record(row, task_row.name)
            dataset_row = session.scalars(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.fingerprint == row.dataset_fingerprint
                )
            ).one_or_none()
            dataset: dict[str, Any] = (
                {"registered": True, **_dataset_record(dataset_row).to_dict()}
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
                name for name, v in self._aliases(session, task_row).items() if v == row.version
            )
            return {
                "task": task_row.name,
                "model": model.to_dict(),
                "dataset": dataset,
                "evaluations": [
                    _evaluation_record(e, task_row.name, row.version).to_dict() for e in evaluations
                ],
                "aliases": aliases,
                "gates": [_gate_record(g, task_row.name, row.version).to_dict() for g in gates],
            }

    def referenced_digests(self) -> set[str]:
        """Artifact digests of every registered model version (what ``niche gc`` keeps)."""
        with self._session() as session:
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
    ) -> EvaluationRecord:
        """Store an evaluation of a model version (and the general model on the same rows).

        >>> registry.record_evaluation("banking77", 3, dataset_fingerprint=fp,
        ...     split="test", metrics=report.specialist.to_dict(),
        ...     general=report.general.to_dict(), comparison=report.comparison.to_dict())
        """
        values = {
            "dataset_fingerprint": _text(dataset_fingerprint, "dataset_fingerprint"),
            "split": _text(split, "split"),
            "metrics": _plain(dict(metrics), "metrics"),
            "general": _plain(dict(general), "general") if general is not None else None,
            "comparison": (
                _plain(dict(comparison), "comparison") if comparison is not None else None
            ),
        }
        now = self._now()
        with self._session(write=True) as session:
            task_row = self._task_row(session, task)
            model = self._model_row(session, task_row, version)
            row = EvaluationRow(model_version_id=model.id, created_at=now, **values)
            session.add(row)
            session.flush()
            return _evaluation_record(row, task_row.name, model.version)

    def list_evaluations(self, task: str, version: int | str) -> list[EvaluationRecord]:
        """Evaluations of a model version, oldest first."""
        with self._session() as session:
            task_row = self._task_row(session, task)
            model = self._model_row(session, task_row, version)
            rows = session.scalars(
                select(EvaluationRow)
                .where(EvaluationRow.model_version_id == model.id)
                .order_by(EvaluationRow.id)
            )
            return [_evaluation_record(row, task_row.name, model.version) for row in rows]

    # -- aliases ---------------------------------------------------------------------------

    def get_alias(self, task: str, alias: str) -> ModelVersionRecord | None:
        """The model version ``alias`` points to, or None when it is not set."""
        _check_alias(alias)
        with self._session() as session:
            task_row = self._task_row(session, task)
            row = session.scalars(
                select(ModelVersionRow)
                .join(AliasRow, AliasRow.model_version_id == ModelVersionRow.id)
                .where(AliasRow.task_id == task_row.id, AliasRow.name == alias)
            ).one_or_none()
            return _model_record(row, task_row.name) if row is not None else None

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
        """Point ``alias`` at ``version`` and append the move to its history, atomically.

        With ``expected_current`` (a version, or None for "not set yet") this is a
        compare-and-set: when the alias points elsewhere, :class:`~niche.errors.ConflictError`
        is raised and nothing changes, so racing promotions cannot silently overwrite each
        other.

            >>> registry.set_alias("banking77", "champion", 4, actor="cli:ana",
            ...                    reason="gate passed", expected_current=3)
        """
        _check_alias(alias)
        _text(actor, "actor")
        now = self._now()
        with self._session(write=True) as session:
            task_row = self._task_row(session, task, lock=True)
            target = self._model_row(session, task_row, version)
            current = session.scalars(
                select(AliasRow).where(AliasRow.task_id == task_row.id, AliasRow.name == alias)
            ).one_or_none()
            current_version = (
                session.scalar(
                    select(ModelVersionRow.version).where(
                        ModelVersionRow.id == current.model_version_id
                    )
                )
                if current is not None
                else None
            )
            if not isinstance(expected_current, _Unset) and expected_current != current_version:
                now_at = f"v{current_version}" if current_version is not None else "unset"
                expected = f"v{expected_current}" if expected_current is not None else "unset"
                raise ConflictError(
                    f"alias {alias!r} of task {task_row.name!r} is {now_at}, not {expected} as "
                    f"expected: someone moved it meanwhile; check its history and decide again",
                    task=task_row.name,
                    alias=alias,
                    expected=expected_current,
                    actual=current_version,
                )
            if current is None:
                session.add(
                    AliasRow(
                        task_id=task_row.id, name=alias, model_version_id=target.id, updated_at=now
                    )
                )
            else:
                current.model_version_id = target.id
                current.updated_at = now
            event = AliasEventRow(
                task_id=task_row.id,
                alias=alias,
                from_version=current_version,
                to_version=target.version,
                actor=actor,
                reason=reason,
                at=now,
            )
            session.add(event)
            session.flush()
            return _event_record(event, task_row.name)

    def list_aliases(self, task: str) -> dict[str, int]:
        """Each alias of ``task`` and the version it points to."""
        with self._session() as session:
            return self._aliases(session, self._task_row(session, task))

    def alias_history(self, task: str, alias: str | None = None) -> list[AliasEventRecord]:
        """Moves of ``alias`` (or of every alias of ``task``), oldest first."""
        with self._session() as session:
            task_row = self._task_row(session, task)
            query = select(AliasEventRow).where(AliasEventRow.task_id == task_row.id)
            if alias is not None:
                query = query.where(AliasEventRow.alias == _check_alias(alias))
            rows = session.scalars(query.order_by(AliasEventRow.id))
            return [_event_record(row, task_row.name) for row in rows]

    # -- gates -----------------------------------------------------------------------------

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
        """Store a promotion decision, passed or failed, with its checks.

        ``checks`` are ``{name, passed, value, threshold, detail}`` dicts (or objects with
        ``to_dict()``, e.g. :class:`~niche.registry.gates.GateCheck`).

            >>> registry.record_gate("banking77", 4, alias="champion", passed=False,
            ...                      checks=decision.checks, actor="cli:ana")
        """
        _check_alias(alias)
        _text(actor, "actor")
        if forced and not (why and why.strip()):
            raise ConfigurationError("a forced gate decision needs a reason (why)")
        plain_checks = _plain(
            [c.to_dict() if hasattr(c, "to_dict") else dict(c) for c in checks], "checks"
        )
        now = self._now()
        with self._session(write=True) as session:
            task_row = self._task_row(session, task)
            model = self._model_row(session, task_row, version)
            row = GateDecisionRow(
                task_id=task_row.id,
                model_version_id=model.id,
                alias=alias,
                passed=bool(passed),
                forced=bool(forced),
                why=why,
                checks=plain_checks,
                actor=actor,
                at=now,
            )
            session.add(row)
            session.flush()
            return _gate_record(row, task_row.name, model.version)

    def gate_decisions(self, task: str) -> list[GateRecord]:
        """Every gate decision for ``task``, oldest first."""
        with self._session() as session:
            task_row = self._task_row(session, task)
            rows = session.execute(
                select(GateDecisionRow, ModelVersionRow.version)
                .join(ModelVersionRow, GateDecisionRow.model_version_id == ModelVersionRow.id)
                .where(GateDecisionRow.task_id == task_row.id)
                .order_by(GateDecisionRow.id)
            )
            return [_gate_record(row, task_row.name, version) for row, version in rows]
