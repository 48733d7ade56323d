"""Distil a dataset version from a task's captured traffic: the general model's answers become
teacher labels, gold labels sent later override them, the newest rows are the test split.

    >>> distilled = distil("banking77", since="7d")
    >>> distilled.version.source
    'traffic:banking77#ids=1-5000'
    >>> distilled.to_dict()["rows"]
    {'teacher': 4210, 'gold': 120}

The rows then go through the same curation as any dataset (:func:`niche.data.curate`: exact
and near duplicates, conflicting labels, train↔test leaks) and are registered like any
version (:func:`~niche.workflows.save_dataset`), with where they came from in the curation
report's ``origin``, so a model's lineage walks back to the traffic window it learnt from.
Too few usable rows raise :class:`~niche.errors.NotEnoughDataError` and write nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from niche.data import DatasetVersion, Rows, check_usable, curate, normalise_text
from niche.errors import DataValidationError, NotEnoughDataError, ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.specialists.prompting import content_text
from niche.workflows._context import resolve
from niche.workflows.data import is_registered, save_dataset
from niche.workflows.traffic import parse_since

if TYPE_CHECKING:
    from niche.registry import DatasetRecord, Registry, StoredTrafficRecord

__all__ = ["PAGE_RECORDS", "SKIP_REASONS", "DistilledData", "distil", "record_text"]

PAGE_RECORDS: Final = 5000
"""Records read per query: a big traffic table is paged through by id, never loaded at once."""

SKIP_REASONS: Final = (
    "no_label",
    "invalid_gold_label",
    "failed_request",
    "invalid_teacher_label",
    "contradicts_gold",
    "no_text",
    "clipped_input",
    "blank_text",
)
"""Why a record read gives no row: ``no_label`` (neither a teacher nor a gold label; only
counted with ``with_labels``, which reads every record), ``invalid_gold_label`` (a stored gold
label no longer in the task's label set), ``failed_request`` (a teacher label on a request
that did not succeed), ``invalid_teacher_label`` (the general model named no label of the
task), ``contradicts_gold`` (a teacher label on a text whose gold label differs),
``no_text`` / ``clipped_input`` (no text column and no whole input to take it from),
``blank_text`` (nothing left after normalisation)."""

_SUCCESS = 200


@dataclass(frozen=True)
class DistilledData:
    """A dataset version distilled from ``task``'s traffic, and its registry record.

    ``already`` is true when the same rows were registered before (nothing was written; the
    stored report keeps the origin of that first registration). :attr:`origin` is the
    curation report's ``origin`` (see :func:`distil`).
    """

    task: str
    version: DatasetVersion
    record: DatasetRecord
    already: bool = False

    @property
    def origin(self) -> dict[str, Any]:
        """Where the rows came from: the traffic window and what was kept and skipped."""
        return dict(self.version.report.origin or {})

    def to_dict(self) -> dict[str, Any]:
        """What ``niche distil --json`` prints (see :func:`distil` for ``origin``'s keys)."""
        origin = self.origin
        test_rows = self.version.report.rows_out.get("test", 0)
        gold_test = len(origin.get("gold_test", []))
        return {
            "task": self.task,
            "fingerprint": self.version.fingerprint,
            "source": self.version.source,
            "uri": self.record.uri,
            "already_registered": self.already,
            "splits": dict(self.version.report.rows_out),
            "window": {
                key: origin.get(key)
                for key in ("since", "until", "after_id", "first_id", "last_id", "records_read")
            },
            "rows": dict(origin.get("rows", {})),
            "test_rows": {"teacher": test_rows - gold_test, "gold": gold_test},
            "skipped": dict(origin.get("skipped", {})),
            "routes": dict(origin.get("routes", {})),
            "shadowed": origin.get("shadowed", 0),
            "sampled": origin.get("sampled", 0),
            "labels_file": origin.get("labels_file"),
            "curation": self.version.report.to_dict(),
        }


@dataclass(frozen=True)
class _Row:
    id: int
    text: str
    label: str
    gold: bool
    # The general model's answer where it differs in kind from the label: a gold row's
    # teacher label (None: the general model was not asked, or named no label).
    teacher: str | None = None


def record_text(record: StoredTrafficRecord) -> tuple[str | None, str | None]:
    """``(text, None)``: what the specialist classified, or ``(None, reason)`` when unknown.

    The ``text`` column; for records stored before it existed, the input when it is a string
    or the last user message (its text parts) when it is a chat message list. An input cut
    by capture (``input_bytes`` set) is not the text that was classified: ``clipped_input``.

        >>> record_text(record)
        ('my card has not arrived', None)
    """
    if isinstance(record.text, str):
        return record.text, None
    if record.input_bytes is not None:
        return None, "clipped_input"
    value = record.input
    if isinstance(value, str):
        return value, None
    if isinstance(value, list):
        for message in reversed(value):
            if isinstance(message, dict) and message.get("role") == "user":
                return content_text(message.get("content")), None
    return None, "no_text"


def _file_labels(
    path: str | Path, task: str, label_set: set[str]
) -> tuple[dict[str, str], dict[str, Any]]:
    """The labels of ``path`` by request id, checked against the task's label set."""
    from niche.workflows.feedback import read_labels

    pairs, lines = read_labels(path)
    labels: dict[str, str] = {}
    for line, (request_id, label) in zip(lines, pairs, strict=True):
        if label_set and label not in label_set:
            shown = ", ".join(sorted(label_set)[:10])
            raise ValidationError(
                f"{path}, line {line}: label {label!r} (request_id {request_id}) is not "
                f"one of task {task}'s labels ({shown}{', …' if len(label_set) > 10 else ''})",
                param="with_labels",
            )
        labels[request_id] = label
    return labels, {"path": str(path), "labels": len(labels), "used": 0}


def _time(value: datetime | str | None, name: str, now: datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        if now is None:
            return parse_since(value)
        return parse_since(value, clock=lambda: now)
    except ValidationError:
        raise ValidationError(
            f"--{name} {value!r} is neither ISO-8601 (2026-03-01T12:00:00Z) nor a duration "
            "like 30m, 1h or 2d",
            param=name,
        ) from None


def _how_to_get_more(task: str) -> str:
    return (
        f"to get more: let the gateway ask the general model for a share of the requests the "
        f"specialist answers (`niche tasks edit {task} --set serving.shadow_fraction=0.1`), "
        "send gold labels (POST /v1/feedback, `niche feedback --file labels.csv`), or wait "
        "for more traffic"
    )


def distil(
    task: str,
    settings: Settings | None = None,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    after_id: int | None = None,
    min_rows: int | None = None,
    with_labels: str | Path | None = None,
    test_size: float = 0.2,
    seed: int | None = None,
    registry: Registry | None = None,
    progress: Progress = NO_PROGRESS,
    now: datetime | None = None,
) -> DistilledData:
    """Build, curate and register a dataset version from ``task``'s captured traffic.

    Reads the task's records at or after ``since`` and before ``until`` (datetimes, ISO-8601
    or durations back from ``now``), with an id above ``after_id``, up to the newest id when
    the call starts. A record is a row when it has a text (:func:`record_text`) and a label:
    its gold label (from feedback, or from ``with_labels``: a ``request_id,label`` CSV whose
    labels count as gold for this dataset only, nothing is stored), else the general model's
    answer when it names one of the task's labels and the request succeeded (cascaded,
    shadowed and sampled requests, every request of a task without a specialist). The newest
    ``test_size`` share of rows (by record id: arrival) is the test split, the rest train;
    then :func:`~niche.data.curate` and :func:`~niche.data.check_usable` run as for any
    dataset. Fewer than ``min_rows`` (default: the task's ``loop.min_rows``) rows, before or
    after curation, raise :class:`~niche.errors.NotEnoughDataError` and write nothing.

    The version's ``source`` is ``traffic:TASK#ids=FIRST-LAST``; its report's ``origin``:

    - ``kind``: ``"traffic"``; ``task``; ``since``, ``until`` (ISO-8601 or None),
      ``after_id`` (the bound asked for);
    - ``first_id``, ``last_id``: the lowest and highest id of the records read (the loop
      passes ``last_id`` as the next ``after_id``); ``records_read``;
    - ``rows``: ``{"teacher", "gold"}`` rows found, before curation;
    - ``skipped``: ``{reason: count}`` for the reasons of :data:`SKIP_REASONS` that occurred;
    - ``routes``: rows per record route; ``shadowed``: rows of requests shadowed to the
      general model; ``sampled``: of those, the ones drawn at random (the unbiased sample);
    - ``labels_file``: ``{"path", "labels", "used"}`` with ``with_labels``, else None;
    - ``test_from_id``: the first record id of the test split (the time cut);
    - ``gold_test``: positions in the curated test split of the rows whose label is gold
      (the others are the teacher's): the evaluation's ``gold_accuracy`` and
      ``teacher_agreement`` are measured on them; ``gold_test_teacher``: for each of them,
      the general model's recorded answer (None: it was not asked) — what the gate compares
      a candidate with, since on the teacher's own rows the general model is right by
      construction.

        >>> distil("banking77", since="7d", min_rows=300).to_dict()["splits"]
        {'train': 3120, 'test': 790}
    """
    if not 0.0 < test_size < 1.0:
        raise ValidationError(
            f"test_size must be between 0 and 1, got {test_size}", param="test_size"
        )
    if min_rows is not None and (
        isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 2
    ):
        raise ValidationError(f"min_rows must be 2 or more, got {min_rows!r}", param="min_rows")
    start, end = _time(since, "since", now), _time(until, "until", now)
    settings, registry = resolve(settings, registry)
    spec = registry.tasks.get(task).spec
    needed = spec.loop.min_rows if min_rows is None else min_rows
    seed = settings.get("NICHE_SEED") if seed is None else seed
    label_set = set(spec.labels)
    file_labels: dict[str, str] = {}
    labels_file: dict[str, Any] | None = None
    if with_labels is not None:
        file_labels, labels_file = _file_labels(with_labels, task, label_set)

    # No progress while reading: a refusal for too few rows prints only its error.
    read = _read_window(
        registry,
        task,
        since=start,
        until=end,
        after_id=after_id,
        every_record=with_labels is not None,
        file_labels=file_labels,
        label_set=label_set,
    )
    rows, skipped = read.rows, read.skipped
    if labels_file is not None:
        labels_file["used"] = read.file_labels_used
    rows = _without_contradicted_gold(rows, skipped)
    found = {"teacher": sum(not r.gold for r in rows), "gold": sum(r.gold for r in rows)}
    if len(rows) < needed:
        raise NotEnoughDataError(
            f"task {task}: {len(rows)} labelled rows in its traffic ({found['teacher']} "
            f"teacher, {found['gold']} gold, from {read.records} records read); distillation needs "
            f"at least {needed} (loop.min_rows or --min-rows); {_how_to_get_more(task)}",
            task=task,
            rows=len(rows),
            needed=needed,
        )

    # The newest rows are the test split: a model is judged on traffic after what it learnt.
    n_test = min(len(rows) - 1, max(1, round(len(rows) * test_size)))
    train, test = rows[: len(rows) - n_test], rows[len(rows) - n_test :]
    source = f"traffic:{task}#ids={read.first_id}-{read.last_id}"
    with progress.task("curating", total=None):
        try:
            version = curate(
                _rows(train, task),
                test_rows=_rows(test, task),
                test_size=test_size,
                seed=seed,
                source=source,
            )
            check_usable(version)
        except DataValidationError as exc:
            raise NotEnoughDataError(
                f"task {task}: {len(rows)} labelled rows in its traffic, but {exc.problem}; "
                f"{_how_to_get_more(task)}",
                task=task,
                rows=len(rows),
                needed=needed,
            ) from exc
    usable = sum(version.report.rows_out.values())
    if usable < needed:
        raise NotEnoughDataError(
            f"task {task}: {usable} usable rows left after curation of {len(rows)} labelled "
            f"rows ({version.report.exact_duplicates} exact duplicates, "
            f"{version.report.conflicting_duplicates} conflicting, "
            f"{version.report.near_duplicates} near duplicates, "
            f"{version.report.leaks_removed} train-test leaks removed); distillation needs at "
            f"least {needed} (loop.min_rows or --min-rows); {_how_to_get_more(task)}",
            task=task,
            rows=usable,
            needed=needed,
        )
    gold_teachers = {row.id: row.teacher for row in test if row.gold}
    test_ids = version.splits["test"].lines or ()
    gold_test = [i for i, record_id in enumerate(test_ids) if record_id in gold_teachers]
    version.report.origin = {
        "kind": "traffic",
        "task": task,
        "since": start.isoformat() if start is not None else None,
        "until": end.isoformat() if end is not None else None,
        "after_id": after_id,
        "first_id": read.first_id,
        "last_id": read.last_id,
        "records_read": read.records,
        "rows": found,
        "skipped": {reason: skipped[reason] for reason in SKIP_REASONS if skipped[reason]},
        "routes": dict(sorted(read.routes.items())),
        "shadowed": read.shadowed,
        "sampled": read.sampled,
        "labels_file": labels_file,
        "test_from_id": test[0].id,
        "gold_test": gold_test,
        "gold_test_teacher": [gold_teachers[test_ids[i]] for i in gold_test],
    }
    already = is_registered(version.fingerprint, registry)
    stored = save_dataset(version, settings, registry=registry)
    return DistilledData(task=task, version=version, record=stored, already=already)


@dataclass
class _Window:
    """What reading a window of records gave: rows, and counts of everything else."""

    rows: list[_Row] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    shadowed: int = 0
    sampled: int = 0
    records: int = 0
    file_labels_used: int = 0
    first_id: int | None = None
    last_id: int | None = None


def _read_window(
    registry: Registry,
    task: str,
    *,
    since: datetime | None,
    until: datetime | None,
    after_id: int | None,
    every_record: bool,
    file_labels: dict[str, str],
    label_set: set[str],
) -> _Window:
    """``task``'s records in the window, :data:`PAGE_RECORDS` per query, oldest first, up to
    the newest id when called (capture keeps writing meanwhile); only labelled ones unless
    ``every_record`` (a labels file may name any record)."""
    window = _Window()
    through = registry.traffic.last_id(task)
    cursor = after_id
    while through is not None:
        page = registry.traffic.window(
            task,
            since=since,
            until=until,
            after_id=cursor,
            through_id=through,
            labelled=not every_record,
            limit=PAGE_RECORDS,
        )
        for record in page:
            window.first_id = record.id if window.first_id is None else window.first_id
            window.last_id = record.id
            row = _row_of(record, file_labels, label_set)
            if isinstance(row, str):
                window.skipped[row] += 1
                continue
            window.rows.append(row)
            window.routes[record.route] += 1
            window.shadowed += bool(record.shadow)
            window.sampled += bool(record.sampled)
            window.file_labels_used += record.request_id in file_labels
        window.records += len(page)
        if len(page) < PAGE_RECORDS:
            break
        cursor = page[-1].id
    return window


def _row_of(
    record: StoredTrafficRecord, file_labels: dict[str, str], label_set: set[str]
) -> _Row | str:
    """The row ``record`` gives, or why it gives none (a reason of :data:`SKIP_REASONS`)."""
    gold = file_labels.get(record.request_id) if record.request_id is not None else None
    if gold is None and record.gold_label is not None:
        gold = record.gold_label
        if label_set and gold not in label_set:
            return "invalid_gold_label"
    teacher = None
    if (
        record.general_label is not None
        and record.status == _SUCCESS
        and (not label_set or record.general_label in label_set)
    ):
        teacher = record.general_label
    if gold is not None:
        label, is_gold = gold, True
    elif record.general_label is not None:
        if record.status != _SUCCESS:
            return "failed_request"
        if label_set and record.general_label not in label_set:
            return "invalid_teacher_label"
        label, is_gold = record.general_label, False
    else:
        return "no_label"
    text, reason = record_text(record)
    if text is None:
        return reason or "no_text"
    if not normalise_text(text):
        return "blank_text"
    return _Row(id=record.id, text=text, label=label, gold=is_gold, teacher=teacher)


def _without_contradicted_gold(rows: list[_Row], skipped: Counter[str]) -> list[_Row]:
    """``rows`` less the teacher rows whose text has a gold label that differs.

    Curation would drop every copy of a text with two labels; the gold one is the truth.
    """
    gold: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.gold:
            gold[normalise_text(row.text)].add(row.label)
    if not gold:
        return rows
    kept = []
    for row in rows:
        truth = gold.get(normalise_text(row.text)) if not row.gold else None
        if truth is not None and row.label not in truth:
            skipped["contradicts_gold"] += 1
            continue
        kept.append(row)
    return kept


def _rows(rows: list[_Row], task: str) -> Rows:
    # Each row's "line" is its record id, so curation's messages and kept rows name records.
    return Rows(
        texts=tuple(row.text for row in rows),
        labels=tuple(row.label for row in rows),
        source=f"traffic:{task}",
        lines=tuple(row.id for row in rows),
    )
