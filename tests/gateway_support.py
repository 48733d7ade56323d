"""Shared by the gateway tests: a registered portfolio on real data, and a real uvicorn server."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

TASK = "sms_spam"
SPAM = "WINNER!! You have won a free prize of 1000 cash. Text CLAIM to 81010 now to collect"
HAM = "Are we still meeting for lunch at noon tomorrow? Let me know"


def read_sms(datasets_dir: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open(datasets_dir / "sms_spam" / "SMSSpamCollection.tsv", encoding="utf-8") as handle:
        for line in handle:
            label, text = line.rstrip("\n").split("\t", 1)
            texts.append(text)
            labels.append(label)
    return texts, labels


def build_portfolio(home: Path, cache_dir: Path, encoder: Any, datasets_dir: Path) -> None:
    """Task sms_spam with v1 (champion) and v2 (registered, no alias), trained on real rows."""
    from niche.registry import Registry
    from niche.registry.artifacts import ArtifactStore
    from niche.registry.tasks import TaskSpec
    from niche.settings import Settings
    from niche.specialists.text import TextSpecialist

    settings = Settings(home=str(home), cache_dir=str(cache_dir))
    texts, labels = read_sms(datasets_dir)
    store = ArtifactStore.from_settings(settings)
    with Registry(settings=settings) as registry:
        registry.create_task(TaskSpec(name=TASK, labels=["ham", "spam"], cascade_threshold=0.5))
        for version, rows in ((1, slice(0, 600)), (2, slice(600, 1000))):
            specialist = TextSpecialist(encoder).fit(texts[rows], labels[rows])
            with tempfile.TemporaryDirectory() as tmp:
                artifact = store.put_dir(specialist.save(Path(tmp) / "model"))
            record = registry.register_model(
                TASK,
                kind="text",
                artifact_digest=artifact.digest,
                artifact_uri=artifact.uri,
                dataset_fingerprint="sms-slice",
                lineage={"rows": str(rows)},
            )
            assert record.version == version
        registry.set_alias(TASK, "champion", 1, actor="test", reason="fixture")


def copy_home(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target


@contextmanager
def running(app: Any, *, port: int | None = None) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server in a thread; yield its base URL."""
    # Port 0: the kernel picks a free port at bind time, so parallel runs cannot collide.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port or 0, log_level="warning", lifespan="on"
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
