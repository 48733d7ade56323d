"""What the registry returns: frozen records, never ORM objects, each with one ``to_dict``.

    >>> record = registry.tasks.get("banking77")
    >>> record.to_dict()["created_at"]
    '2026-03-01T12:00:00+00:00'

Every record turns into a JSON-ready dict the same way (:class:`Record`): its fields in order
(or the names in ``DICT_KEYS``, which may name properties), datetimes as ISO-8601, nested
values with a ``to_dict`` (a :class:`~niche.registry.tasks.TaskSpec`, another record) as
their dict. The CLI's ``--json`` and the gateway's admin routes print these dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Final

from niche.evaluation.cost import Prices, cost_per_1m
from niche.registry.tasks import TaskSpec
from niche.specialists.base import Usage

__all__ = [
    "TRAFFIC_FIELDS",
    "TRAFFIC_LENGTHS",
    "AlertRecord",
    "AliasEventRecord",
    "AuditEventRecord",
    "DatasetRecord",
    "DriftReportRecord",
    "EvaluationRecord",
    "GateRecord",
    "KeyRecord",
    "KeyReservation",
    "LeaseRecord",
    "ModelVersionRecord",
    "PromotionRecord",
    "Record",
    "StoredTrafficRecord",
    "TaskRecord",
    "TrafficRecord",
]

TRAFFIC_FIELDS: Final = (
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
    "compute_s",
    "input_bytes",
    "cleaned",
    "request_id",
    "text",
    "sampled",
    "gold_label",
    "gold_at",
)
"""Columns of a traffic record, in the order its dict lists them (``at`` follows)."""

TRAFFIC_LENGTHS: Final = {"task": 64, "model": 200, "route": 32, "alias": 32, "request_id": 64}
"""The longest value (in characters) of each length-bounded traffic column."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return value


class Record:
    """Mixin of the registry's records: :meth:`to_dict` lists ``DICT_KEYS`` or every field.

    >>> GateRecord(...).to_dict()["at"]
    '2026-03-01T12:00:00+00:00'
    """

    DICT_KEYS: ClassVar[tuple[str, ...] | None] = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: datetimes as ISO-8601, nested records and specs as dicts."""
        names = self.DICT_KEYS or tuple(f.name for f in fields(self))  # type: ignore[arg-type]
        return {name: _plain(getattr(self, name)) for name in names}


@dataclass(frozen=True)
class TaskRecord(Record):
    """A registered task: its spec and when it was created and last changed."""

    name: str
    spec: TaskSpec
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DatasetRecord(Record):
    """A registered dataset version: fingerprint, source, curation report, rows per split.

    ``uri`` says where its files are: an artifact store URL (``registry.datasets.register``)
    or, for versions registered before files went through the artifact store, a local path.
    """

    fingerprint: str
    source: str
    report: dict[str, Any]
    splits: dict[str, int]
    uri: str | None
    created_at: datetime


@dataclass(frozen=True)
class ModelVersionRecord(Record):
    """Version ``version`` of ``task``'s specialists: its artifact and lineage."""

    task: str
    version: int
    kind: str
    artifact_digest: str
    artifact_uri: str
    dataset_fingerprint: str
    lineage: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class EvaluationRecord(Record):
    """A model version measured on a dataset split, with the general model on the same rows.

    ``usage`` and ``general_usage`` are what each side consumed, ``{"compute_s",
    "input_tokens", "output_tokens", "rows"}`` (None: stored before usage was); their cost at
    any prices is :meth:`cost_per_1m_usd`.

        >>> record.cost_per_1m_usd(Prices(input_per_1m_tokens_usd=0.15), general=True)
        6.15
    """

    id: int
    task: str
    version: int
    dataset_fingerprint: str
    split: str
    metrics: dict[str, Any]
    general: dict[str, Any] | None
    comparison: dict[str, Any] | None
    created_at: datetime
    usage: dict[str, Any] | None = None
    general_usage: dict[str, Any] | None = None

    def cost_per_1m_usd(self, prices: Prices, *, general: bool = False) -> float | None:
        """USD per 1M predictions of the specialist (or the general model), from the stored
        usage at ``prices``: :func:`niche.evaluation.cost_per_1m`, as the evaluation priced
        it. None when no usage was stored."""
        stored = self.general_usage if general else self.usage
        if not stored or not stored.get("rows"):
            return None
        usage = Usage(
            compute_s=float(stored.get("compute_s") or 0.0),
            input_tokens=stored.get("input_tokens"),
            output_tokens=stored.get("output_tokens"),
        )
        return cost_per_1m(usage, int(stored["rows"]), prices)


@dataclass(frozen=True)
class AliasEventRecord(Record):
    """One move of an alias: from which version (None: it was unset) to which, who and why."""

    id: int
    task: str
    alias: str
    from_version: int | None
    to_version: int
    actor: str
    reason: str | None
    at: datetime


@dataclass(frozen=True)
class GateRecord(Record):
    """A stored promotion decision, passed or not, with every check behind it.

    ``spec_fingerprint`` is :func:`~niche.registry.tasks.gate_fingerprint` of the task spec it
    was decided under (None: stored before niche recorded it); a decision counts for moving an
    alias by hand only while the task's spec still has that fingerprint.
    """

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
    spec_fingerprint: str | None = None


@dataclass(frozen=True)
class PromotionRecord(Record):
    """What one promotion did: the gate decision it stored (if any) and the alias move (if any).

    ``moved``: the alias now points at ``version``; ``already``: it did before, nothing moved;
    ``forced``: the move went ahead without a passed gate, for the reason in ``gate.why``.

        >>> outcome = registry.promotions.promote("banking77", "champion", 4, decision=result)
        >>> outcome.moved, outcome.event.from_version
        (True, 3)
    """

    task: str
    alias: str
    version: int
    previous_version: int | None
    moved: bool
    already: bool
    forced: bool
    gate: GateRecord | None
    event: AliasEventRecord | None

    @property
    def passed(self) -> bool | None:
        """Whether the gate stored by this promotion passed (None: it stored none)."""
        return self.gate.passed if self.gate is not None else None

    DICT_KEYS: ClassVar[tuple[str, ...] | None] = (
        "task",
        "alias",
        "version",
        "previous_version",
        "passed",
        "moved",
        "already",
        "forced",
        "gate",
        "event",
    )


@dataclass(frozen=True)
class KeyRecord(Record):
    """A gateway API key as stored: never its secret, only the secret's first 8 characters.

    >>> record, secret = registry.keys.create(scope="inference", budget_usd=5.0, name=None)
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

    DICT_KEYS: ClassVar[tuple[str, ...] | None] = (
        "id",
        "name",
        "prefix",
        "scope",
        "budget_usd",
        "spent_usd",
        "remaining_usd",
        "exhausted",
        "created_at",
        "revoked_at",
    )

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


@dataclass(frozen=True)
class KeyReservation(Record):
    """The answer to a budget reservation (``registry.keys.reserve``) and the key's state.

    ``id`` is the reservation to settle (None: refused, the key's budget is spent or held by
    requests in flight); ``spent_usd`` and ``reserved_usd`` are the key's at that moment,
    this reservation included.

        >>> held = registry.keys.reserve(key.id, 0.003, ttl_s=600.0)
        >>> held.granted, held.reserved_usd
        (True, 0.003)
    """

    id: int | None
    key_id: int
    amount_usd: float
    budget_usd: float | None
    spent_usd: float
    reserved_usd: float
    expires_at: datetime | None

    @property
    def granted(self) -> bool:
        """Whether the reservation was made (the request may run)."""
        return self.id is not None


@dataclass(frozen=True, kw_only=True)
class TrafficRecord(Record):
    """One gateway request to capture, built by the caller; ``at`` None: the registry's now.

    ``route`` is free text (``specialist``, ``general``, ``specialist-fallback``,
    ``passthrough`` …); ``input`` is the text or the chat messages, as JSON. ``at`` is when
    the request arrived; ``compute_s`` the specialist's compute (with the tokens, the usage
    its cost derives from). :func:`niche.registry.clipping.clean_traffic` makes a record
    storable whatever a client sent: ``input_bytes`` is then the input's size before it was
    clipped, and ``cleaned`` says whether anything was cut or removed. ``request_id`` is the
    id returned to the client (feedback names the record by it); ``text`` what the specialist
    classified; ``sampled`` that the general model was asked because the request was drawn at
    random, whatever the specialist's confidence (the unbiased teacher sample);
    ``gold_label``/``gold_at`` a true label sent later (``registry.traffic.attach_labels``).

        >>> registry.traffic.record([TrafficRecord(task="banking77", model="banking77",
        ...     route="specialist", input="card not arrived", specialist_label="card_arrival",
        ...     specialist_confidence=0.93, model_version=3, latency_ms=4.1, status=200)])
        1
    """

    DICT_KEYS: ClassVar[tuple[str, ...] | None] = (*TRAFFIC_FIELDS, "at")

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
    compute_s: float | None = None
    input_bytes: int | None = None
    cleaned: bool = False
    request_id: str | None = None
    text: str | None = None
    sampled: bool = False
    gold_label: str | None = None
    gold_at: datetime | None = None
    at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class StoredTrafficRecord(Record):
    """A stored :class:`TrafficRecord`: the same fields with its ``id`` and a set ``at``."""

    DICT_KEYS: ClassVar[tuple[str, ...] | None] = ("id", *TRAFFIC_FIELDS, "at")

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
    compute_s: float | None
    input_bytes: int | None
    cleaned: bool
    request_id: str | None
    text: str | None
    sampled: bool
    gold_label: str | None
    gold_at: datetime | None
    at: datetime


@dataclass(frozen=True)
class AuditEventRecord(Record):
    """One change to the registry: when, who, what (``action``), on which task and subject.

    ``action`` is ``task.created``, ``task.updated``, ``dataset.registered``,
    ``dataset.files_added``, ``model.registered``, ``alias.moved``, ``gate.decided``,
    ``key.created``, ``key.revoked``, ``traffic.labelled``, ``alert.opened``,
    ``alert.resolved`` or ``loop.decided`` (a decision of the loop, written by
    ``registry.audit.record``); ``subject`` names what changed (``v3``, a key prefix, a
    fingerprint prefix); ``detail`` holds the rest as JSON (never a key's secret).

        >>> [e.action for e in registry.audit.events("banking77")]
        ['task.created', 'model.registered', 'gate.decided', 'alias.moved']
    """

    id: int
    at: datetime
    actor: str
    action: str
    task: str | None
    subject: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class DriftReportRecord(Record):
    """One stored monitoring check of ``task``'s champion ``model_version`` over ``window``.

    ``signals`` is a list of dicts, each with at least ``name``, ``statistic``, ``p_value``
    or ``interval``, ``threshold`` and ``alarm``; ``alarm`` is whether any of them raised one.

        >>> registry.monitoring.latest("banking77").signals[0]["name"]
        'input_drift'
    """

    id: int
    task: str
    model_version: int | None
    at: datetime
    window: dict[str, Any]
    signals: list[dict[str, Any]]
    alarm: bool


@dataclass(frozen=True)
class AlertRecord(Record):
    """A signal of ``task`` that crossed its threshold: ``open`` until a later check finds it
    back in bounds (``resolved``, with ``resolved_at``).

        >>> [(a.signal, a.state) for a in registry.monitoring.alerts("banking77")]
        [('input_drift', 'open')]
    """

    id: int
    task: str
    signal: str
    model_version: int | None
    state: str
    opened_at: datetime
    resolved_at: datetime | None
    report_id: int | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class LeaseRecord(Record):
    """Who holds ``task`` in the loop, since when and until when (a lease lapses by itself).

    >>> registry.leases.acquire("banking77", holder="loop:host:123", ttl_s=900).holder
    'loop:host:123'
    """

    task: str
    holder: str
    acquired_at: datetime
    expires_at: datetime
