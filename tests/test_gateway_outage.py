"""Serving that survives its registry: the database stopped under load, a champion that cannot
load, and what clients are told — on a real SQLite file and a real PostgreSQL server.

The PostgreSQL server is a throwaway cluster of this test's own (it is stopped and started
again); the SQLite file is made unreachable by moving it away. The specialists are real;
nothing is faked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from niche.gateway import Gateway
from niche.registry import Registry
from niche.settings import Settings
from tests.gateway_support import (
    HAM,
    SPAM,
    TASK,
    in_process,
    register_portfolio,
    until,
)
from tests.postgres import _admin_dsn, _bindir, _Cluster, _run

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

OUTAGE_S = 5.0
DB_NAME = "outage_db"


@dataclass
class Backend:
    """A registry database that a test can take away and give back."""

    url: str
    secrets: list[str] = field(default_factory=list)  # what a client must never be shown
    cluster: _Cluster | None = None
    path: Path | None = None

    def stop(self, registry: Registry) -> None:
        if self.cluster is not None:
            cluster = self.cluster
            _run(
                [str(cluster.bindir / "pg_ctl"), "-D", str(cluster.data), "-m", "fast", "stop"],
                "pg_ctl stop",
            )
            return
        assert self.path is not None
        # The database's directory is a symlink: pointed at a plain file, every new connection
        # fails (open connections keep working, so the pool is emptied after). The files are
        # never touched, and the swap is atomic: no connection can create an empty database.
        self._point(self.path.parent.with_name("blocker"))
        registry.database.engine().dispose()

    def _point(self, target: Path) -> None:
        assert self.path is not None
        link = self.path.parent
        swap = link.with_name("swap")
        swap.symlink_to(target)
        swap.replace(link)

    def start(self) -> None:
        if self.cluster is not None:
            cluster = self.cluster
            options = (
                f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {cluster.base} -c fsync=off"
            )
            _run(
                [
                    str(cluster.bindir / "pg_ctl"),
                    "-D",
                    str(cluster.data),
                    "-o",
                    options,
                    "-l",
                    str(cluster.base / "server.log"),
                    "-w",
                    "start",
                ],
                "pg_ctl start",
            )
            return
        assert self.path is not None
        self._point(self.path.parent.with_name("real"))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        (tmp_path / "real").mkdir()
        (tmp_path / "blocker").write_text("not a directory")
        (tmp_path / "registry").symlink_to(tmp_path / "real")
        path = tmp_path / "registry" / "niche.db"
        yield Backend(f"sqlite:///{path}", secrets=[str(tmp_path), "niche.db"], path=path)
        return
    bindir = _bindir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries not found (see tests/postgres.py)")
    cluster = _Cluster(bindir)
    try:
        cluster.start()
        with psycopg.connect(_admin_dsn(cluster.url), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{DB_NAME}"')
        yield Backend(
            cluster.url + DB_NAME,
            secrets=[DB_NAME, "127.0.0.1", str(cluster.port), "niche@", "psycopg", "5432"],
            cluster=cluster,
        )
    finally:
        cluster.stop()


def _settings(home: Path, cache_dir: Path, url: str) -> Settings:
    return Settings(
        home=str(home),
        cache_dir=str(cache_dir),
        database_url=url,
        gateway_refresh_s=0.2,
        gateway_capture_flush_ms=50.0,
    )


async def test_a_registry_outage_under_load_fails_no_keyed_request_a_specialist_answers(
    niche_home: Path, encoder_cache_dir: Path, backend: Backend, trained, serving_encoder
):
    settings = _settings(niche_home, encoder_cache_dir, backend.url)
    register_portfolio(settings, trained)
    with Registry(settings=settings) as registry:
        _, plain = registry.keys.create(scope="inference")
        budgeted, spender = registry.keys.create(scope="inference", budget_usd=5.0)
        _, unseen = registry.keys.create(scope="inference")  # never used before the outage
    app = Gateway(settings, encoder=serving_encoder)
    async with in_process(app) as http:

        async def ask(secret: str, i: int) -> Any:
            headers = {"authorization": f"Bearer {secret}"}
            text = (SPAM, HAM)[i % 2]
            if i % 3 == 0:
                return await http.post(
                    f"/v1/tasks/{TASK}/predict", headers=headers, json={"inputs": [text]}
                )
            return await http.post(
                "/v1/chat/completions",
                headers=headers,
                json={"model": TASK, "messages": [{"role": "user", "content": text}]},
            )

        for secret in (plain, spender):  # verified once while the database is up
            assert (await ask(secret, 0)).status_code == 200
        statuses: list[int] = []
        during: list[int] = []
        outage = asyncio.Event()
        done = asyncio.Event()

        async def load(secret: str, worker: int) -> None:
            i = worker
            while not done.is_set():
                response = await ask(secret, i)
                statuses.append(response.status_code)
                if outage.is_set():
                    during.append(response.status_code)
                i += 1
                await asyncio.sleep(0.005)

        loaders = [asyncio.ensure_future(load((plain, spender)[w % 2], w)) for w in range(4)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(backend.stop, app.registry)
        stopped = time.monotonic()
        outage.set()
        try:
            # The refresher notices; /readyz stays 200 and says what is wrong.
            async def degraded() -> bool:
                return (await http.get("/readyz")).json()["status"] == "degraded"

            await until(degraded, timeout_s=OUTAGE_S)
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["tasks"] == {TASK: {"champion": 1}}
            assert any("registry cannot be read" in p for p in ready.json()["problems"])
            # A key never verified cannot be verified now: 503, Retry-After, nothing named.
            refused = await ask(unseen, 1)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "2"
            for text in (refused.text, ready.text):
                for secret in backend.secrets:
                    assert secret not in text
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        finally:
            outage.clear()
            await asyncio.to_thread(backend.start)
        await asyncio.sleep(0.5)
        done.set()
        await asyncio.gather(*loaders)

        async def recovered() -> bool:
            return (await http.get("/readyz")).json()["status"] == "ready"

        await until(recovered)
        assert (await ask(unseen, 1)).status_code == 200
        # What the budgeted key spent during the outage is written once the database is back.
        await until(lambda: app.budgets.unsettled_usd == 0.0)
        assert app.budgets.local_holds > 0
    assert len(during) >= 20, during
    assert set(statuses) == {200}, sorted(set(statuses))
    with Registry(settings=settings) as registry:
        spent = {key.id: key.spent_usd for key in registry.keys.all()}
        assert registry.keys.reserved(budgeted.id) == 0.0
    assert spent[budgeted.id] > 0.0


async def test_a_champion_that_fails_to_load_shows_in_readyz_and_the_metric(
    niche_home: Path, encoder_cache_dir: Path, trained, serving_encoder, tmp_path: Path
):
    settings = _settings(niche_home, encoder_cache_dir, f"sqlite:///{tmp_path / 'niche.db'}")
    register_portfolio(settings, trained, champion=False)
    with Registry(settings=settings) as registry:
        # v3's artifact was never stored: loading it fails as a lost artifact would.
        broken = registry.models.register(
            TASK,
            kind="text",
            artifact_digest="0" * 64,
            artifact_uri=str(tmp_path / "nowhere"),
            dataset_fingerprint="sms-slice",
            lineage={"rows": "lost"},
        )
        registry.promotions.move(TASK, "champion", broken.version, actor="test", reason="x")
    app = Gateway(settings, encoder=serving_encoder)
    async with in_process(app) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready"
        (problem,) = body["problems"]
        assert problem.startswith(f"task {TASK}: champion v3 failed to load (")
        assert problem.endswith("nothing serves it")
        assert str(tmp_path) not in ready.text
        metrics = (await http.get("/metrics")).text
        failures = [
            line
            for line in metrics.splitlines()
            if line.startswith(f'niche_model_load_failures_total{{alias="champion",task="{TASK}"}}')
        ]
        assert failures and float(failures[0].split()[-1]) >= 1.0

        # A champion that loads: ready. Then a new champion that fails: v1 still serves.
        with Registry(settings=settings) as registry:
            registry.promotions.move(TASK, "champion", 1, actor="test", reason="x")
        await app.portfolio.refresh()
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        with Registry(settings=settings) as registry:
            registry.promotions.move(TASK, "champion", broken.version, actor="test", reason="x")
        await app.portfolio.refresh()
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
        assert ready.json()["problems"][0].endswith("v1 still serves it")
        predicted = await http.post(f"/v1/tasks/{TASK}/predict", json={"inputs": [SPAM]})
        assert predicted.json()["predictions"][0]["model_version"] == 1


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_verdict_outlives_an_outage_for_key_stale_s_only(tmp_path: Path):
    from niche.errors import DatabaseError
    from niche.gateway.auth import KeyCache

    (tmp_path / "real").mkdir()
    (tmp_path / "blocker").write_text("not a directory")
    (tmp_path / "registry").symlink_to(tmp_path / "real")
    path = tmp_path / "registry" / "niche.db"
    backend = Backend(f"sqlite:///{path}", path=path)
    clock = _Clock()
    with Registry(backend.url) as registry:
        key, secret = registry.keys.create(scope="inference")
        _, other = registry.keys.create(scope="inference")
        keys = KeyCache(registry, ttl_s=2.0, stale_s=300.0, clock=clock)
        bearer = f"Bearer {secret}".encode()
        assert await keys.authenticate(bearer, client_host="10.0.0.7") == key
        assert await keys.any_keys()
        backend.stop(registry)
        clock.now = 10.0
        assert await keys.authenticate(bearer, client_host="10.0.0.7") == key  # stale, asked
        assert await keys.any_keys()
        clock.now = 11.0  # asked 1 s ago: not asked again before ttl_s
        assert await keys.authenticate(bearer, client_host="10.0.0.7") == key
        assert keys.stale_answers == 2  # the key's verdict once, any_keys once
        with pytest.raises(DatabaseError):  # never verified: cannot be now
            await keys.authenticate(f"Bearer {other}".encode(), client_host="10.0.0.7")
        clock.now = 301.0  # confirmed 301 s ago: too old to be trusted
        with pytest.raises(DatabaseError):
            await keys.authenticate(bearer, client_host="10.0.0.7")
        backend.start()
        clock.now = 302.0
        assert await keys.authenticate(bearer, client_host="10.0.0.7") == key
        assert keys.stale_answers == 2
