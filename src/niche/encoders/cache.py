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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from niche.cachefile import CacheFile
from niche.encoders.base import Encoder, ProgressCallback, check_texts
from niche.errors import EncoderError

__all__ = ["CachedEncoder", "EmbeddingCache"]

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
        self._file = CacheFile(
            self.path, schema=_SCHEMA, what="embedding cache", error=EncoderError
        )

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    def get_many(self, encoder_id: str, texts: Sequence[str]) -> list[np.ndarray | None]:
        """The cached vector of each text under ``encoder_id``, or ``None`` where absent.

        >>> found = cache.get_many("all-MiniLM-L6-v2/onnx-int8", ["hi", "new"])
        >>> [v is not None for v in found]
        [True, False]
        """
        check_texts(texts)
        found: list[np.ndarray | None] = [None] * len(texts)
        positions: dict[bytes, list[int]] = {}
        for i, text in enumerate(texts):
            positions.setdefault(_digest(text), []).append(i)
        rows = self._file.select(
            "SELECT text_sha256, vector FROM embeddings "
            "WHERE encoder_id = ? AND text_sha256 IN ({marks})",
            list(positions),
            params=[encoder_id],
        )
        for key, blob in rows:
            vector = np.frombuffer(blob, dtype=np.float32)
            for i in positions[key]:
                found[i] = vector
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
        rows = [(encoder_id, _digest(text), matrix[i].tobytes()) for i, text in enumerate(texts)]
        self._file.write(
            "INSERT OR REPLACE INTO embeddings (encoder_id, text_sha256, vector) VALUES (?, ?, ?)",
            rows,
        )

    def __len__(self) -> int:
        return self._file.count("embeddings")

    def close(self) -> None:
        """Close the connection; the cache reopens it when used again."""
        self._file.close()

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
