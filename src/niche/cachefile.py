"""One SQLite file holding a derived cache: the embedding cache and the general model's answers.

A cache is derived data, deletable at any time, so it lives in a file of its own under
``NICHE_CACHE_DIR``, not in the registry database. The file is in WAL mode (readers in other
processes do not block a writer), opened on first use in each process (a connection must not
cross ``fork()``), shared by threads behind one lock, and nothing is created until the first
write: reading a cache that does not exist yet finds nothing.

    >>> file = CacheFile("emb.sqlite", schema=SCHEMA, what="embedding cache", error=EncoderError)
    >>> file.write("INSERT OR REPLACE INTO t (key, value) VALUES (?, ?)", [(b"k", b"v")])
    >>> file.select("SELECT key, value FROM t WHERE key IN ({marks})", [b"k"])
    [(b'k', b'v')]
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CacheFile"]

# Well under SQLite's host-parameter limit (999 on old builds, 32766 since 3.32).
_CHUNK = 500


class CacheFile:
    """The SQLite file at ``path`` with the tables ``schema`` creates.

    Errors become ``error(message)``, each message naming the file and ``what`` it holds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: str,
        what: str,
        error: Callable[[str], Exception],
    ) -> None:
        self.path = Path(path)
        self.schema = schema
        self.what = what
        self.error = error
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None

    def _fail(self, doing: str, exc: BaseException) -> Exception:
        return self.error(f"{self.path}: cannot {doing} the {self.what}: {exc}")

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
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
            # With WAL, NORMAL loses at most the last commits on power loss, never consistency.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(self.schema)
        except (OSError, sqlite3.Error) as exc:
            raise self._fail("open", exc) from exc
        self._connection = connection
        self._pid = os.getpid()
        return connection

    def select(
        self, sql: str, keys: Sequence[Any], *, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` for ``keys``, asked in chunks: ``sql`` holds ``{marks}`` where
        a chunk's placeholders go, after ``params``. Nothing when the file does not exist."""
        if not keys:
            return []
        with self._lock:
            connection = self._connect(create=False)
            if connection is None:
                return []
            rows: list[tuple[Any, ...]] = []
            try:
                for start in range(0, len(keys), _CHUNK):
                    chunk = list(keys[start : start + _CHUNK])
                    query = sql.format(marks=",".join("?" * len(chunk)))
                    rows.extend(connection.execute(query, [*params, *chunk]).fetchall())
            except sqlite3.Error as exc:
                raise self._fail("read", exc) from exc
        return rows

    def write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run ``sql`` for every row, in one transaction (creating the file if need be)."""
        if not rows:
            return
        with self._lock:
            connection = self._connect(create=True)
            if connection is None:  # pragma: no cover - create=True always connects
                raise self.error(f"{self.path}: cannot open the {self.what}")
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    connection.executemany(sql, rows)
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._fail("write", exc) from exc

    def count(self, table: str) -> int:
        """Rows in ``table`` (0 when the file does not exist)."""
        with self._lock:
            connection = self._connect(create=False)
            if connection is None:
                return 0
            return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def close(self) -> None:
        """Close the connection; it reopens when used again."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None
            self._pid = None
