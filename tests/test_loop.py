"""``loop_once`` and ``run_loop`` on the real registry (SQLite and PostgreSQL), the real encoder
and real traffic records: BANKING77 texts captured for a task with no specialist, each
answered by the general model with its true label (the teacher)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from niche.errors import TaskNotFoundError
from niche.registry import Registry
from niche.settings import Settings
from niche.workflows.loop import loop_once, run_loop
from tests import loop_support
from tests.loop_support import TASK

HOLDER = "loop:test:1"


@pytest.fixture(scope="module")
def banking_rows(datasets_dir: Path) -> list[tuple[str, str]]:
    return loop_support.banking_rows(datasets_dir)


@pytest.fixture
def loop_env(monkeypatch: pytest.MonkeyPatch, encoder_cache_dir: Path) -> None:
    monkeypatch.setenv("NICHE_CACHE_DIR", str(encoder_cache_dir))
    monkeypatch.setenv("NICHE_BOOTSTRAP_RESAMPLES", "200")


_task = loop_support.create_task
_capture = loop_support.capture


def _decisions(registry: Registry) -> list[tuple[str | None, dict[str, Any]]]:
    return [
        (event.subject, event.detail)
        for event in registry.audit.events(TASK)
        if event.action == "loop.decided"
    ]


def _once(registry: Registry, encoder: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("holder", HOLDER)
    [decision] = loop_once([TASK], registry=registry, encoder=encoder, **kwargs)
    return decision


# -- a first specialist ----------------------------------------------------------------------


@pytest.mark.slow
def test_the_loop_distils_trains_gates_and_promotes_a_first_champion(
    registry, encoder, banking_rows, loop_env
) -> None:
    _task(registry)
    _capture(registry, banking_rows)

    decision = _once(registry, encoder)

    assert (decision.action, decision.trigger) == ("promoted", "first"), decision.reason
    assert decision.reason == "champion v1, after first"
    champion = registry.promotions.get(TASK, "champion")
    assert champion is not None and champion.version == 1
    # Every step is in the audit trail with its numbers, as this loop.
    events = [e for e in registry.audit.events(TASK) if e.action == "loop.decided"]
    assert [e.subject for e in events] == ["train", "promoted"]
    assert {e.actor for e in events} == {HOLDER}
    started, done = (e.detail for e in events)
    assert started["reason"] == "first: no champion yet, 240 labelled rows (loop.min_rows=80)"
    assert started["rows"] == {"labelled": 240, "new": None, "min_rows": 80}
    assert done["dataset"]["origin"]["first_id"] >= 1
    assert sum(done["dataset"]["splits"].values()) <= 240
    assert done["gate"]["passed"] is True and done["gate"]["failed"] == []
    assert done["candidate"] == 1 and done["champion"] is None and done["champion_after"] == 1
    # Distilled data: the general model's recorded answers are the teacher (right on its own
    # labels by construction), and the gate held the candidate to agreeing with them.
    assert done["evaluation"]["general_kind"] == "teacher"
    assert done["evaluation"]["general_accuracy"] == 1.0
    agreement = {c["name"]: c for c in done["gate"]["checks"]}["agreement_with_general"]
    assert agreement["passed"] and agreement["value"] >= 0.8
    assert set(done["seconds"]) >= {"decide", "distil", "train", "evaluate", "gate", "total"}
    # The gate and the alias move were made as the loop too; the lease is given back.
    moves = [e for e in registry.audit.events(TASK) if e.action == "alias.moved"]
    assert [e.actor for e in moves] == [HOLDER]
    assert registry.leases.get(TASK) is None

    # Nothing new since: the next pass monitors the champion and does nothing, saying why.
    again = _once(registry, encoder)
    assert again.action == "skip"
    assert again.reason.startswith("no trigger fired: ")
    assert "0 of 1000 new labelled rows" in again.reason
    assert again.detail["monitor"]["model_version"] == 1
    assert again.detail["monitor"]["signals"]
    assert registry.monitoring.latest(TASK) is not None  # the check was stored
    assert len(registry.models.all(TASK)) == 1


@pytest.mark.slow
def test_the_loop_retrains_the_kind_its_champion_is(
    registry, encoder, banking_rows, loop_env
) -> None:
    from niche.data import Rows, curate
    from niche.workflows import train_and_register

    _task(registry, triggers=["new_rows"], new_rows=100)
    seed_rows = banking_rows[:120]
    version = curate(
        Rows(texts=[t for t, _ in seed_rows], labels=[y for _, y in seed_rows], source="seed"),
        seed=0,
    )
    first = train_and_register(
        version, Settings(), task=TASK, kind="text-two-stage", encoder=encoder, registry=registry
    )
    registry.promotions.move(TASK, "champion", first.version, reason="test")
    _capture(registry, banking_rows)

    decision = _once(registry, encoder)

    assert decision.trigger == "new_rows", decision.reason
    assert decision.detail["kind"] == "text-two-stage"
    retrained = registry.models.get(TASK, 2)
    assert retrained.kind == "text-two-stage"  # not the text kind a first model gets


def test_too_few_labelled_rows_is_audited_as_did_nothing_with_the_counts(
    registry, encoder, banking_rows, loop_env
) -> None:
    _task(registry)
    _capture(registry, banking_rows[:30])

    decision = _once(registry, encoder)

    assert decision.action == "skip"
    assert decision.reason == "only 30 labelled rows, 80 needed (loop.min_rows)"
    [(subject, detail)] = _decisions(registry)
    assert subject == "skip"
    assert detail["reason"] == decision.reason
    assert detail["rows"] == {"labelled": 30, "new": None, "min_rows": 80}
    assert registry.models.all(TASK) == []
    assert registry.leases.get(TASK) is None


# -- guards read from the audit trail -------------------------------------------------------


def test_cooldown_and_daily_cap_count_the_retrains_the_audit_trail_shows(
    registry, encoder, banking_rows, loop_env
) -> None:
    _task(registry, cooldown_s=3600, max_retrains_per_day=1)
    _capture(registry, banking_rows)
    # A retrain this loop started earlier (it crashed before registering anything).
    registry.audit.record(
        "loop.decided", task=TASK, subject="train", detail={"reason": "first"}, actor=HOLDER
    )
    started_at = registry.audit.events(TASK)[-1].at

    soon = _once(registry, encoder, now=started_at + timedelta(minutes=10))
    assert (soon.action, soon.trigger) == ("skip", "first")
    assert soon.reason == "cooling down: trained 600 s ago, loop.cooldown_s=3600 (3000 s left)"

    later = _once(registry, encoder, now=started_at + timedelta(hours=2))
    assert later.action == "skip"
    assert later.reason == "1 retrains started in the last 24 h, loop.max_retrains_per_day=1"

    assert [s for s, _ in _decisions(registry)] == ["train", "skip", "skip"]
    assert registry.models.all(TASK) == []


# -- failures leave the champion serving ------------------------------------------------------


@pytest.mark.slow
def test_a_refused_gate_is_audited_and_moves_no_alias(registry, encoder, banking_rows, loop_env):
    _task(registry)
    registry.tasks.update(TASK, sla={"latency_p95_ms": 0.001})  # out of reach
    _capture(registry, banking_rows)

    decision = _once(registry, encoder)

    assert decision.action == "refused"
    assert decision.reason == "gate refused v1 (failed sla.latency_p95_ms); no champion yet"
    assert registry.promotions.get(TASK, "champion") is None
    subjects = [s for s, _ in _decisions(registry)]
    assert subjects == ["train", "refused"]
    assert _decisions(registry)[-1][1]["gate"]["failed"] == ["sla.latency_p95_ms"]


@pytest.mark.slow
def test_a_crashed_training_is_audited_and_the_champion_keeps_serving(
    registry, encoder, banking_rows, loop_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _task(registry, new_rows=20)
    _capture(registry, banking_rows[:200])
    assert _once(registry, encoder).action == "promoted"
    _capture(registry, banking_rows[200:])  # 40 new rows: the new_rows trigger fires

    import niche.training

    def crash(*args: Any, **kwargs: Any) -> Any:  # simulated: the machine ran out of memory
        raise MemoryError("cannot allocate 12 GiB (postgresql://niche:secret@db.internal/niche)")

    monkeypatch.setattr(niche.training, "train", crash)
    decision = _once(registry, encoder)

    assert (decision.action, decision.trigger) == ("failed", "new_rows")
    assert decision.reason.startswith("train failed: MemoryError: cannot allocate 12 GiB")
    assert decision.reason.endswith("v1 stays champion")
    error = decision.detail["error"]
    assert (error["step"], error["class"]) == ("train", "MemoryError")
    assert "secret" not in str(decision.detail) and "db.internal" not in str(decision.detail)
    champion = registry.promotions.get(TASK, "champion")
    assert champion is not None and champion.version == 1
    assert len(registry.models.all(TASK)) == 1
    assert [s for s, _ in _decisions(registry)][-2:] == ["train", "failed"]
    assert registry.leases.get(TASK) is None


# -- the lease --------------------------------------------------------------------------------


def test_a_task_another_loop_holds_is_skipped_and_said(registry, encoder, banking_rows, loop_env):
    _task(registry)
    _capture(registry, banking_rows)
    registry.leases.acquire(TASK, holder="loop:other:7", ttl_s=600)

    decision = _once(registry, encoder)

    assert decision.action == "skip"
    assert decision.reason.startswith("held by loop:other:7 until ")
    assert registry.models.all(TASK) == []
    assert registry.leases.get(TASK).holder == "loop:other:7"  # not released by the skipper


class _Pause:
    """A progress that blocks when the loop starts distilling until released (a long step)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go_on = threading.Event()

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Any]:
        if description == f"{TASK}: distil" and not self.reached.is_set():
            self.reached.set()
            assert self.go_on.wait(120)
        yield lambda _: None


@pytest.mark.slow
def test_two_loops_racing_on_one_task_train_it_once(
    database_url: str, encoder, banking_rows, loop_env
) -> None:
    with Registry(database_url) as registry:
        _task(registry)
        _capture(registry, banking_rows)
    pause = _Pause()
    results: dict[str, Any] = {}

    def first() -> None:
        with Registry(database_url) as registry:
            results["a"] = _once(registry, encoder, holder="loop:a:1", progress=pause)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert pause.reached.wait(120), "the first loop never started its retrain"
        with Registry(database_url) as registry:
            results["b"] = _once(registry, encoder, holder="loop:b:2")
    finally:
        pause.go_on.set()
        thread.join(300)

    assert results["a"].action == "promoted"
    assert results["b"].action == "skip"
    assert results["b"].reason.startswith("held by loop:a:1 until ")
    with Registry(database_url) as registry:
        trains = [s for s, _ in _decisions(registry) if s == "train"]
        assert len(trains) == 1
        assert [m.version for m in registry.models.all(TASK)] == [1]


def test_a_step_longer_than_the_lease_keeps_it_through_the_heartbeat(
    database_url: str, encoder, banking_rows, loop_env
) -> None:
    settings = Settings(loop_lease_ttl_s=0.6)  # renewed every 0.2 s while a step runs
    with Registry(database_url) as registry:
        _task(registry)
        _capture(registry, banking_rows)
    pause, stop = _Pause(), threading.Event()
    results: dict[str, Any] = {}

    def first() -> None:
        with Registry(database_url) as registry:
            results["a"] = loop_once(
                [TASK],
                settings,
                registry=registry,
                encoder=encoder,
                holder="loop:a:1",
                stop=stop,
                progress=pause,
            )[0]

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert pause.reached.wait(120), "the first loop never started distilling"
        time.sleep(1.5)  # well past the ttl: only renewals keep the lease
        with Registry(database_url) as registry:
            [results["b"]] = loop_once(
                [TASK], settings, registry=registry, encoder=encoder, holder="loop:b:2"
            )
    finally:
        stop.set()  # the first loop ends before training
        pause.go_on.set()
        thread.join(120)
    assert results["b"].action == "skip"
    assert results["b"].reason.startswith("held by loop:a:1 until ")
    assert (results["a"].action, results["a"].reason) == ("skip", "stopped before train")
    with Registry(database_url) as registry:
        assert registry.leases.get(TASK) is None
        assert registry.models.all(TASK) == []


def test_a_stop_between_steps_ends_the_pass_and_releases_the_lease(
    registry, encoder, banking_rows, loop_env
) -> None:
    _task(registry)
    _capture(registry, banking_rows)
    stop = threading.Event()

    class StopDuringDistil:
        @contextmanager
        def task(self, description: str, total: int | None = None) -> Iterator[Any]:
            if description == f"{TASK}: distil":
                stop.set()  # Ctrl-C while distilling: the step finishes, the next does not
            yield lambda _: None

    decision = _once(registry, encoder, stop=stop, progress=StopDuringDistil())

    assert decision.action == "skip"
    assert decision.reason == "stopped before train"
    assert registry.models.all(TASK) == []
    assert registry.leases.get(TASK) is None
    assert [s for s, _ in _decisions(registry)] == ["train", "skip"]


# -- which tasks ------------------------------------------------------------------------------


def test_unknown_task_names_are_refused_before_anything_runs(registry, encoder) -> None:
    _task(registry)
    with pytest.raises(TaskNotFoundError, match="no task 'nope'"):
        loop_once([TASK, "nope"], registry=registry, encoder=encoder)
    assert _decisions(registry) == []


def test_a_task_with_the_loop_disabled_is_left_untouched(registry, encoder, banking_rows):
    _task(registry, enabled=False)
    _capture(registry, banking_rows)
    [decision] = loop_once(registry=registry, encoder=encoder)  # every task
    assert (decision.task, decision.action) == (TASK, "skip")
    assert decision.reason == "loop.enabled is false"
    assert _decisions(registry) == []  # not even audited
    assert registry.leases.get(TASK) is None


# -- run_loop ------------------------------------------------------------------------------


def test_run_loop_goes_on_after_a_failed_pass_and_audits_it(
    registry, encoder, banking_rows, loop_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _task(registry)
    _capture(registry, banking_rows[:10])
    import niche.workflows.loop as loop_module

    real_once = loop_module.loop_once
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # simulated: the registry went away for one pass
            raise ConnectionError("connection refused by db.internal:5432")
        return real_once(*args, **kwargs)

    monkeypatch.setattr(loop_module, "loop_once", flaky)
    slept: list[float] = []
    passes: list[list[Any]] = []
    run_loop(
        [TASK],
        registry=registry,
        encoder=encoder,
        holder=HOLDER,
        interval_s="10m",
        iterations=3,
        sleep=slept.append,
        on_pass=passes.append,
    )

    assert slept == [600.0, 600.0]
    assert [[d.action for d in p] for p in passes] == [["failed"], ["skip"], ["skip"]]
    assert passes[0][0].reason == "the pass failed: ConnectionError: connection refused by <host>"
    failed = [e for e in registry.audit.events() if e.subject == "failed"]
    assert len(failed) == 1 and failed[0].task is None and failed[0].actor == HOLDER


def test_run_loop_stops_when_asked_between_passes(registry, encoder, banking_rows) -> None:
    _task(registry)
    _capture(registry, banking_rows[:10])
    stop = threading.Event()
    passes: list[Any] = []
    run_loop(
        [TASK],
        registry=registry,
        encoder=encoder,
        interval_s=600,
        stop=stop,
        sleep=lambda _: stop.set(),  # stopped while waiting for the next pass
        on_pass=passes.append,
    )
    assert len(passes) == 1


def test_run_loop_refuses_unknown_tasks_before_the_first_pass(registry, encoder) -> None:
    with pytest.raises(TaskNotFoundError):
        run_loop(["nope"], registry=registry, encoder=encoder, iterations=1)
    assert registry.audit.events() == []
