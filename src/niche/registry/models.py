"""The registry's tables as SQLAlchemy declarative models (internal: the store returns records).

    >>> from niche.registry.models import Base
    >>> sorted(Base.metadata.tables)[:2]
    ['alias_events', 'aliases']

The schema itself is created by the Alembic migrations in ``migrations/versions``; a test
checks that they and these models agree on both backends. Timestamps are timezone-aware UTC
on both backends (SQLite stores them as naive UTC text).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from niche.registry.records import TRAFFIC_LENGTHS

__all__ = [
    "AlertRow",
    "AliasEventRow",
    "AliasRow",
    "ApiKeyRow",
    "AuditEventRow",
    "Base",
    "DatasetVersionRow",
    "DriftReportRow",
    "EvaluationRow",
    "GateDecisionRow",
    "KeyReservationRow",
    "LoopLeaseRow",
    "ModelVersionRow",
    "TaskRow",
    "TrafficRow",
    "UTCDateTime",
]

# Deterministic constraint names, so later migrations can alter them on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TaskRow(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DatasetVersionRow(Base):
    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(Text)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    splits: Mapped[dict[str, int]] = mapped_column(JSON)
    uri: Mapped[str | None] = mapped_column(Text)
    # The files' artifact in the artifact store; None for versions registered with a path.
    artifact_digest: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("task_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    artifact_digest: Mapped[str] = mapped_column(String(128), index=True)
    artifact_uri: Mapped[str] = mapped_column(Text)
    # Not a foreign key: a model may be registered before (or without) its dataset version.
    dataset_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EvaluationRow(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    dataset_fingerprint: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    general: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    comparison: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # What the costs were derived from (niche.evaluation.cost_per_1m): None before 0006.
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    general_usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AliasRow(Base):
    __tablename__ = "aliases"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AliasEventRow(Base):
    __tablename__ = "alias_events"
    __table_args__ = (Index("ix_alias_events_task_id_alias", "task_id", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    alias: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class GateDecisionRow(Base):
    __tablename__ = "gate_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    alias: Mapped[str] = mapped_column(String(64))
    passed: Mapped[bool] = mapped_column(Boolean)
    forced: Mapped[bool] = mapped_column(Boolean)
    why: Mapped[str | None] = mapped_column(Text)
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # niche.registry.tasks.gate_fingerprint of the spec it was decided under (NULL: before 0005).
    spec_fingerprint: Mapped[str | None] = mapped_column(String(64))


class ApiKeyRow(Base):
    """A gateway API key: only the secret's sha256 is stored, and its first 8 characters."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(8))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    budget_usd: Mapped[float | None] = mapped_column(Float)
    spent_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class KeyReservationRow(Base):
    """Worst-case cost held on a budgeted key by a request in flight, until it settles.

    A reservation a crashed worker never settled lapses at ``expires_at``.
    """

    __tablename__ = "key_reservations"
    __table_args__ = (Index("ix_key_reservations_key_id_expires_at", "key_id", "expires_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    amount_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TrafficRow(Base):
    """One request the gateway answered: how it was routed, what each model said, its cost."""

    __tablename__ = "traffic_records"
    __table_args__ = (
        Index("ix_traffic_records_task_at", "task", "at"),
        # Distillation and the loop read a task's records by id range ("new since the last
        # training"); monitoring reads by time.
        Index("ix_traffic_records_task_id", "task", "id"),
    )

    # 64-bit on PostgreSQL (traffic grows without bound); SQLite's rowid is 64-bit already.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # A task name, not a foreign key: pass-through requests have none, and records outlive tasks.
    task: Mapped[str | None] = mapped_column(String(TRAFFIC_LENGTHS["task"]))
    model: Mapped[str] = mapped_column(String(TRAFFIC_LENGTHS["model"]))
    route: Mapped[str] = mapped_column(String(TRAFFIC_LENGTHS["route"]))
    input: Mapped[Any] = mapped_column(JSON)
    specialist_label: Mapped[str | None] = mapped_column(Text)
    specialist_confidence: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[int | None] = mapped_column(Integer)
    general_answer: Mapped[str | None] = mapped_column(Text)
    general_label: Mapped[str | None] = mapped_column(Text)
    # Which alias answered (champion, challenger) and whether the general model was also
    # asked in the background to measure live agreement.
    alias: Mapped[str | None] = mapped_column(String(TRAFFIC_LENGTHS["alias"]))
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    latency_ms: Mapped[float] = mapped_column(Float)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[int] = mapped_column(Integer)
    # The specialist's compute seconds (cost is recomputed from these and the tokens); the
    # input's JSON size before it was clipped; whether capture cut or removed anything.
    compute_s: Mapped[float | None] = mapped_column(Float)
    input_bytes: Mapped[int | None] = mapped_column(Integer)
    cleaned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # When the request arrived (not when its batch was written).
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # The id the gateway returned to the client (x-request-id, the completion's id): feedback
    # names a record by it. ``text``: what the specialist classified (apart from the whole
    # request). ``sampled``: the general model was asked because the request was drawn at
    # random (serving.shadow_fraction), not because the specialist was unsure — the unbiased
    # teacher sample. ``gold_label``: the true label, sent later as feedback.
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    text: Mapped[str | None] = mapped_column(Text)
    sampled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    gold_label: Mapped[str | None] = mapped_column(Text)
    gold_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEventRow(Base):
    """One change to the registry, written in the same transaction as the change itself."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_task_at", "task", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    # A task name, not a foreign key: key events have none, and the trail outlives its rows.
    task: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class DriftReportRow(Base):
    """One monitoring check of a task's champion over a window of its traffic."""

    __tablename__ = "drift_reports"
    __table_args__ = (Index("ix_drift_reports_task_at", "task", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # A task name, not a foreign key, as in traffic: reports outlive their tasks.
    task: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # {"since", "until", "rows", "first_id", "last_id", "reference": {...}}
    window: Mapped[dict[str, Any]] = mapped_column(JSON)
    # [{"name", "statistic", "p_value", "interval", "threshold", "alarm", ...}, ...]
    signals: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    alarm: Mapped[bool] = mapped_column(Boolean)


class AlertRow(Base):
    """A signal that crossed its threshold: open until a later check finds it back in bounds."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_task_state", "task", "state"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    signal: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # open | resolved
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    report_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("drift_reports.id")
    )
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class LoopLeaseRow(Base):
    """Which loop holds a task (one retrain at a time per task) and until when."""

    __tablename__ = "loop_leases"

    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
