"""Gold labels that arrive late: the true label of a request the gateway answered, attached
to its captured record by the request id the client got.

>>> read_labels_file("labels.csv")        # header: request_id,label
[LabelledId(request_id='chatcmpl-9f…', label='card_arrival'), …]
>>> send_feedback([("chatcmpl-9f…", "card_arrival")]).attached
1
>>> send_feedback_file("labels.csv").to_dict()
{'attached': 120, 'labels': 120, 'repeated': 0, 'source': 'labels.csv'}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from niche.errors import DataValidationError, NotFoundError, ValidationError
from niche.settings import Settings
from niche.workflows._context import resolve

if TYPE_CHECKING:
    from niche.registry import Registry

__all__ = [
    "FeedbackResult",
    "LabelledId",
    "read_labels",
    "read_labels_file",
    "send_feedback",
    "send_feedback_file",
]

_REQUEST_ID_CHARS = 64  # the traffic_records.request_id column
_SUFFIXES = frozenset({".csv", ".tsv", ".tab", ".jsonl", ".json", ".ndjson", ".parquet", ".pq"})


class LabelledId(NamedTuple):
    """One gold label: the ``request_id`` the gateway returned, and the true ``label``.

    A plain ``(request_id, label)`` tuple too, as :meth:`TrafficStore.attach_labels
    <niche.registry.stores.traffic.TrafficStore.attach_labels>` takes it.

        >>> LabelledId("chatcmpl-9f…", "card_arrival").label
        'card_arrival'
    """

    request_id: str
    label: str


@dataclass(frozen=True)
class FeedbackResult:
    """What :func:`send_feedback` did: ``attached`` records labelled, of ``labels`` given
    (``repeated``: ids given more than once, the last label kept), from ``source``.

        >>> send_feedback([("chatcmpl-9f…", "spam")]).to_dict()
        {'attached': 1, 'labels': 1, 'repeated': 0, 'source': None}
    """

    attached: int
    labels: int
    repeated: int
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "attached": self.attached,
            "labels": self.labels,
            "repeated": self.repeated,
            "source": self.source,
        }


def read_labels_file(path: str | Path) -> list[LabelledId]:
    """The ``(request_id, label)`` pairs of a labels file, in file order.

    A CSV with a header naming ``request_id`` and ``label`` (other columns are ignored), or
    the same as TSV, JSON Lines (``{"request_id": …, "label": …}`` per line) or Parquet, told
    by the suffix (any other suffix: CSV). Values are stripped; an id given twice keeps its
    last label. Raises :class:`~niche.errors.DataValidationError`
    naming the file, the line and the column (a missing file or column, an empty id or label,
    an id longer than any the gateway returns, broken quoting, bytes that are not UTF-8).

        >>> read_labels_file("labels.csv")[0]
        LabelledId(request_id='chatcmpl-9f…', label='card_arrival')
    """
    return read_labels(path)[0]


def read_labels(path: str | Path) -> tuple[list[LabelledId], list[int]]:
    """The pairs of a labels file (as :func:`read_labels_file`) and the line each is on, for
    errors that name the line of a label refused later.

        >>> pairs, lines = read_labels("labels.csv")
    """
    from niche.data.loading import load_file

    path = Path(path)
    if not path.is_file():
        raise DataValidationError("no such file", path=path)
    # Another suffix (labels.txt, none) is read as CSV.
    fmt = None if path.suffix.lower() in _SUFFIXES else "csv"
    rows = load_file(path, format=fmt, text_col="request_id", label_col="label")
    pairs, lines = [], []
    for index, (request_id, label) in enumerate(zip(rows.texts, rows.labels, strict=True)):
        request_id = request_id.strip()
        if len(request_id) > _REQUEST_ID_CHARS:
            raise DataValidationError(
                f"a request id of {len(request_id)} characters; the gateway's have at most "
                f"{_REQUEST_ID_CHARS}",
                path=path,
                line=rows.line_of(index),
                column="request_id",
            )
        pairs.append(LabelledId(request_id, label))
        lines.append(rows.line_of(index))
    return pairs, lines


def send_feedback(
    items: Sequence[tuple[str, str]],
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    actor: str | None = None,
) -> FeedbackResult:
    """Attach the gold labels ``items`` (``(request_id, label)`` pairs) to their captured
    records, all or none (see :meth:`TrafficStore.attach_labels
    <niche.registry.stores.traffic.TrafficStore.attach_labels>`).

    Raises :class:`~niche.errors.NotFoundError` naming unknown request ids and
    :class:`~niche.errors.ValidationError` naming labels outside their task's label set;
    nothing is changed then.

        >>> send_feedback([("chatcmpl-9f…", "card_arrival")], actor="cli:ana").attached
        1
    """
    _, registry = resolve(settings, registry)
    attached = registry.traffic.attach_labels(items, actor=actor)
    given = len(items)
    return FeedbackResult(
        attached=attached, labels=given, repeated=given - len({item[0] for item in items})
    )


def send_feedback_file(
    path: str | Path,
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    actor: str | None = None,
) -> FeedbackResult:
    """:func:`read_labels_file` then :func:`send_feedback`, all or none; an unknown id or a
    label outside its task's set is named with its line in ``path``.

        >>> send_feedback_file("labels.csv").attached
        120
    """
    items, lines = read_labels(path)
    try:
        result = send_feedback(items, settings, registry=registry, actor=actor)
    except NotFoundError as exc:
        raise NotFoundError(_with_lines(exc.message, path, items, lines)) from None
    except ValidationError as exc:
        raise ValidationError(
            _with_lines(exc.message, path, items, lines), param=exc.param
        ) from None
    return FeedbackResult(result.attached, result.labels, result.repeated, source=str(path))


_QUOTED = re.compile(r"'([^']*)'")


def _with_lines(
    message: str, path: str | Path, items: Sequence[LabelledId], lines: Sequence[int]
) -> str:
    """``message`` (which names request ids as the store does, quoted) with the lines of
    ``path`` they are on (an id given twice: the line of its last label, the one that counted)."""
    line_of = {item.request_id: line for item, line in zip(items, lines, strict=True)}
    named = sorted({line_of[value] for value in _QUOTED.findall(message) if value in line_of})
    if not named:
        return f"{path}: {message}"
    shown = ", ".join(str(line) for line in named[:10])
    more = f", … ({len(named)} in all)" if len(named) > 10 else ""
    word = "line" if len(named) == 1 else "lines"
    return f"{path}, {word} {shown}{more}: {message}"
