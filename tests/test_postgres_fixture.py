"""``database_url`` gives each test its own working, empty database on SQLite and PostgreSQL."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from tests.postgres import _admin_dsn, _fresh_database

# Database identities seen by the tests below, per backend.
SEEN: dict[str, list[str]] = {}


def _use(database_url: str) -> None:
    """Connect, check the database is empty, leave a table behind and record its identity."""
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
            assert sa.inspect(conn).get_table_names() == []
            conn.execute(sa.text("create table marker (id integer)"))
            if engine.dialect.name == "postgresql":
                identity = conn.execute(sa.text("select current_database()")).scalar_one()
            else:
                identity = database_url
    finally:
        engine.dispose()
    seen = SEEN.setdefault(engine.dialect.name, [])
    assert identity not in seen
    seen.append(identity)


def test_first_test_gets_an_empty_database(database_url: str) -> None:
    _use(database_url)


def test_second_test_gets_another_empty_database(database_url: str) -> None:
    _use(database_url)


def test_fresh_database_is_dropped_afterwards(postgres_server: str) -> None:
    with _fresh_database(postgres_server) as url:
        name = url.rsplit("/", 1)[1]
    with psycopg.connect(_admin_dsn(postgres_server)) as conn:
        row = conn.execute("select count(*) from pg_database where datname = %s", (name,))
        assert row.fetchone() == (0,)
