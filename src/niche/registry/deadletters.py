"""The dead-letter file: what capture could not store, kept as JSON lines instead of lost.

A traffic record the database refuses (a data error, found by splitting its batch), a record
beyond the in-memory queue while the database is unreachable, spend that names no key, and
what is still queued when the gateway stops without a database: each becomes one line of
``traffic.jsonl`` in ``NICHE_TRAFFIC_DEAD_LETTER_DIR`` with why, the error and the record.
Lines are appended with one ``write`` per batch on a file opened with ``O_APPEND``, so the
processes of ``niche serve --workers N`` can share the file.

    >>> letters = DeadLetterFile(Path(".niche/dead-letters"))
    >>> letters.append([DeadLetter(at=now, kind="record", reason="data-error",
    ...                            error="DataError", message="value too long", record={...})])
    >>> [letter.reason for letter in letters.read()]
    ['data-error']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from niche.errors import ConfigurationError
from niche.registry.records import Record

__all__ = ["DEAD_LETTER_REASONS", "DeadLetter", "DeadLetterFile"]

DEAD_LETTER_REASONS: Final = ("data-error", "invalid", "queue-full", "shutdown")
"""Why a line was written: the database refused it; it could not be made storable (an input
that is not JSON); the queue was full while the database was unreachable; the gateway stopped
before the database came back."""

_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def _text(value: Any) -> str:
    return repr(value)


@dataclass(frozen=True)
class DeadLetter(Record):
    """One line of the dead-letter file: ``kind`` is ``record`` (``record`` holds the traffic
    record's fields) or ``spend`` (``record`` holds ``key_id`` and ``usd``); ``reason`` is one
    of :data:`DEAD_LETTER_REASONS`; ``error`` names the exception class, if there was one."""

    at: datetime
    kind: str
    reason: str
    error: str | None
    message: str | None
    record: dict[str, Any] | None

    def line(self) -> bytes:
        """The JSON line this letter is stored as (values JSON cannot hold, as their repr)."""
        return orjson.dumps(self.to_dict(), option=_OPTIONS, default=_text)

    @classmethod
    def from_line(cls, line: bytes) -> DeadLetter:
        """The letter stored as ``line``; a torn or foreign line becomes ``kind="unreadable"``."""
        try:
            data = orjson.loads(line)
            return cls(
                at=datetime.fromisoformat(data["at"]),
                kind=str(data["kind"]),
                reason=str(data["reason"]),
                error=data.get("error"),
                message=data.get("message"),
                record=data.get("record"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # A line cut short by a crash mid-write: shown, not hidden.
            return cls(
                at=datetime.fromtimestamp(0, UTC),
                kind="unreadable",
                reason="unreadable",
                error=None,
                message=line[:200].decode("utf-8", "replace"),
                record=None,
            )


class DeadLetterFile:
    """``traffic.jsonl`` under ``directory`` (created on first append)."""

    NAME: Final = "traffic.jsonl"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"DeadLetterFile({str(self.directory)!r})"

    @property
    def path(self) -> Path:
        return self.directory / self.NAME

    def append(self, letters: Sequence[DeadLetter]) -> None:
        """Append ``letters``, one line each, in one write (raises ``OSError`` on failure)."""
        if not letters:
            return
        data = b"".join(letter.line() for letter in letters)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def read(self, *, limit: int | None = None) -> list[DeadLetter]:
        """The letters in the file, oldest first (with ``limit``, the newest ``limit``)."""
        try:
            with open(self.path, "rb") as handle:
                lines = [line for line in handle if line.strip()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the dead-letter file {self.path}: {exc.strerror or exc}",
                setting="NICHE_TRAFFIC_DEAD_LETTER_DIR",
            ) from exc
        if limit is not None:
            lines = lines[-limit:] if limit else []
        return [DeadLetter.from_line(line) for line in lines]

    def count(self) -> int:
        """How many letters the file holds."""
        return len(self.read())
