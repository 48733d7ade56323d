"""An on-disk cache of a general model's answers, so a re-evaluation does not pay twice.

An answer is keyed by what decides it: the endpoint and the whole request (the model, the
rendered prompt — the task's template with the text and the labels in it — and the bounds of
the answer: ``max_tokens``, ``stop``, temperature). It is stored with the tokens it cost when it
was first paid for, so an evaluation read from the cache still reports the model's real cost.

    >>> cache = AnswerCache(".niche/cache/general-answers.sqlite")
    >>> key = answer_key(base_url, predictor.request_body("my card is late"))
    >>> cache.put_many({key: Answer("card_arrival", input_tokens=41, output_tokens=3)})
    >>> cache.get_many([key])[key].text
    'card_arrival'

One SQLite file (WAL: readers in other processes do not block a writer), like the embedding
cache: a cache is derived data, deletable at any time, so it lives beside that one rather than
in the registry database.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from niche.errors import ConfigurationError

__all__ = ["Answer", "AnswerCache", "answer_key"]

# Well under SQLite's host-parameter limit (999 on old builds).
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key BLOB PRIMARY KEY,
    answer TEXT NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER
) WITHOUT ROWID
"""


@dataclass(frozen=True)
class Answer:
    """One answer of a general model: its text and the tokens it cost (None: not reported)."""

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None


def answer_key(base_url: str, request: Mapping[str, Any]) -> bytes:
    """The cache key of sending the chat-completion ``request`` to ``base_url``.

    The whole request decides the answer (model, prompt, ``max_tokens``, ``stop``,
    temperature, a ``response_format``…), so all of it is the key: a field added to requests
    later keys on it without a change here.

        >>> answer_key("http://llm/v1", {"model": "m", "messages": [], "max_tokens": 64}).hex()[:8]
    """
    identity = [base_url.rstrip("/"), request]
    # Sorted, ASCII-escaped JSON: one text per request; a lone surrogate still gets a key.
    text = json.dumps(identity, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).digest()


class AnswerCache:
    """A general model's answers on disk in one SQLite file, keyed by :func:`answer_key`.

    Nothing is created until the first :meth:`put_many`; reading a cache that does not exist
    yet finds nothing. Safe to share between threads.

        >>> AnswerCache(settings.cache_dir / "general-answers.sqlite")
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None

    def __repr__(self) -> str:
        return f"AnswerCache({str(self.path)!r})"

    def __reduce__(self) -> tuple[type[AnswerCache], tuple[str]]:
        # A connection does not pickle; another process opens its own.
        return (type(self), (str(self.path),))

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        # A connection must not cross fork(): a child opens its own.
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        if not create and not self.path.exists():
            return None
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(
                f"{self.path}: cannot open the general model's answer cache: {exc}",
                setting="NICHE_CACHE_DIR",
            ) from exc
        self._connection = connection
        self._pid = os.getpid()
        return connection

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Answer]:
        """The cached answer of each key that has one (absent keys are left out)."""
        found: dict[bytes, Answer] = {}
        distinct = list(dict.fromkeys(keys))
        if not distinct:
            return found
        with self._lock:
            connection = self._connect(create=False)
            if connection is None:
                return found
            try:
                for start in range(0, len(distinct), _CHUNK):
                    chunk = distinct[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = connection.execute(
                        "SELECT key, answer, input_tokens, output_tokens FROM answers "
                        f"WHERE key IN ({marks})",
                        chunk,
                    ).fetchall()
                    for key, text, input_tokens, output_tokens in rows:
                        found[bytes(key)] = Answer(text, input_tokens, output_tokens)
            except sqlite3.Error as exc:
                raise ConfigurationError(
                    f"{self.path}: cannot read the general model's answer cache: {exc}",
                    setting="NICHE_CACHE_DIR",
                ) from exc
        return found

    def put_many(self, answers: Mapping[bytes, Answer]) -> None:
        """Store every answer under its key, in one transaction."""
        if not answers:
            return
        rows = [
            (key, answer.text, answer.input_tokens, answer.output_tokens)
            for key, answer in answers.items()
        ]
        with self._lock:
            connection = self._connect(create=True)
            if connection is None:  # pragma: no cover - create=True always connects
                raise ConfigurationError(f"{self.path}: cannot open the answer cache")
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    connection.executemany(
                        "INSERT OR REPLACE INTO answers (key, answer, input_tokens, "
                        "output_tokens) VALUES (?, ?, ?, ?)",
                        rows,
                    )
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ConfigurationError(
                    f"{self.path}: cannot write the general model's answer cache: {exc}",
                    setting="NICHE_CACHE_DIR",
                ) from exc

    def __len__(self) -> int:
        with self._lock:
            connection = self._connect(create=False)
            if connection is None:
                return 0
            return int(connection.execute("SELECT count(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        """Close the connection; the cache reopens it when used again."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None
            self._pid = None
