"""Engines and migrations for the registry database: a SQLite file or PostgreSQL.

    >>> engine = create_engine_for("sqlite:///.niche/niche.db")
    >>> upgrade(engine)  # idempotent; returns the head revision
    '0009'

SQLite engines run every transaction under an explicit ``BEGIN``: plain (deferred) for reads,
``BEGIN IMMEDIATE`` for writes (execution option ``niche_write``, see :data:`WRITE`), so
writers queue on the database lock up front instead of failing half-way with "database is
locked". PostgreSQL writers lock the rows they depend on (``SELECT … FOR UPDATE``).

Driver errors are mapped to :class:`~niche.errors.DatabaseError` at this boundary; messages
name the database URL with its password masked.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool

from niche.errors import ConfigurationError, DatabaseError

__all__ = [
    "WRITE",
    "create_engine_for",
    "current_revision",
    "database_errors",
    "head_revision",
    "json_dumps",
    "mask_url",
    "upgrade",
]

WRITE: dict[str, Any] = {"niche_write": True}
"""Execution options of a write transaction: ``engine.execution_options(**WRITE)``."""

SCRIPT_LOCATION = "niche.registry:migrations"
CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_MS = 30_000
# One advisory lock key for "migrating the niche schema", stable across processes and runs.
_MIGRATION_LOCK_KEY = zlib.crc32(b"niche.registry.migrations")


def mask_url(url: str | URL) -> str:
    """``url`` as text with its password replaced by ``***`` (safe to log and to show).

    >>> mask_url("postgresql+psycopg://niche:s3cret@db/niche")
    'postgresql+psycopg://niche:***@db/niche'
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def _parse(url: str | URL) -> URL:
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError:
        # The message may echo the URL, password included, so it is not chained.
        raise ConfigurationError(
            "NICHE_DATABASE_URL is not a database URL (expected sqlite:///path or "
            "postgresql+psycopg://user:password@host/db)",
            setting="NICHE_DATABASE_URL",
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgres", "postgresql") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed
    raise ConfigurationError(
        f"unsupported registry database {mask_url(parsed)}: use sqlite:///path or "
        "postgresql+psycopg://…",
        setting="NICHE_DATABASE_URL",
    )


def create_engine_for(url: str | URL) -> Engine:
    """An engine for the registry at ``url``; nothing is connected or created yet.

    ``postgresql://`` URLs use psycopg 3. For a SQLite file, its parent directory is created
    on first connect.

        >>> engine = create_engine_for("postgresql+psycopg://niche@localhost/niche")
    """
    parsed = _parse(url)
    json_options: dict[str, Any] = {
        "json_serializer": json_dumps,
        "json_deserializer": orjson.loads,
    }
    if parsed.get_backend_name() == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ModuleNotFoundError as exc:
            raise ConfigurationError(
                "a PostgreSQL registry needs psycopg: pip install 'niche[postgres]'",
                setting="NICHE_DATABASE_URL",
            ) from exc
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        return sa.create_engine(
            parsed, connect_args=connect_args, pool_pre_ping=True, **json_options
        )
    return _sqlite_engine(parsed, json_options)


def _sqlite_engine(url: URL, json_options: dict[str, Any]) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        # One shared connection, or each checkout would see its own empty in-memory database.
        poolclass=StaticPool if in_memory else None,
        **json_options,
    )

    @event.listens_for(engine, "do_connect")
    def _make_parent(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> None:
        if not in_memory and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"cannot create the directory of the registry database {mask_url(url)}: "
                    f"{exc.strerror or exc}",
                    url=mask_url(url),
                ) from exc

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, connection_record: Any) -> None:
        # niche emits BEGIN itself (below): sqlite3's implicit transactions skip SELECTs and DDL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        write = connection.get_execution_options().get("niche_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def json_dumps(value: Any) -> str:
    """JSON text of ``value`` as the registry stores it: numpy values as numbers, NaN as null."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


@contextmanager
def database_errors(url: str | URL) -> Iterator[None]:
    """Map driver errors raised inside the block to :class:`~niche.errors.DatabaseError`.

    Operational failures (server unreachable, authentication, database locked) become a
    ``DatabaseError`` naming ``url`` with its password masked. Integrity and programming
    errors pass through: callers handle the first, the second are bugs.

        >>> with database_errors(engine.url):
        ...     engine.connect()
    """
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        masked = mask_url(url)
        reason = _reason(exc, url)
        raise DatabaseError(
            f"cannot use the registry database {masked}: {reason}", url=masked
        ) from exc


def _reason(exc: sa.exc.DBAPIError, url: str | URL) -> str:
    text = str(exc.orig).strip() or type(exc.orig).__name__
    first = text.splitlines()[0]
    password = (make_url(url) if isinstance(url, str) else url).password
    if password:
        first = first.replace(str(password), "***")
    return first


def _alembic_config(connection: sa.Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """The newest migration revision shipped with this niche."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise DatabaseError("niche ships no registry migrations; the installation is broken")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database at ``engine`` is migrated to (None: not yet)."""
    from alembic.runtime.migration import MigrationContext

    with database_errors(engine.url), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine_or_url: Engine | str) -> str:
    """Migrate the registry database to the newest schema; return that revision.

    Safe to call from many processes at once on a fresh database: on PostgreSQL the upgrade
    holds a transaction-scoped advisory lock, on SQLite an IMMEDIATE transaction; DDL is
    transactional on both, so a crash leaves the previous revision.

        >>> upgrade("sqlite:///.niche/niche.db")
        '0009'
    """
    from alembic import command
    from alembic.util import CommandError

    engine = (
        engine_or_url if isinstance(engine_or_url, Engine) else create_engine_for(engine_or_url)
    )
    head = head_revision()
    try:
        # Up to date (the common case): no write lock, so many readers can start at once.
        if current_revision(engine) == head:
            return head
        with database_errors(engine.url):
            writer = engine.execution_options(**WRITE)
            with writer.begin() as connection:
                if engine.dialect.name == "postgresql":
                    connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": _MIGRATION_LOCK_KEY},
                    )
                command.upgrade(_alembic_config(connection), "head")
    except CommandError as exc:
        # E.g. the database was migrated by a newer niche than this one.
        raise DatabaseError(
            f"cannot migrate the registry database {mask_url(engine.url)}: {exc} "
            f"(this niche knows revisions up to {head})",
            url=mask_url(engine.url),
        ) from exc
    finally:
        if engine is not engine_or_url:
            engine.dispose()
    return head
