"""Many processes writing one registry at once, on real SQLite and real PostgreSQL.

Workers are spawned (not forked) and each builds its own :class:`Registry` from the URL, as
separate ``niche`` commands or gateway workers would.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from niche.errors import ConflictError
from niche.registry import Registry
from niche.registry.artifacts import ArtifactStore
from niche.registry.db import create_engine_for, head_revision
from niche.registry.tasks import TaskSpec

TASK = "tickets"
JOIN_TIMEOUT_S = 90
SPAWN = multiprocessing.get_context("spawn")


def _model_values(label: str) -> dict[str, Any]:
    return {
        "kind": "text",
        "artifact_digest": f"sha256-{label}",
        "artifact_uri": f"file:///artifacts/{label}",
        "dataset_fingerprint": "f" * 64,
        "lineage": {"writer": label},
    }


@contextmanager
def _processes(target: Any, args: list[tuple[Any, ...]]) -> Iterator[list[BaseProcess]]:
    """Start one spawned process per ``args``; on the way out, end any still running."""
    procs = [SPAWN.Process(target=target, args=a, daemon=True) for a in args]
    for proc in procs:
        proc.start()
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)


def _collect(results: Any, procs: list[BaseProcess]) -> list[Any]:
    """One result per process; fails fast when a process dies without sending one."""
    collected: list[Any] = []
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while len(collected) < len(procs) and time.monotonic() < deadline:
        try:
            collected.append(results.get(timeout=0.2))
        except queue.Empty:
            crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not crashed, f"worker(s) failed with exit codes {crashed}"
    assert len(collected) == len(procs), "workers timed out"
    return collected


def _join(procs: list[BaseProcess]) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    assert [proc.exitcode for proc in procs] == [0] * len(procs)


# -- workers (module level: spawned processes import them by name) ---------------------------


def _register_many(url: str, writer: int, count: int, barrier: Any, results: Any) -> None:
    with Registry(url) as registry:
        # Every worker races the first migration and the task's creation on a fresh database.
        registry.tasks.ensure(TaskSpec(name=TASK))
        barrier.wait()
        versions = [
            registry.models.register(TASK, **_model_values(f"{writer}-{i}")).version
            for i in range(count)
        ]
    results.put(versions)


def _promote_racing(url: str, writer: int, rounds: int, barrier: Any, results: Any) -> None:
    moved = conflicts = 0
    with Registry(url) as registry:
        registry.tasks.get(TASK)
        barrier.wait()
        for i in range(rounds):
            current = registry.promotions.get(TASK, "champion")
            now = current.version if current is not None else None
            target = 1 + (i + writer + (now or 0)) % 3
            try:
                registry.promotions.move(
                    TASK,
                    "champion",
                    target,
                    actor=f"writer-{writer}",
                    reason=f"round {i}",
                    expected_current=now,
                )
                moved += 1
            except ConflictError:
                conflicts += 1
    results.put((moved, conflicts))


def _register_and_hang(url: str, store_root: str, model_dir: str, flushed: Any) -> None:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    with Registry(url) as registry:
        registry.tasks.get(TASK)
        # The artifact is stored first, as niche.lifecycle.register_trained does.
        artifact = ArtifactStore(store_root).put_dir(model_dir)

        @event.listens_for(Session, "after_flush")
        def _hang(session: Session, flush_context: Any) -> None:
            # The version row is written but not committed: the parent kills us here.
            flushed.set()
            time.sleep(120)

        values = _model_values("doomed") | {
            "artifact_digest": artifact.digest,
            "artifact_uri": artifact.uri,
        }
        registry.models.register(TASK, **values)


# -- tests -----------------------------------------------------------------------------------


def test_eight_processes_registering_at_once_get_dense_unique_versions(database_url: str) -> None:
    writers, each = 8, 10
    barrier = SPAWN.Barrier(writers)
    results = SPAWN.Queue()
    args = [(database_url, w, each, barrier, results) for w in range(writers)]
    with _processes(_register_many, args) as procs:
        per_writer = _collect(results, procs)
        _join(procs)
    versions = sorted(v for batch in per_writer for v in batch)
    assert versions == list(range(1, writers * each + 1))
    assert all(batch == sorted(batch) for batch in per_writer)
    with Registry(database_url) as registry:
        assert [t.name for t in registry.tasks.all()] == [TASK]
        assert [m.version for m in registry.models.all(TASK)] == versions
        assert registry.upgrade() == head_revision()


def test_racing_compare_and_set_promotions_leave_a_consistent_chain(database_url: str) -> None:
    with Registry(database_url) as registry:
        registry.tasks.create(TaskSpec(name=TASK))
        for i in range(3):
            registry.models.register(TASK, **_model_values(str(i)))
    writers, rounds = 2, 25
    barrier = SPAWN.Barrier(writers)
    results = SPAWN.Queue()
    args = [(database_url, w, rounds, barrier, results) for w in range(writers)]
    with _processes(_promote_racing, args) as procs:
        outcomes = _collect(results, procs)
        _join(procs)
    with Registry(database_url) as registry:
        history = registry.promotions.history(TASK, "champion")
        final = registry.promotions.get(TASK, "champion")
    assert sum(moved for moved, _ in outcomes) == len(history)
    assert sum(moved + conflicts for moved, conflicts in outcomes) == writers * rounds
    assert history[0].from_version is None
    for before, after in pairwise(history):
        assert after.from_version == before.to_version
    assert final is not None and final.version == history[-1].to_version


def test_a_process_killed_mid_registration_leaves_no_half_version(
    database_url: str, tmp_path: Path
) -> None:
    with Registry(database_url) as registry:
        registry.tasks.create(TaskSpec(name=TASK))
    store_root, model_dir = tmp_path / "artifacts", tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"kind": "text"}')
    flushed = SPAWN.Event()
    args = [(database_url, str(store_root), str(model_dir), flushed)]
    with _processes(_register_and_hang, args) as (proc,):
        assert flushed.wait(JOIN_TIMEOUT_S), "the worker never reached its flush"
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(JOIN_TIMEOUT_S)
        assert proc.exitcode == -signal.SIGKILL
    store = ArtifactStore(str(store_root))
    orphans = store.digests()
    assert len(orphans) == 1  # the artifact was written, the version never committed
    with Registry(database_url) as registry:
        assert registry.models.all(TASK) == []
        assert registry.referenced_digests() == set()
        # `niche gc` removes the orphan.
        assert store.gc(registry.referenced_digests()) == sorted(orphans)
        assert store.digests() == set()
        # The dead writer's lock is gone and its version number was never taken.
        assert registry.models.register(TASK, **_model_values("next")).version == 1
    engine = create_engine_for(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT count(*) FROM model_versions").scalar()
        assert rows == 1
    finally:
        engine.dispose()
