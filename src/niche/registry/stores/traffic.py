"""Captured gateway traffic: one batched insert on the hot path, filtered reads and counts,
and pruning of old records in batches.

>>> registry.traffic.record(batch)
250
>>> registry.traffic.count("banking77", since=parse_since("1h", now))
>>> registry.traffic.prune(parse_since("30d", now), batch_size=10_000)
>>> registry.traffic.attach_labels([("chatcmpl-9f…", "card_arrival")])
1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from niche.errors import NotFoundError, ValidationError
from niche.registry import db
from niche.registry.models import Base, TaskRow, TrafficRow
from niche.registry.records import TRAFFIC_FIELDS, StoredTrafficRecord, TrafficRecord
from niche.registry.stores.audit import write_event
from niche.registry.stores.base import Store, oldest_first
from niche.registry.tasks import TaskSpec
from niche.registry.validation import (
    aware,
    json_value,
    limit_count,
    listing,
    nonempty,
    usd_amount,
)

__all__ = ["MAX_LABELS", "TrafficStore"]

MAX_LABELS: Final = 10_000
"""Gold labels one :meth:`TrafficStore.attach_labels` call takes at most (one transaction:
a SQLite writer holds the whole database meanwhile, capture's inserts included)."""
_IN_CHUNK: Final = 1_000  # request ids per IN (...) lookup, well under every driver's limit

_TRAFFIC_COLUMNS: Final = (*TRAFFIC_FIELDS, "at")
_INPUT: Final = _TRAFFIC_COLUMNS.index("input")
_TIMES: Final = tuple(_TRAFFIC_COLUMNS.index(name) for name in ("gold_at", "at"))


def _traffic_record(row: TrafficRow) -> StoredTrafficRecord:
    return StoredTrafficRecord(
        id=row.id, at=row.at, **{name: getattr(row, name) for name in TRAFFIC_FIELDS}
    )


def _seconds(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"compute_s must be a finite number of seconds, got {value!r}")
    if value < 0:
        raise ValidationError(f"compute_s must not be negative, got {value!r}")
    return float(value)


def _traffic_values(record: TrafficRecord, now: datetime) -> dict[str, Any]:
    """The row to insert for ``record``, checked; errors name the offending field."""
    if not isinstance(record, TrafficRecord):
        raise ValidationError(f"traffic.record takes TrafficRecord objects, got {record!r}")
    values = {name: getattr(record, name) for name in TRAFFIC_FIELDS}
    values["model"] = nonempty(record.model, "model")
    values["route"] = nonempty(record.route, "route")
    values["shadow"] = bool(record.shadow)
    values["input"] = json_value(record.input, "input")
    values["latency_ms"] = usd_amount(record.latency_ms, "latency_ms")
    values["cost_usd"] = usd_amount(record.cost_usd, "cost_usd")
    values["compute_s"] = _seconds(record.compute_s)
    values["cleaned"] = bool(record.cleaned)
    for name in ("input_tokens", "output_tokens", "input_bytes"):
        value = values[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValidationError(f"{name} must be a whole number, got {value!r}")
    if isinstance(record.status, bool) or not isinstance(record.status, int):
        raise ValidationError(f"status must be an HTTP status code, got {record.status!r}")
    values["sampled"] = bool(record.sampled)
    values["gold_at"] = aware(record.gold_at, "gold_at") if record.gold_at is not None else None
    values["at"] = aware(record.at, "at") if record.at is not None else now
    return values


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
            for index in _TIMES:
                if values[index] is not None:
                    values[index] = (
                        values[index]
                        .astimezone(UTC)
                        .replace(tzinfo=None)
                        .isoformat(" ", "microseconds")
                    )
        params.append(tuple(values))
    connection.exec_driver_sql(sql, params)


def _traffic_filter(
    query: Any,
    task: str | None,
    since: datetime | None,
    *,
    until: datetime | None = None,
    after_id: int | None = None,
    through_id: int | None = None,
    labelled: bool = False,
    model_version: int | None = None,
) -> Any:
    if task is not None:
        query = query.where(TrafficRow.task == task)
    if since is not None:
        query = query.where(TrafficRow.at >= aware(since, "since"))
    if until is not None:
        query = query.where(TrafficRow.at < aware(until, "until"))
    if after_id is not None:
        query = query.where(TrafficRow.id > _record_id(after_id, "after_id"))
    if through_id is not None:
        query = query.where(TrafficRow.id <= _record_id(through_id, "through_id"))
    if labelled:  # a label to learn from: the general model's, or a gold one sent later
        query = query.where(
            or_(TrafficRow.general_label.is_not(None), TrafficRow.gold_label.is_not(None))
        )
    if model_version is not None:
        query = query.where(TrafficRow.model_version == model_version)
    return query


def _record_id(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be a record id (a whole number >= 0), got {value!r}")
    return value


def _label_items(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    """``items`` checked, as request id → label (a repeated id: its last label wins)."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ValidationError(
            f"attach_labels takes a list of (request_id, label) pairs, got {type(items).__name__}"
        )
    if len(items) > MAX_LABELS:
        raise ValidationError(
            f"{len(items):,} labels in one call, over the limit of {MAX_LABELS:,}: send them "
            "in batches",
            param="feedback",
        )
    labels: dict[str, str] = {}
    for index, item in enumerate(items):
        if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != 2:
            raise ValidationError(
                f"label {index + 1} must be a (request_id, label) pair, got {item!r}"
            )
        request_id, label = item
        if not isinstance(request_id, str) or not request_id.strip():
            raise ValidationError(
                f"label {index + 1}: request_id must be a non-empty string, got {request_id!r}",
                param="request_id",
            )
        if not isinstance(label, str) or not label.strip():
            raise ValidationError(
                f"label {index + 1} (request id {request_id!r}): label must be a non-empty "
                f"string, got {label!r}",
                param="label",
            )
        labels.pop(request_id, None)  # last one wins, in its own place
        labels[request_id] = label
    return labels


def _quoted(values: Sequence[str]) -> str:
    return listing([repr(value) for value in values], "none")


class TrafficStore(Store):
    """Requests the gateway captured (``registry.traffic``)."""

    def record(self, records: Sequence[TrafficRecord]) -> int:
        """Store captured requests in one batched INSERT; return how many were stored.

        Every record is checked first, so a bad one stores none. Records without ``at`` get
        the registry clock's now.

            >>> registry.traffic.record(batch)
            250
        """
        if not records:
            return 0
        now = self.database.now()
        rows = [_traffic_values(record, now) for record in records]
        with self.database.session(write=True) as session:
            try:
                _insert_traffic(session.connection(), rows)
            except IntegrityError as exc:
                # The only constraint a valid record can break is its key_id.
                raise NotFoundError(
                    "a traffic record names an API key id that does not exist"
                ) from exc
        return len(rows)

    def query(
        self, task: str | None = None, *, since: datetime | None = None, limit: int | None = None
    ) -> list[StoredTrafficRecord]:
        """Captured requests for ``task`` (or all) at or after ``since``, oldest first.

        With ``limit``, the most recent ``limit`` of them (still oldest first).

            >>> registry.traffic.query("banking77", since=parse_since("1h", now), limit=100)
        """
        limit_count(limit)
        with self.database.session() as session:
            query = _traffic_filter(select(TrafficRow), task, since)
            rows = oldest_first(session, query, TrafficRow.at, TrafficRow.id, limit)
            return [_traffic_record(row) for row in rows]

    def prune(self, before: datetime, *, batch_size: int = 10_000) -> int:
        """Delete the records from before ``before``, ``batch_size`` per transaction; return
        how many were deleted.

        Short transactions keep the gateway's inserts flowing meanwhile (a SQLite writer holds
        the whole database; one long DELETE would stall capture).

            >>> registry.traffic.prune(parse_since("30d", now), batch_size=10_000)
            120000
        """
        cutoff = aware(before, "before")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(f"batch_size must be a positive integer, got {batch_size!r}")
        deleted = 0
        while True:
            with self.database.session(write=True) as session:
                oldest = (
                    select(TrafficRow.id)
                    .where(TrafficRow.at < cutoff)
                    .order_by(TrafficRow.id)
                    .limit(batch_size)
                )
                ids = list(session.scalars(oldest))
                if ids:
                    session.execute(
                        delete(TrafficRow).where(TrafficRow.id.in_(ids)),
                        execution_options={"synchronize_session": False},
                    )
            deleted += len(ids)
            if len(ids) < batch_size:
                return deleted

    def count(
        self,
        task: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        labelled: bool = False,
    ) -> int:
        """How many requests were captured for ``task`` (or all) at or after ``since`` (and
        before ``until``, with an id above ``after_id``; ``labelled``: only those with a
        general-model or gold label).

        >>> registry.traffic.count("banking77")
        >>> registry.traffic.count("banking77", after_id=last_trained_id, labelled=True)
        """
        with self.database.session() as session:
            query = _traffic_filter(
                select(func.count(TrafficRow.id)),
                task,
                since,
                until=until,
                after_id=after_id,
                labelled=labelled,
            )
            return int(session.scalar(query) or 0)

    def window(
        self,
        task: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        through_id: int | None = None,
        labelled: bool = False,
        model_version: int | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[StoredTrafficRecord]:
        """``task``'s records in a window, oldest first: at or after ``since`` and before
        ``until``, ids in (``after_id``, ``through_id``], only ``labelled`` ones (a general
        or gold label), only those ``model_version`` answered. With ``limit``, the first
        ``limit`` of them, or the last ones with ``newest``. Every bound is read through the
        ``(task, at)`` or ``(task, id)`` index, so a window stays fast on millions of rows.

            >>> registry.traffic.window("banking77", limit=500, newest=True)  # latest 500
            >>> registry.traffic.window("banking77", after_id=1200, labelled=True)
        """
        limit_count(limit)
        with self.database.session() as session:
            query = _traffic_filter(
                select(TrafficRow),
                task,
                since,
                until=until,
                after_id=after_id,
                through_id=through_id,
                labelled=labelled,
                model_version=model_version,
            )
            if newest:
                query = query.order_by(TrafficRow.id.desc())
            else:
                query = query.order_by(TrafficRow.id)
            if limit is not None:
                query = query.limit(limit)
            rows = list(session.scalars(query))
            if newest:
                rows.reverse()
            return [_traffic_record(row) for row in rows]

    def routes(self, task: str | None = None, *, since: datetime | None = None) -> dict[str, int]:
        """How many of ``task``'s (or all) records at or after ``since`` took each route, in
        one grouped query (a cascade rate over millions of records reads no rows).

            >>> registry.traffic.routes("banking77", since=parse_since("30d", now))
            {'specialist': 9120, 'general': 880}
        """
        with self.database.session() as session:
            query = _traffic_filter(
                select(TrafficRow.route, func.count(TrafficRow.id)), task, since
            ).group_by(TrafficRow.route)
            return {route: int(n) for route, n in session.execute(query)}

    def last_id(self, task: str | None = None) -> int | None:
        """The newest record's id for ``task`` (or all); None when there is none."""
        with self.database.session() as session:
            query = _traffic_filter(select(func.max(TrafficRow.id)), task, None)
            value = session.scalar(query)
            return int(value) if value is not None else None

    def attach_labels(
        self,
        items: Sequence[tuple[str, str]],
        *,
        actor: str | None = None,
        key_id: int | None = None,
    ) -> int:
        """Attach gold labels to captured task requests, named by the request id their client
        got (a chat completion's ``id``, a prediction's ``request_id``); return how many
        records were labelled.

        One transaction, all or nothing: every id must name a stored task request (with
        ``key_id``, one made with that key: another key's request is unknown to it) and every
        label must be in its task's label set; otherwise nothing changes and
        :class:`~niche.errors.NotFoundError` (an unknown id) or
        :class:`~niche.errors.ValidationError` (a pass-through request, a task without a
        label set or gone, a label outside the set) names the first few and how many. A
        record labelled before is labelled again (the last label wins; it counts); so does an
        id given twice in ``items``. At most :data:`MAX_LABELS` per call. Sets ``gold_label``
        and ``gold_at`` (the registry clock) and writes a ``traffic.labelled`` audit event.

            >>> registry.traffic.attach_labels([("chatcmpl-9f…", "card_arrival")], actor="cli:ana")
            1
        """
        labels = _label_items(items)
        if not labels:
            return 0
        ids = list(labels)
        with self.database.session(write=True) as session:
            found: dict[str, list[Any]] = {}
            for start in range(0, len(ids), _IN_CHUNK):
                rows = session.execute(  # through the request_id index
                    select(
                        TrafficRow.id,
                        TrafficRow.request_id,
                        TrafficRow.task,
                        TrafficRow.key_id,
                        TrafficRow.gold_label,
                    ).where(TrafficRow.request_id.in_(ids[start : start + _IN_CHUNK]))
                )
                for row in rows:
                    if key_id is None or row.key_id == key_id:
                        found.setdefault(row.request_id, []).append(row)
            unknown = [request_id for request_id in ids if request_id not in found]
            if unknown:
                what = (
                    f"no captured request has the request id {unknown[0]!r}"
                    if len(unknown) == 1
                    else f"{len(unknown)} of {len(ids)} request ids name no captured request: "
                    f"{_quoted(unknown)}"
                )
                raise NotFoundError(
                    f"{what} (a request id is the `id` of a chat completion or the "
                    "`request_id` of a prediction that the gateway answered)"
                )
            untasked = [rid for rid in ids if all(row.task is None for row in found[rid])]
            if untasked:
                raise ValidationError(
                    f"request id(s) {_quoted(untasked)} name pass-through requests (no task): "
                    "only a task's requests take gold labels",
                    param="request_id",
                )
            task_of = {rid: next(r.task for r in found[rid] if r.task is not None) for rid in ids}
            names = sorted(set(task_of.values()))
            specs = {
                name: TaskSpec.from_dict(spec)
                for name, spec in session.execute(
                    select(TaskRow.name, TaskRow.spec).where(TaskRow.name.in_(names))
                )
            }
            gone = [name for name in names if name not in specs]
            if gone:
                example = next(rid for rid in ids if task_of[rid] in gone)
                raise ValidationError(
                    f"task(s) {_quoted(gone)} no longer exist, so their requests (e.g. request "
                    f"id {example!r}) take no gold labels",
                    param="request_id",
                )
            unlabelled = [name for name in names if not specs[name].labels]
            if unlabelled:
                raise ValidationError(
                    f"task(s) {_quoted(unlabelled)} have no label set, so their requests take "
                    "no gold labels; give the task its labels first",
                    param="label",
                )
            allowed = {name: frozenset(specs[name].labels) for name in names}
            outside = [rid for rid in ids if labels[rid] not in allowed[task_of[rid]]]
            if outside:
                shown = [
                    f"{labels[rid]!r} (request id {rid!r}, task {task_of[rid]})"
                    for rid in outside[:3]
                ]
                more = f", … ({len(outside)} in all)" if len(outside) > 3 else ""
                sets = "; ".join(
                    f"labels of {name}: {listing(specs[name].labels, 'none')}"
                    for name in sorted({task_of[rid] for rid in outside[:3]})
                )
                raise ValidationError(
                    f"not a label of its task: {', '.join(shown)}{more} ({sets})", param="label"
                )
            now = self.database.now()
            changes = [
                {"id": row.id, "gold_label": labels[rid], "gold_at": now}
                for rid in ids
                for row in found[rid]
                if row.task is not None
            ]
            session.execute(update(TrafficRow), changes)
            per_task: dict[str, int] = {}
            for rid in ids:
                per_task[task_of[rid]] = per_task.get(task_of[rid], 0) + 1
            relabelled = sum(
                1 for rid in ids for row in found[rid] if row.task and row.gold_label is not None
            )
            write_event(
                session,
                at=now,
                actor=self._actor(actor),
                action="traffic.labelled",
                task=names[0] if len(names) == 1 else None,
                subject=ids[0] if len(ids) == 1 else f"{len(ids)} requests",
                detail={"count": len(changes), "relabelled": relabelled, "tasks": per_task},
            )
        return len(changes)
