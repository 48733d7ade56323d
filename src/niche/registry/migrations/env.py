"""Alembic environment for the registry schema.

niche runs migrations programmatically (:func:`niche.registry.db.upgrade`), handing over its
open connection in ``config.attributes["connection"]``. Without one (the ``alembic`` command
line pointed at this directory), it connects to ``sqlalchemy.url`` or ``NICHE_DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from niche.registry.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from niche.registry.db import create_engine_for
    from niche.settings import Settings

    url = context.config.get_main_option("sqlalchemy.url") or Settings().get("NICHE_DATABASE_URL")
    engine = create_engine_for(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("niche's registry migrations run online only: use `niche db upgrade`")
run_migrations_online()
