"""Rows: labelled texts as loaded, before or after curation.

>>> from niche.data import Rows
>>> rows = Rows(texts=("hi", "bye"), labels=("greet", "leave"), source="inline")
>>> len(rows), rows.label_set()
(2, ['greet', 'leave'])
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from niche.data.normalise import normalise_text
from niche.errors import DataValidationError

__all__ = ["Rows"]


@dataclass(frozen=True)
class Rows:
    """Parallel tuples of texts and their string labels, with where they came from.

    ``source`` is a file path or a description; ``lines`` (optional) holds the 1-based
    physical line (or row number) of each row in ``source``, for error messages. Lists are
    accepted and stored as tuples. Use :meth:`from_columns` to build validated rows from
    untrusted values.

        >>> Rows(texts=["win a prize"], labels=["spam"], source="sms.tsv").texts
        ('win a prize',)
    """

    texts: tuple[str, ...]
    labels: tuple[str, ...]
    source: str
    lines: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Accept lists from callers but keep the dataclass hashable and immutable.
        for name in ("texts", "labels", "lines"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if len(self.texts) != len(self.labels):
            raise ValueError(
                f"Rows needs as many labels as texts (got {len(self.texts)} texts, "
                f"{len(self.labels)} labels)"
            )
        if self.lines is not None and len(self.lines) != len(self.texts):
            raise ValueError(
                f"Rows needs one line number per row (got {len(self.lines)} for "
                f"{len(self.texts)} rows)"
            )

    def __len__(self) -> int:
        return len(self.texts)

    def label_set(self) -> list[str]:
        """The distinct labels, sorted.

        >>> Rows(("a", "b", "c"), ("y", "x", "y"), "inline").label_set()
        ['x', 'y']
        """
        return sorted(set(self.labels))

    def line_of(self, index: int) -> int:
        """The 1-based line (or row number) of row ``index`` in :attr:`source`."""
        return self.lines[index] if self.lines is not None else index + 1

    @classmethod
    def from_columns(
        cls,
        texts: Sequence[object],
        labels: Sequence[object],
        *,
        source: str,
        lines: Sequence[int] | None = None,
        text_col: str = "text",
        label_col: str = "label",
    ) -> Rows:
        """Validate raw column values and build :class:`Rows`.

        Texts must be non-blank strings (blank after :func:`normalise_text` too); labels must
        be non-blank strings or integers (integers become ``str(label)``; surrounding
        whitespace is stripped). A bad value raises :class:`~niche.errors.DataValidationError`
        naming ``source``, the row's line and ``text_col`` / ``label_col``.

            >>> Rows.from_columns(["ok"], [3], source="inline").labels
            ('3',)
        """
        if len(texts) != len(labels):
            raise ValueError(f"got {len(texts)} texts but {len(labels)} labels")
        line_numbers = tuple(lines) if lines is not None else tuple(range(1, len(texts) + 1))
        clean_texts = [
            _check_text(text, source=source, line=line, column=text_col)
            for text, line in zip(texts, line_numbers, strict=True)
        ]
        clean_labels = [
            _check_label(label, source=source, line=line, column=label_col)
            for label, line in zip(labels, line_numbers, strict=True)
        ]
        return cls(tuple(clean_texts), tuple(clean_labels), source, line_numbers)


def _check_text(value: object, *, source: str, line: int, column: str) -> str:
    if value is None:
        raise DataValidationError("empty text", path=source, line=line, column=column)
    if not isinstance(value, str):
        raise DataValidationError(
            f"text must be a string, got {type(value).__name__} {value!r}",
            path=source,
            line=line,
            column=column,
        )
    if not value.strip():
        raise DataValidationError("empty text", path=source, line=line, column=column)
    if not normalise_text(value):
        raise DataValidationError(
            "text has only invisible or control characters", path=source, line=line, column=column
        )
    return value


def _check_label(value: object, *, source: str, line: int, column: str) -> str:
    if value is None:
        raise DataValidationError("empty label", path=source, line=line, column=column)
    if isinstance(value, str):
        label = value.strip()
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        label = str(value)
    else:
        raise DataValidationError(
            f"label must be a string or an integer, got {type(value).__name__} {value!r}",
            path=source,
            line=line,
            column=column,
        )
    if not label:
        raise DataValidationError("empty label", path=source, line=line, column=column)
    return label
