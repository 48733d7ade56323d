"""Leases on tasks (``registry.leases``), on real SQLite and real PostgreSQL: who wins a race,
takeover of an expired lease, renewal and release, and bad input."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from niche.errors import ValidationError
from niche.registry import Registry
from tests.clocks import START, StepClock

TASK = "tickets"
SPAWN = multiprocessing.get_context("spawn")
JOIN_TIMEOUT_S = 90


def test_a_free_task_is_leased_to_the_first_holder_for_its_ttl(registry) -> None:
    lease = registry.leases.acquire(TASK, holder="loop:a:1", ttl_s=600)
    assert lease is not None
    assert lease.task == TASK and lease.holder == "loop:a:1"
    assert lease.acquired_at == START
    assert lease.expires_at == START + timedelta(seconds=600)
    assert registry.leases.get(TASK) == lease
    assert registry.leases.get("other") is None


def test_an_unexpired_lease_is_refused_to_another_holder(registry) -> None:
    first = registry.leases.acquire(TASK, holder="loop:a:1", ttl_s=600)
    assert registry.leases.acquire(TASK, holder="loop:b:2", ttl_s=600) is None
    assert registry.leases.get(TASK) == first  # unchanged
    # Another task is a separate lease.
    assert registry.leases.acquire("alerts", holder="loop:b:2", ttl_s=600) is not None


def test_the_holder_acquiring_again_extends_its_lease_and_keeps_when_it_began(registry) -> None:
    first = registry.leases.acquire(TASK, holder="loop:a:1", ttl_s=600)
    again = registry.leases.acquire(TASK, holder="loop:a:1", ttl_s=600)
    assert first is not None and again is not None
    assert again.acquired_at == first.acquired_at
    assert again.expires_at == first.expires_at + timedelta(seconds=1)  # the clock stepped 1 s


def test_an_expired_lease_is_taken_over(registry) -> None:
    clock: StepClock = registry.clock
    registry.leases.acquire(TASK, holder="loop:dead:1", ttl_s=60)
    clock.now += timedelta(seconds=59)  # the next reading is exactly the expiry
    taken = registry.leases.acquire(TASK, holder="loop:b:2", ttl_s=600)
    assert taken is not None
    assert taken.holder == "loop:b:2"
    assert taken.acquired_at == START + timedelta(seconds=60)
    # The old holder has lost it: it can neither renew nor release it.
    assert registry.leases.renew(TASK, holder="loop:dead:1", ttl_s=600) is None
    assert registry.leases.release(TASK, holder="loop:dead:1") is False
    assert registry.leases.get(TASK) == taken


def test_renew_extends_only_the_holders_lease(registry) -> None:
    clock: StepClock = registry.clock
    registry.leases.acquire(TASK, holder="loop:a:1", ttl_s=60)
    clock.now += timedelta(seconds=30)
    renewed = registry.leases.renew(TASK, holder="loop:a:1", ttl_s=60)
    assert renewed is not None
    assert renewed.acquired_at == START
    assert renewed.expires_at == START + timedelta(seconds=31 + 60)
    assert registry.leases.renew(TASK, holder="loop:b:2", ttl_s=60) is None
    assert registry.leases.renew("nobody-holds-this", holder="loop:a:1", ttl_s=60) is None


def test_an_expired_lease_nobody_took_is_still_renewable_by_its_holder(registry) -> None:
    clock: StepClock = registry.clock
    registry.leases.acquire(TASK, holder="loop:a:1", ttl_s=10)
    clock.now += timedelta(seconds=100)
    renewed = registry.leases.renew(TASK, holder="loop:a:1", ttl_s=10)
    assert renewed is not None and renewed.expires_at > clock.now


def test_release_frees_the_task_for_the_next_holder(registry) -> None:
    registry.leases.acquire(TASK, holder="loop:a:1", ttl_s=600)
    assert registry.leases.release(TASK, holder="loop:b:2") is False
    assert registry.leases.get(TASK) is not None
    assert registry.leases.release(TASK, holder="loop:a:1") is True
    assert registry.leases.get(TASK) is None
    assert registry.leases.release(TASK, holder="loop:a:1") is False
    assert registry.leases.acquire(TASK, holder="loop:b:2", ttl_s=600) is not None


@pytest.mark.parametrize("ttl_s", [0, -5, float("nan"), float("inf"), True, "600"])
def test_a_bad_ttl_is_refused_naming_it(registry, ttl_s: Any) -> None:
    with pytest.raises(ValidationError, match="ttl_s"):
        registry.leases.acquire(TASK, holder="loop:a:1", ttl_s=ttl_s)
    with pytest.raises(ValidationError, match="ttl_s"):
        registry.leases.renew(TASK, holder="loop:a:1", ttl_s=ttl_s)
    assert registry.leases.get(TASK) is None


@pytest.mark.parametrize(
    ("task", "holder", "field"),
    [
        ("", "loop:a:1", "task"),
        (TASK, " ", "holder"),
        (TASK, "x" * 201, "holder"),
        ("t" * 65, "h", "task"),
    ],
)
def test_a_bad_task_or_holder_is_refused_naming_it(registry, task, holder, field) -> None:
    with pytest.raises(ValidationError, match=field):
        registry.leases.acquire(task, holder=holder, ttl_s=60)
    with pytest.raises(ValidationError, match=field):
        registry.leases.release(task, holder=holder)


# -- races: threads and processes, each with its own Registry as separate loops would have -----


def _race_in_threads(url: str, holders: list[str], rounds: int) -> list[list[str]]:
    """``rounds`` times: every holder acquires at once; the winner releases for the next round.
    Returns the winners of each round."""
    registries = [Registry(url) for _ in holders]
    for registry in registries:
        registry.upgrade()  # connect and migrate before the race, not during it
    barrier = threading.Barrier(len(holders))
    winners: list[list[str]] = [[] for _ in range(rounds)]
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(registry: Registry, holder: str) -> None:
        try:
            for round_ in range(rounds):
                barrier.wait(timeout=JOIN_TIMEOUT_S)
                lease = registry.leases.acquire(TASK, holder=holder, ttl_s=600)
                if lease is not None:
                    with lock:
                        winners[round_].append(lease.holder)
                barrier.wait(timeout=JOIN_TIMEOUT_S)  # everyone has tried
                if lease is not None:
                    assert registry.leases.release(TASK, holder=holder)
                barrier.wait(timeout=JOIN_TIMEOUT_S)  # released before the next round
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=run, args=(r, h)) for r, h in zip(registries, holders, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    for registry in registries:
        registry.close()
    assert not errors, errors
    return winners


def test_threads_racing_for_a_free_task_leave_exactly_one_holder(database_url: str) -> None:
    holders = [f"loop:thread:{i}" for i in range(6)]
    winners = _race_in_threads(database_url, holders, rounds=8)
    assert [len(round_) for round_ in winners] == [1] * 8
    assert all(w in holders for round_ in winners for w in round_)


def test_threads_racing_to_take_over_an_expired_lease_leave_exactly_one(database_url: str) -> None:
    # A crashed loop's lease, expired years ago by the real clock the racers use.
    past = StepClock(START.replace(year=2020))
    with Registry(database_url, clock=past) as registry:
        assert registry.leases.acquire(TASK, holder="loop:crashed:1", ttl_s=1) is not None
    holders = [f"loop:thread:{i}" for i in range(6)]
    registries = [Registry(database_url) for _ in holders]
    barrier = threading.Barrier(len(holders))
    won: list[str] = []

    def run(registry: Registry, holder: str) -> None:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        if registry.leases.acquire(TASK, holder=holder, ttl_s=600) is not None:
            won.append(holder)

    for registry in registries:
        registry.upgrade()
    threads = [
        threading.Thread(target=run, args=(r, h)) for r, h in zip(registries, holders, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert len(won) == 1
    lease = registries[0].leases.get(TASK)
    assert lease is not None and lease.holder == won[0]
    for registry in registries:
        registry.close()


def _acquire_in_process(url: str, holder: str, barrier: Any, results: Any) -> None:
    with Registry(url) as registry:
        registry.upgrade()
        barrier.wait()
        lease = registry.leases.acquire(TASK, holder=holder, ttl_s=600)
        results.put((holder, lease is not None))


def test_processes_racing_for_a_task_leave_exactly_one_holder(database_url: str) -> None:
    with Registry(database_url) as registry:
        registry.upgrade()  # one migration before the racers start
    holders = [f"loop:proc:{i}" for i in range(4)]
    barrier = SPAWN.Barrier(len(holders))
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_acquire_in_process, args=(database_url, h, barrier, results))
        for h in holders
    ]
    for proc in procs:
        proc.start()
    try:
        outcomes = []
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while len(outcomes) < len(procs) and time.monotonic() < deadline:
            try:
                outcomes.append(results.get(timeout=0.2))
            except queue.Empty:
                crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not crashed, f"worker(s) failed with exit codes {crashed}"
        for proc in procs:
            proc.join(JOIN_TIMEOUT_S)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    assert len(outcomes) == len(procs)
    winners = [holder for holder, won in outcomes if won]
    assert len(winners) == 1
    with Registry(database_url) as registry:
        lease = registry.leases.get(TASK)
    assert lease is not None and lease.holder == winners[0]
