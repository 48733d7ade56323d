"""An on-disk embedding cache, and an encoder that consults it before encoding.

Vectors are keyed by (encoder id, sha256 of the UTF-8 text) in one SQLite table, so
re-encoding a dataset, or the same request twice, costs a lookup instead of a model run.

    >>> encoder = CachedEncoder(OnnxEncoder(), EmbeddingCache(".niche/cache/embeddings.sqlite"))
    >>> first = encoder.encode(["where is my card?", "I lost my PIN"])  # encodes both
    >>> again = encoder.encode(["where is my card?", "I lost my PIN"])  # reads both back
    >>> encoder.misses, encoder.hits
    (2, 2)
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from niche.encoders.base import Encoder, ProgressCallback, check_texts
from niche.errors import EncoderError

__all__ = ["CachedEncoder", "EmbeddingCache"]

# Well under SQLite's host-parameter limit (999 on old builds, 32766 since 3.32).
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    encoder_id TEXT NOT NULL,
    text_sha256 BLOB NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (encoder_id, text_sha256)
) WITHOUT ROWID
"""


def _digest(text: str) -> bytes:
    # surrogatepass: a lone surrogate (e.g. from a badly decoded file) still gets a key.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """Float32 vectors on disk in one SQLite file, keyed by (encoder id, sha256 of text).

    Nothing is created until the first :meth:`put_many`; reading a cache that does not exist
    yet finds nothing. The file is in WAL mode, so readers in other processes do not block a
    writer; each :meth:`put_many` is one transaction.

        >>> cache = EmbeddingCache(".niche/cache/embeddings.sqlite")
        >>> cache.put_many("all-MiniLM-L6-v2/onnx-int8", ["hi"], vectors)
        >>> cache.get_many("all-MiniLM-L6-v2/onnx-int8", ["hi", "new"])[1] is None
        True
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        # A connection must not cross fork(): a child opens its own.
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        if not create and not self.path.exists():
            return None
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL loses at most the last commits on power loss, never consistency.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise EncoderError(f"{self.path}: cannot open the embedding cache: {exc}") from exc
        self._connection = connection
        self._pid = os.getpid()
        return connection

    def get_many(self, encoder_id: str, texts: Sequence[str]) -> list[np.ndarray | None]:
        """The cached vector of each text under ``encoder_id``, or ``None`` where absent.

        >>> found = cache.get_many("all-MiniLM-L6-v2/onnx-int8", ["hi", "new"])
        >>> [v is not None for v in found]
        [True, False]
        """
        check_texts(texts)
        found: list[np.ndarray | None] = [None] * len(texts)
        if not texts:
            return found
        with self._lock:
            connection = self._connect(create=False)
            if connection is None:
                return found
            positions: dict[bytes, list[int]] = {}
            for i, text in enumerate(texts):
                positions.setdefault(_digest(text), []).append(i)
            keys = list(positions)
            try:
                for start in range(0, len(keys), _CHUNK):
                    chunk = keys[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = connection.execute(
                        "SELECT text_sha256, vector FROM embeddings "
                        f"WHERE encoder_id = ? AND text_sha256 IN ({marks})",
                        [encoder_id, *chunk],
                    ).fetchall()
                    for key, blob in rows:
                        vector = np.frombuffer(blob, dtype=np.float32)
                        for i in positions[key]:
                            found[i] = vector
            except sqlite3.Error as exc:
                raise EncoderError(f"{self.path}: cannot read the embedding cache: {exc}") from exc
        return found

    def put_many(self, encoder_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` for ``texts[i]`` under ``encoder_id``, in one transaction.

        >>> cache.put_many("all-MiniLM-L6-v2/onnx-int8", ["hi", "yo"], np.ones((2, 384)))
        """
        check_texts(texts)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise ValueError(
                f"vectors has shape {matrix.shape}; expected ({len(texts)}, dim), one row per text"
            )
        if not texts:
            return
        rows = [(encoder_id, _digest(text), matrix[i].tobytes()) for i, text in enumerate(texts)]
        with self._lock:
            connection = self._connect(create=True)
            if connection is None:  # pragma: no cover - create=True always connects
                raise EncoderError(f"{self.path}: cannot open the embedding cache")
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    connection.executemany(
                        "INSERT OR REPLACE INTO embeddings (encoder_id, text_sha256, vector) "
                        "VALUES (?, ?, ?)",
                        rows,
                    )
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                raise EncoderError(f"{self.path}: cannot write the embedding cache: {exc}") from exc

    def __len__(self) -> int:
        with self._lock:
            connection = self._connect(create=False)
            if connection is None:
                return 0
            return int(connection.execute("SELECT count(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        """Close the connection; the cache reopens it when used again."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None
            self._pid = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class CachedEncoder:
    """An :class:`~niche.encoders.Encoder` that encodes only what ``cache`` does not hold.

    Same ``id`` and ``dim`` as the wrapped encoder. Each call looks every distinct text up
    once, encodes the distinct misses in one batch, stores them and returns all rows in input
    order. ``misses`` counts texts that were encoded, ``hits`` the rest (cache hits and repeats
    of a text already in the call).

        >>> encoder = CachedEncoder(OnnxEncoder(), EmbeddingCache("emb.sqlite"))
        >>> encoder.encode(["hi", "hi"]).shape, encoder.hits, encoder.misses
        ((2, 384), 1, 1)
    """

    def __init__(self, encoder: Encoder, cache: EmbeddingCache) -> None:
        self.encoder = encoder
        self.cache = cache
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, {self.cache!r})"

    @property
    def id(self) -> str:
        """The wrapped encoder's id."""
        return self.encoder.id

    @property
    def dim(self) -> int:
        """The wrapped encoder's dim."""
        return self.encoder.dim

    def encode(
        self, texts: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """Embeddings of ``texts`` in input order, from the cache where possible.

        ``progress`` first gets the count of texts served without encoding, then the wrapped
        encoder's per-batch counts; they add up to ``len(texts)``.

            >>> encoder.encode(["where is my card?"]).shape
            (1, 384)
        """
        check_texts(texts)
        dim = self.dim
        n = len(texts)
        result = np.empty((n, dim), dtype=np.float32)
        if n == 0:
            return result
        found = self.cache.get_many(self.id, texts)
        missing: dict[str, list[int]] = {}
        for i, (text, vector) in enumerate(zip(texts, found, strict=True)):
            if vector is None or vector.shape != (dim,):
                missing.setdefault(text, []).append(i)
            else:
                result[i] = vector
        todo = list(missing)
        self.misses += len(todo)
        self.hits += n - len(todo)
        if progress is not None and n > len(todo):
            progress(n - len(todo))
        if todo:
            vectors = self.encoder.encode(todo, progress=progress)
            self.cache.put_many(self.id, todo, vectors)
            for text, vector in zip(todo, vectors, strict=True):
                result[missing[text]] = vector
        return result
