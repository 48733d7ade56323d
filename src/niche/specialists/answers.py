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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from niche.cachefile import CacheFile
from niche.errors import ConfigurationError

__all__ = ["Answer", "AnswerCache", "answer_key"]

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
        self._file = CacheFile(
            self.path, schema=_SCHEMA, what="general model's answer cache", error=_cache_error
        )

    def __repr__(self) -> str:
        return f"AnswerCache({str(self.path)!r})"

    def __reduce__(self) -> tuple[type[AnswerCache], tuple[str]]:
        # A connection does not pickle; another process opens its own.
        return (type(self), (str(self.path),))

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Answer]:
        """The cached answer of each key that has one (absent keys are left out)."""
        rows = self._file.select(
            "SELECT key, answer, input_tokens, output_tokens FROM answers WHERE key IN ({marks})",
            list(dict.fromkeys(keys)),
        )
        return {
            bytes(key): Answer(text, input_tokens, output_tokens)
            for key, text, input_tokens, output_tokens in rows
        }

    def put_many(self, answers: Mapping[bytes, Answer]) -> None:
        """Store every answer under its key, in one transaction."""
        rows = [
            (key, answer.text, answer.input_tokens, answer.output_tokens)
            for key, answer in answers.items()
        ]
        self._file.write(
            "INSERT OR REPLACE INTO answers (key, answer, input_tokens, output_tokens) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )

    def __len__(self) -> int:
        return self._file.count("answers")

    def close(self) -> None:
        """Close the connection; the cache reopens it when used again."""
        self._file.close()


def _cache_error(message: str) -> ConfigurationError:
    return ConfigurationError(message, setting="NICHE_CACHE_DIR")
