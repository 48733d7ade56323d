"""What every store shares: one database (engine, sessions, clock), row lookups, the actor.

    >>> database = Database("sqlite:///.niche/niche.db")
    >>> with database.session(write=True) as session:
    ...     task = task_row(session, "banking77", lock=True)

Every store method runs in one transaction and returns frozen records. Writers that depend on
what is already there (the next version number, an alias's current target) serialise per
task: PostgreSQL locks the task's row (``SELECT … FOR UPDATE``), SQLite takes the database
write lock at ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import getpass
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Select, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from niche.errors import ConfigurationError, ModelNotFoundError, TaskNotFoundError
from niche.registry import db
from niche.registry.models import AliasRow, Base, ModelVersionRow, TaskRow
from niche.registry.validation import listing, nonempty, version_ref
from niche.settings import Settings

__all__ = [
    "Database",
    "Store",
    "aliases_of",
    "default_actor",
    "insert_ignoring_conflict",
    "model_row",
    "oldest_first",
    "task_row",
]


def default_actor() -> str:
    """Who is acting when a caller does not say: ``cli:<user>`` (``cli:unknown`` if unknown).

    >>> default_actor()
    'cli:ana'
    """
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def oldest_first(
    session: Session, query: Select[Any], at: Any, ident: Any, limit: int | None
) -> list[Any]:
    """The rows of ``query`` oldest first (by ``at``, then ``ident``); with ``limit``, the
    newest ``limit`` of them, still oldest first: what every listing of a store answers.

        >>> rows = oldest_first(session, select(TrafficRow), TrafficRow.at, TrafficRow.id, 100)
    """
    if limit is None:
        return list(session.scalars(query.order_by(at, ident)))
    return list(session.scalars(query.order_by(at.desc(), ident.desc()).limit(limit)))[::-1]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Database:
    """The registry database at ``url`` (default ``NICHE_DATABASE_URL``), with its clock.

    Nothing is connected until first use, which also applies pending migrations.

        >>> with Database(url).session() as session:
        ...     session.scalars(select(TaskRow.name)).all()
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.url = url
        self.settings = settings
        self.clock = clock
        self.engine_: Engine | None = None
        self.revision_: str | None = None
        self._writer: Engine | None = None
        self._lock = threading.Lock()

    @property
    def database_url(self) -> str:
        """The URL in use: ``url``, else ``NICHE_DATABASE_URL``."""
        if self.url is not None:
            return self.url
        return str((self.settings or Settings()).get("NICHE_DATABASE_URL"))

    def engine(self) -> Engine:
        """The engine, created and the schema migrated on first call."""
        engine = self.engine_
        if engine is not None:
            return engine
        with self._lock:
            if self.engine_ is None:
                engine = db.create_engine_for(self.database_url)
                try:
                    self.revision_ = db.upgrade(engine)
                except BaseException:
                    engine.dispose()
                    raise
                self._writer = engine.execution_options(**db.WRITE)
                self.engine_ = engine
                # A database dropped without close() still returns its connections.
                weakref.finalize(self, engine.dispose)
            return self.engine_

    def upgrade(self) -> str:
        """Apply pending migrations (a no-op when up to date); return the head revision."""
        if self.engine_ is None:
            self.engine()
        else:
            self.revision_ = db.upgrade(self.engine_)
        if self.revision_ is None:
            raise ConfigurationError("the registry database has no schema revision")
        return self.revision_

    def close(self) -> None:
        """Close pooled connections; the next call reconnects."""
        with self._lock:
            if self.engine_ is not None:
                self.engine_.dispose()
            self.engine_ = None
            self._writer = None

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        engine = self.engine()
        bind = self._writer if write and self._writer is not None else engine
        with (
            db.database_errors(engine.url),
            Session(bind, expire_on_commit=False, autoflush=False) as session,
            session.begin(),
        ):
            yield session

    def now(self) -> datetime:
        """The clock's now, in UTC; a naive clock is refused."""
        now = (self.clock or _utcnow)()
        if now.tzinfo is None:
            raise ConfigurationError("the registry's clock must return timezone-aware datetimes")
        return now.astimezone(UTC)


class Store:
    """Base of the per-concept stores: the shared :class:`Database` and the default actor.

    ``actor`` None means :func:`default_actor`, resolved when a change is made.
    """

    def __init__(self, database: Database, *, actor: str | None = None) -> None:
        self.database = database
        self.actor = actor

    def _actor(self, actor: str | None) -> str:
        chosen = actor if actor is not None else self.actor
        return nonempty(chosen if chosen is not None else default_actor(), "actor")


# -- lookups shared by the stores ------------------------------------------------------------


def task_row(session: Session, name: str, *, lock: bool = False) -> TaskRow:
    """The task ``name`` (locked for update with ``lock``); the error lists the known ones."""
    query = select(TaskRow).where(TaskRow.name == name)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        known = list(session.scalars(select(TaskRow.name).order_by(TaskRow.name)))
        raise TaskNotFoundError(
            f"no task {name!r} (known: {listing(known, 'none yet; create one first')})",
            task=name,
        )
    return row


def aliases_of(session: Session, task: TaskRow) -> dict[str, int]:
    """Each alias of ``task`` and the version it points to, by alias name."""
    rows = session.execute(
        select(AliasRow.name, ModelVersionRow.version)
        .join(ModelVersionRow, AliasRow.model_version_id == ModelVersionRow.id)
        .where(AliasRow.task_id == task.id)
        .order_by(AliasRow.name)
    )
    return {name: version for name, version in rows}


def model_row(session: Session, task: TaskRow, ref: int | str) -> ModelVersionRow:
    """A model version of ``task`` by number or alias; the error lists what exists."""
    key = version_ref(ref)
    row: ModelVersionRow | None
    if isinstance(key, int):
        row = session.scalars(
            select(ModelVersionRow).where(
                ModelVersionRow.task_id == task.id, ModelVersionRow.version == key
            )
        ).one_or_none()
    else:
        row = session.scalars(
            select(ModelVersionRow)
            .join(AliasRow, AliasRow.model_version_id == ModelVersionRow.id)
            .where(AliasRow.task_id == task.id, AliasRow.name == key)
        ).one_or_none()
    if row is None:
        versions = list(
            session.scalars(
                select(ModelVersionRow.version)
                .where(ModelVersionRow.task_id == task.id)
                .order_by(ModelVersionRow.version)
            )
        )
        what = f"version {key}" if isinstance(key, int) else f"alias or version {key!r}"
        known = [f"v{v}" for v in versions] + [
            f"{a} → v{v}" for a, v in aliases_of(session, task).items()
        ]
        raise ModelNotFoundError(
            f"task {task.name!r} has no model {what} "
            f"(known: {listing(known, 'no versions registered yet')})",
            task=task.name,
            ref=ref,
        )
    return row


def insert_ignoring_conflict(
    session: Session, model: type[Base], values: dict[str, Any], key: str
) -> bool:
    """INSERT, or nothing when a row with the same unique ``key`` exists (no race).

    Returns whether a row was inserted (told by RETURNING: psycopg gives no rowcount here).
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement: Any = (
            pg_insert(model).values(values).on_conflict_do_nothing(index_elements=[key])
        )
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(model).values(values).on_conflict_do_nothing(index_elements=[key])
    (primary_key,) = sa_inspect(model).primary_key
    return session.execute(statement.returning(primary_key)).first() is not None
