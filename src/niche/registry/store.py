"""The registry: tasks, datasets, models, evaluations, aliases, gates, API keys and traffic.

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

import hashlib
import math
import os
import re
import secrets
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from niche.errors import (
    AlreadyExistsError,
    ConfigurationError,
    ConflictError,
    DatasetNotFoundError,
    DataValidationError,
    ModelNotFoundError,
    NotFoundError,
    TaskNotFoundError,
)
from niche.registry import db
from niche.registry.models import (
    AliasEventRow,
    AliasRow,
    ApiKeyRow,
    Base,
    DatasetVersionRow,
    EvaluationRow,
    GateDecisionRow,
    ModelVersionRow,
    TaskRow,
    TrafficRow,
)
from niche.registry.tasks import TaskSpec
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.data.version import DatasetVersion

__all__ = [
    "KEY_SCOPES",
    "UNSET",
    "AliasEventRecord",
    "DatasetRecord",
    "EvaluationRecord",
    "GateRecord",
    "KeyRecord",
    "ModelVersionRecord",
    "Registry",
    "StoredTrafficRecord",
    "TaskRecord",
    "TrafficRecord",
    "parse_since",
]

_ALIAS = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
_HEX_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")
MIN_PREFIX = 6
_LISTED = 10
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

KEY_SCOPES: Final = ("inference", "admin")
"""Scopes of an API key: ``inference`` calls models, ``admin`` also manages the registry."""
SECRET_PREFIX: Final = "nk-"
KEY_PREFIX_CHARS: Final = 8


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


@dataclass(frozen=True)
class KeyRecord:
    """A gateway API key as stored: never its secret, only the secret's first 8 characters.

    >>> record, secret = registry.create_key(scope="inference", budget_usd=5.0)
    >>> record.remaining_usd
    5.0
    """

    id: int
    name: str | None
    prefix: str
    scope: str
    budget_usd: float | None
    spent_usd: float
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked (it no longer verifies)."""
        return self.revoked_at is not None

    @property
    def remaining_usd(self) -> float | None:
        """Budget left (never below 0), or None for a key without a budget."""
        if self.budget_usd is None:
            return None
        return max(0.0, self.budget_usd - self.spent_usd)

    @property
    def exhausted(self) -> bool:
        """Whether the key has spent its whole budget (never, without one)."""
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scope": self.scope,
            "budget_usd": self.budget_usd,
            "spent_usd": self.spent_usd,
            "remaining_usd": self.remaining_usd,
            "exhausted": self.exhausted,
            "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at) if self.revoked_at is not None else None,
        }


@dataclass(frozen=True, kw_only=True)
class TrafficRecord:
    """One gateway request to capture, built by the caller; ``at`` None: the registry's now.

    ``route`` is free text (``specialist``, ``general``, ``specialist-fallback``,
    ``passthrough`` …); ``input`` is the text or the chat messages, as JSON.

        >>> registry.record_traffic([TrafficRecord(task="banking77", model="banking77",
        ...     route="specialist", input="card not arrived", specialist_label="card_arrival",
        ...     specialist_confidence=0.93, model_version=3, latency_ms=4.1, status=200)])
        1
    """

    model: str
    route: str
    input: Any
    latency_ms: float
    status: int
    task: str | None = None
    specialist_label: str | None = None
    specialist_confidence: float | None = None
    model_version: int | None = None
    general_answer: str | None = None
    general_label: str | None = None
    alias: str | None = None
    shadow: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float = 0.0
    key_id: int | None = None
    at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return _traffic_dict(self)


@dataclass(frozen=True, kw_only=True)
class StoredTrafficRecord:
    """A stored :class:`TrafficRecord`: the same fields with its ``id`` and a set ``at``."""

    id: int
    model: str
    route: str
    input: Any
    latency_ms: float
    status: int
    task: str | None
    specialist_label: str | None
    specialist_confidence: float | None
    model_version: int | None
    general_answer: str | None
    general_label: str | None
    alias: str | None
    shadow: bool
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float
    key_id: int | None
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **_traffic_dict(self)}


_TRAFFIC_FIELDS: Final = (
    "task",
    "model",
    "route",
    "input",
    "specialist_label",
    "specialist_confidence",
    "model_version",
    "general_answer",
    "general_label",
    "alias",
    "shadow",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "key_id",
    "status",
)


def _traffic_dict(record: TrafficRecord | StoredTrafficRecord) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in _TRAFFIC_FIELDS}
    return values | {"at": _iso(record.at) if record.at is not None else None}


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


def _key_record(row: ApiKeyRow) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scope=row.scope,
        budget_usd=row.budget_usd,
        spent_usd=row.spent_usd,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _traffic_record(row: TrafficRow) -> StoredTrafficRecord:
    return StoredTrafficRecord(
        id=row.id, at=row.at, **{name: getattr(row, name) for name in _TRAFFIC_FIELDS}
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


def _secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _amount(value: float | None, what: str) -> float | None:
    """``value`` as a finite, non-negative float (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{what} must be a finite number of US dollars, got {value!r}")
    if value < 0:
        raise ConfigurationError(f"{what} must not be negative, got {value!r}")
    return float(value)


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ConfigurationError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _traffic_values(record: TrafficRecord, now: datetime) -> dict[str, Any]:
    """The row to insert for ``record``, checked; errors name the offending field."""
    if not isinstance(record, TrafficRecord):
        raise ConfigurationError(f"record_traffic takes TrafficRecord objects, got {record!r}")
    values = {name: getattr(record, name) for name in _TRAFFIC_FIELDS}
    values["model"] = _text(record.model, "model")
    values["route"] = _text(record.route, "route")
    values["shadow"] = bool(record.shadow)
    values["input"] = _plain(record.input, "input")
    values["latency_ms"] = _amount(record.latency_ms, "latency_ms")
    values["cost_usd"] = _amount(record.cost_usd, "cost_usd")
    if isinstance(record.status, bool) or not isinstance(record.status, int):
        raise ConfigurationError(f"status must be an HTTP status code, got {record.status!r}")
    values["at"] = _aware(record.at, "at") if record.at is not None else now
    return values


_TRAFFIC_COLUMNS: Final = (*_TRAFFIC_FIELDS, "at")
_INPUT: Final = _TRAFFIC_COLUMNS.index("input")


def _insert_traffic(connection: Any, rows: list[dict[str, Any]]) -> None:
    """One executemany of ``rows`` (checked by :func:`_traffic_values`).

    The gateway writes every request it answers, so this is a hot path: on SQLite and
    PostgreSQL the values are bound as the driver takes them (JSON as text, times as the
    backend stores them), skipping SQLAlchemy's per-row type processing, which cost ~4x the
    insert itself. Other backends take the portable Core insert.
    """
    backend = connection.dialect.name
    if backend not in ("sqlite", "postgresql"):
        table = Base.metadata.tables[TrafficRow.__tablename__]
        connection.execute(insert(table), rows)
        return
    sqlite = backend == "sqlite"
    marks = ["?" if sqlite else "%s"] * len(_TRAFFIC_COLUMNS)
    if not sqlite:
        marks[_INPUT] = "CAST(%s AS JSON)"
    sql = f"INSERT INTO traffic_records ({', '.join(_TRAFFIC_COLUMNS)}) VALUES ({', '.join(marks)})"
    params = []
    for row in rows:
        values = [row[name] for name in _TRAFFIC_COLUMNS]
        values[_INPUT] = db.json_dumps(values[_INPUT])
        if sqlite:  # as UTCDateTime + SQLite's DATETIME store it: naive UTC, microseconds
            values[-1] = (
                values[-1].astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
            )
        params.append(tuple(values))
    connection.exec_driver_sql(sql, params)


def parse_since(text: str, now: datetime) -> datetime:
    """A point in time from ISO-8601 or a duration before ``now`` (``30s``, ``15m``, ``1h``,
    ``2d``, ``1w``); an ISO time without an offset is read as UTC.

        >>> parse_since("1h", datetime(2026, 3, 1, 12, tzinfo=UTC)).isoformat()
        '2026-03-01T11:00:00+00:00'
    """
    raw = text.strip() if isinstance(text, str) else ""
    relative = _RELATIVE.match(raw.lower())
    if relative:
        amount, unit = relative.groups()
        return _aware(now, "now") - timedelta(seconds=int(amount) * _UNITS_S[unit])
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigurationError(
            f"--since {text!r} is neither ISO-8601 (2026-03-01T12:00:00Z) nor a duration "
            "like 30m, 1h or 2d"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


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
        '0003'
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
                    f"task {spec.name!r} exists already; change it with `niche tasks edit`"
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

    def aliased_models(self) -> dict[str, dict[str, ModelVersionRecord]]:
        """Every task's aliases and the model versions they point to, in one query.

        Tasks without an alias are absent. The gateway's portfolio reads this each refresh.
        """
        with self._session() as session:
            rows = session.execute(
                select(AliasRow.name, ModelVersionRow, TaskRow.name)
                .join(ModelVersionRow, AliasRow.model_version_id == ModelVersionRow.id)
                .join(TaskRow, AliasRow.task_id == TaskRow.id)
                .order_by(TaskRow.name, AliasRow.name)
            )
            served: dict[str, dict[str, ModelVersionRecord]] = {}
            for alias, model, task in rows:
                served.setdefault(task, {})[alias] = _model_record(model, task)
            return served

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

    # -- API keys --------------------------------------------------------------------------

    def create_key(
        self, *, scope: str, budget_usd: float | None = None, name: str | None = None
    ) -> tuple[KeyRecord, str]:
        """Create an API key; return its record and its secret, which is not kept anywhere.

        Only the secret's sha256 (to verify it) and its first 8 characters (to recognise it)
        are stored: show the secret to the user now, it cannot be recovered later.

            >>> record, secret = registry.create_key(scope="inference", budget_usd=10.0)
            >>> secret[:3]
            'nk-'
        """
        if scope not in KEY_SCOPES:
            raise ConfigurationError(
                f"key scope must be one of {', '.join(KEY_SCOPES)}, got {scope!r}"
            )
        budget = _amount(budget_usd, "budget_usd")
        if name is not None:
            _text(name, "key name")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        with self._session(write=True) as session:
            row = ApiKeyRow(
                name=name,
                prefix=secret[:KEY_PREFIX_CHARS],
                secret_sha256=_secret_sha256(secret),
                scope=scope,
                budget_usd=budget,
                spent_usd=0.0,
                created_at=now,
                revoked_at=None,
            )
            session.add(row)
            session.flush()
            return _key_record(row), secret

    def verify_key(self, secret: str) -> KeyRecord | None:
        """The key whose secret this is, or None when it is unknown or revoked.

        A budget is not checked here: see :attr:`KeyRecord.exhausted`.

            >>> registry.verify_key(request_bearer_token)
        """
        if not isinstance(secret, str) or not secret:
            return None
        with self._session() as session:
            row = session.scalars(
                select(ApiKeyRow).where(
                    ApiKeyRow.secret_sha256 == _secret_sha256(secret),
                    ApiKeyRow.revoked_at.is_(None),
                )
            ).one_or_none()
            return _key_record(row) if row is not None else None

    def list_keys(self) -> list[KeyRecord]:
        """Every API key, revoked ones included, oldest first.

        >>> [key.prefix for key in registry.list_keys()]
        """
        with self._session() as session:
            rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))
            return [_key_record(row) for row in rows]

    def revoke_key(self, key_id_or_prefix: int | str) -> KeyRecord:
        """Revoke a key by id (``3``, ``"3"``) or by its unique prefix (``"nk-AbCde"``).

        Revoking a revoked key changes nothing and returns it as it is.

            >>> registry.revoke_key("nk-AbCde").revoked
            True
        """
        now = self._now()
        with self._session(write=True) as session:
            row = self._key_row(session, key_id_or_prefix)
            if row.revoked_at is None:
                row.revoked_at = now
                session.flush()
            return _key_record(row)

    def add_spend(self, key_id: int, usd: float) -> KeyRecord:
        """Add ``usd`` to a key's spend atomically (concurrent calls all count); return the key.

        >>> registry.add_spend(record.id, 0.0021).spent_usd
        """
        amount = _amount(usd, "usd")
        with self._session(write=True) as session:
            result = session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id)
                .values(spent_usd=ApiKeyRow.spent_usd + amount),
                execution_options={"synchronize_session": False},
            )
            if getattr(result, "rowcount", 0) != 1:
                raise NotFoundError(f"no API key with id {key_id!r}")
            row = session.scalars(
                select(ApiKeyRow)
                .where(ApiKeyRow.id == key_id)
                .execution_options(populate_existing=True)
            ).one()
            return _key_record(row)

    def _key_row(self, session: Session, ref: int | str) -> ApiKeyRow:
        text = str(ref).strip()
        if isinstance(ref, bool) or not text:
            raise ConfigurationError(f"give a key's id or prefix, got {ref!r}")
        if isinstance(ref, int) or text.isdecimal():
            query = select(ApiKeyRow).where(ApiKeyRow.id == int(text))
        else:
            query = select(ApiKeyRow).where(ApiKeyRow.prefix.startswith(text, autoescape=True))
        rows = list(session.scalars(query.order_by(ApiKeyRow.id).with_for_update()))
        if len(rows) > 1:
            matches = ", ".join(f"{row.id} ({row.prefix})" for row in rows[:_LISTED])
            raise ConfigurationError(f"key prefix {text!r} is ambiguous ({matches}); give the id")
        if not rows:
            raise NotFoundError(f"no API key with id or prefix {text!r} (see `niche keys list`)")
        return rows[0]

    # -- traffic ---------------------------------------------------------------------------

    def record_traffic(self, records: Sequence[TrafficRecord]) -> int:
        """Store captured requests in one batched INSERT; return how many were stored.

        Every record is checked first, so a bad one stores none. Records without ``at`` get
        the registry clock's now.

            >>> registry.record_traffic(batch)
            250
        """
        if not records:
            return 0
        now = self._now()
        rows = [_traffic_values(record, now) for record in records]
        with self._session(write=True) as session:
            try:
                _insert_traffic(session.connection(), rows)
            except IntegrityError as exc:
                # The only constraint a valid record can break is its key_id.
                raise NotFoundError(
                    "a traffic record names an API key id that does not exist"
                ) from exc
        return len(rows)

    def list_traffic(
        self, task: str | None = None, *, since: datetime | None = None, limit: int | None = None
    ) -> list[StoredTrafficRecord]:
        """Captured requests for ``task`` (or all) at or after ``since``, oldest first.

        With ``limit``, the most recent ``limit`` of them (still oldest first).

            >>> registry.list_traffic("banking77", since=parse_since("1h", now), limit=100)
        """
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ConfigurationError(f"limit must be a non-negative integer, got {limit!r}")
        with self._session() as session:
            query = self._traffic_filter(select(TrafficRow), task, since)
            if limit is not None:
                newest = query.order_by(TrafficRow.at.desc(), TrafficRow.id.desc()).limit(limit)
                rows = list(session.scalars(newest))[::-1]
            else:
                rows = list(session.scalars(query.order_by(TrafficRow.at, TrafficRow.id)))
            return [_traffic_record(row) for row in rows]

    def count_traffic(self, task: str | None = None, *, since: datetime | None = None) -> int:
        """How many requests were captured for ``task`` (or all) at or after ``since``.

        >>> registry.count_traffic("banking77")
        """
        with self._session() as session:
            query = self._traffic_filter(select(func.count(TrafficRow.id)), task, since)
            return int(session.scalar(query) or 0)

    @staticmethod
    def _traffic_filter(query: Any, task: str | None, since: datetime | None) -> Any:
        if task is not None:
            query = query.where(TrafficRow.task == task)
        if since is not None:
            query = query.where(TrafficRow.at >= _aware(since, "since"))
        return query
