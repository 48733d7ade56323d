"""Shared by the gateway tests: a registered portfolio on real data, the gateway in-process
(through an ASGI transport) or on a real uvicorn server."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
import uvicorn

TASK = "sms_spam"
SPAM = "WINNER!! You have won a free prize of 1000 cash. Text CLAIM to 81010 now to collect"
HAM = "Are we still meeting for lunch at noon tomorrow? Let me know"
BASE_URL = "http://gateway.test"


def read_sms(datasets_dir: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open(datasets_dir / "sms_spam" / "SMSSpamCollection.tsv", encoding="utf-8") as handle:
        for line in handle:
            label, text = line.rstrip("\n").split("\t", 1)
            texts.append(text)
            labels.append(label)
    return texts, labels


def train_specialists(directory: Path, encoder: Any, datasets_dir: Path) -> list[Path]:
    """Two real text specialists on SMS spam rows (0-600 and 600-1000), saved under
    ``directory``: what v1 and v2 of the portfolio are."""
    from niche.specialists.text import TextSpecialist

    texts, labels = read_sms(datasets_dir)
    saved = []
    for version, rows in ((1, slice(0, 600)), (2, slice(600, 1000))):
        specialist = TextSpecialist(encoder).fit(texts[rows], labels[rows])
        saved.append(specialist.save(directory / f"v{version}"))
    return saved


def register_portfolio(
    settings: Any, models: list[Path], *, task: str = TASK, champion: bool = True
) -> None:
    """Task ``task`` with the saved ``models`` as v1 (champion, unless not ``champion``),
    v2, … in ``settings``' registry and artifact store."""
    from niche.registry import Registry
    from niche.registry.artifacts import ArtifactStore
    from niche.registry.tasks import TaskSpec

    store = ArtifactStore.from_settings(settings)
    with Registry(settings=settings) as registry:
        registry.tasks.create(TaskSpec(name=task, labels=["ham", "spam"], cascade_threshold=0.5))
        for version, model in enumerate(models, start=1):
            artifact = store.put_dir(model)
            record = registry.models.register(
                task,
                kind="text",
                artifact_digest=artifact.digest,
                artifact_uri=artifact.uri,
                dataset_fingerprint="sms-slice",
                lineage={"rows": f"v{version}"},
            )
            assert record.version == version
        if champion:
            registry.promotions.move(task, "champion", 1, actor="test", reason="fixture")


def build_portfolio(home: Path, cache_dir: Path, encoder: Any, datasets_dir: Path) -> None:
    """Task sms_spam with v1 (champion) and v2 (registered, no alias), trained on real rows,
    in a SQLite registry under ``home``."""
    from niche.settings import Settings

    settings = Settings(home=str(home), cache_dir=str(cache_dir))
    with tempfile.TemporaryDirectory() as tmp:
        register_portfolio(settings, train_specialists(Path(tmp), encoder, datasets_dir))


def copy_home(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target


@asynccontextmanager
async def in_process(app: Any) -> AsyncIterator[httpx2.AsyncClient]:
    """``app`` started, and an HTTP client that calls it in-process (no socket, no server).

    httpx2's ASGI transport sends no lifespan events, so this runs start-up and shutdown
    itself; the client appears as 127.0.0.1 (the gateway's local mode applies).
    """
    await app.startup()
    try:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield http
    finally:
        await app.shutdown()


def sdk(http: httpx2.AsyncClient, key: str = "local") -> openai.AsyncOpenAI:
    """The official OpenAI SDK, calling the in-process gateway through ``http``."""
    return openai.AsyncOpenAI(
        base_url=f"{BASE_URL}/v1", api_key=key, max_retries=0, http_client=http
    )


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10.0) -> None:
    """Wait for ``condition`` (checked every 20 ms, the event loop running meanwhile)."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout_s
    while True:
        met = condition()
        if inspect.isawaitable(met):
            met = await met
        if met:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@contextmanager
def running(app: Any, *, port: int | None = None, **options: Any) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server in a thread; yield its base URL. ``options``
    go to ``uvicorn.Config`` (e.g. ``niche.gateway.server.uvicorn_options()``)."""
    # Port 0: the kernel picks a free port at bind time, so parallel runs cannot collide.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port or 0, log_level="warning", lifespan="on", **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(30)
