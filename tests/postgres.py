"""Real PostgreSQL for tests: a throwaway cluster per test run and a fresh database per test.

Registered from ``tests/conftest.py`` (``pytest_plugins``). Tests that take ``database_url``
run twice, once on SQLite and once on PostgreSQL:

    def test_something(database_url: str) -> None:
        engine = sqlalchemy.create_engine(database_url)

The server is started only when a ``[postgresql]`` test runs. ``NICHE_TEST_POSTGRES_URL``
(``postgresql+psycopg://user@host:port/``) points the tests at an existing server instead; the
user needs the right to create databases. Without PostgreSQL binaries the tests fail (never
skip): ``make test`` installs them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["database_url", "postgres_server"]

URL_ENV = "NICHE_TEST_POSTGRES_URL"
USER = "niche"
SERVICE_USER = "postgres"


def _bindir() -> Path | None:
    """Directory holding ``initdb`` and ``pg_ctl``, or None when the server is not installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        # pg_config comes with libpq-dev too, so its bindir may lack the server binaries.
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_service_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root, so as root run it as the ``postgres`` user."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", SERVICE_USER, "--", *argv]


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(_as_service_user(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n"
            f"{result.stdout}{result.stderr}"
        )


class _Cluster:
    """A throwaway cluster in a fresh temp directory; ``stop`` is idempotent."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="niche-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.started = False

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.base, user=SERVICE_USER)
        _run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            "initdb",
        )
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off"
        self.started = True
        _run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.base / "server.log"),
                "-w",
                "start",
            ],
            "pg_ctl start",
        )

    def stop(self) -> None:
        if self.started:
            self.started = False
            subprocess.run(
                _as_service_user(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
                ),
                capture_output=True,
                check=False,
            )
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Base URL (ending in ``/``) of a PostgreSQL server that lives for the test run."""
    url = os.environ.get(URL_ENV)
    if url:
        yield url if url.endswith("/") else url + "/"
        return
    bindir = _bindir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found via pg_config --bindir or "
            "/usr/lib/postgresql/*/bin: run `make test` (its `postgres` target installs them), "
            f"or set {URL_ENV} to an existing server",
            pytrace=False,
        )
    cluster = _Cluster(bindir)
    atexit.register(cluster.stop)  # fallback when the run is interrupted before teardown
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)


def _admin_dsn(server_url: str) -> str:
    """A libpq URL for the server's ``postgres`` database, from a SQLAlchemy base URL."""
    return server_url.replace("postgresql+psycopg://", "postgresql://", 1).rstrip("/") + (
        "/postgres"
    )


@contextlib.contextmanager
def _fresh_database(server_url: str) -> Iterator[str]:
    import psycopg

    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(_admin_dsn(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rstrip("/") + "/" + name
    finally:
        with psycopg.connect(_admin_dsn(server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLAlchemy URL of an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'niche.db'}"
        return
    server_url: str = request.getfixturevalue("postgres_server")
    with _fresh_database(server_url) as url:
        yield url
