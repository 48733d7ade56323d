"""The audit trail: one event per change, in the change's own transaction, on both backends."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from niche.data import DatasetVersion, Rows, curate
from niche.errors import AlreadyExistsError, ConflictError, ValidationError
from niche.registry import Registry
from niche.registry.stores import default_actor
from niche.registry.tasks import TaskSpec
from tests.clocks import START, StepClock

TASK = "tickets"


def _spec(name: str = TASK, **fields: Any) -> TaskSpec:
    return TaskSpec(name=name, labels=["billing", "outage"], **fields)


def _model(registry: Registry, *, actor: str | None = None, task: str = TASK) -> int:
    return registry.models.register(
        task,
        kind="text",
        artifact_digest="d" * 64,
        artifact_uri="file:///artifacts/d",
        dataset_fingerprint="f" * 64,
        lineage={},
        actor=actor,
    ).version


def _dataset() -> DatasetVersion:
    texts = [f"my invoice is wrong {i}" for i in range(5)] + [
        f"the service is down again {i}" for i in range(5)
    ]
    rows = Rows(texts=texts, labels=["billing"] * 5 + ["outage"] * 5, source="mem")
    return curate(rows, test_size=0.4, seed=0, source="tickets.csv")


def _clock(registry: Registry) -> StepClock:
    clock = registry.clock
    assert isinstance(clock, StepClock)
    return clock


def _last(registry: Registry) -> Any:
    events = registry.audit.events()
    assert events, "no audit event was written"
    return events[-1]


def test_each_change_writes_one_event_with_its_actor_and_the_clocks_time(
    registry: Registry,
) -> None:
    clock = _clock(registry)
    spec = _spec()

    registry.tasks.create(spec, actor="ana")
    created = _last(registry)
    assert (created.action, created.task, created.subject, created.actor) == (
        "task.created",
        TASK,
        TASK,
        "ana",
    )
    assert created.at == clock.now == START and created.detail == {"spec": spec.to_dict()}

    registry.tasks.update(TASK, actor="bo", domain="support", sla={"min_quality": 0.8})
    updated = _last(registry)
    assert (updated.action, updated.actor, updated.at) == ("task.updated", "bo", clock.now)
    changed = updated.detail["changed"]
    assert sorted(changed) == ["domain", "sla"]
    assert changed["domain"] == {"from": None, "to": "support"}
    assert changed["sla"]["from"]["min_quality"] is None
    assert changed["sla"]["to"]["min_quality"] == 0.8

    version = _dataset()
    registry.datasets.register(version, actor="cy")
    registered = _last(registry)
    assert (registered.action, registered.subject, registered.task) == (
        "dataset.registered",
        version.fingerprint[:12],
        None,
    )
    assert registered.actor == "cy" and registered.at == clock.now
    assert registered.detail["fingerprint"] == version.fingerprint
    assert registered.detail["artifact_digest"] in registry.referenced_digests()

    _model(registry, actor="dee")
    model = _last(registry)
    assert (model.action, model.task, model.subject, model.actor, model.at) == (
        "model.registered",
        TASK,
        "v1",
        "dee",
        clock.now,
    )
    assert model.detail["artifact_digest"] == "d" * 64

    registry.promotions.record_gate(TASK, 1, alias="champion", passed=False, checks=[], actor="eve")
    gate = _last(registry)
    assert (gate.action, gate.subject, gate.actor, gate.at) == (
        "gate.decided",
        "v1",
        "eve",
        clock.now,
    )
    assert gate.detail == {
        "version": 1,
        "alias": "champion",
        "passed": False,
        "forced": False,
        "why": None,
        "failed": [],
    }

    registry.promotions.move(TASK, "challenger", 1, actor="fay", reason="try it")
    moved = _last(registry)
    assert (moved.action, moved.subject, moved.actor, moved.at) == (
        "alias.moved",
        "v1",
        "fay",
        clock.now,
    )
    assert moved.detail == {
        "alias": "challenger",
        "from_version": None,
        "to_version": 1,
        "reason": "try it",
    }

    key, secret = registry.keys.create(scope="inference", budget_usd=2.0, name="ci", actor="gus")
    made = _last(registry)
    assert (made.action, made.subject, made.task, made.actor, made.at) == (
        "key.created",
        key.prefix,
        None,
        "gus",
        clock.now,
    )
    assert made.detail == {"id": key.id, "name": "ci", "scope": "inference", "budget_usd": 2.0}

    registry.keys.revoke(key.prefix, actor="hal")
    revoked = _last(registry)
    assert (revoked.action, revoked.subject, revoked.actor, revoked.at) == (
        "key.revoked",
        key.prefix,
        "hal",
        clock.now,
    )

    trail = registry.audit.events()
    assert [e.action for e in trail] == [
        "task.created",
        "task.updated",
        "dataset.registered",
        "model.registered",
        "gate.decided",
        "alias.moved",
        "key.created",
        "key.revoked",
    ]
    assert [e.at for e in trail] == sorted(e.at for e in trail)
    dumped = json.dumps([e.to_dict() for e in trail])
    assert secret not in dumped and secret[8:] not in dumped
    assert trail[0].to_dict()["at"] == "2026-03-01T12:00:00+00:00"


def test_idempotent_no_ops_write_no_event(registry: Registry) -> None:
    registry.tasks.ensure(_spec())
    registry.tasks.ensure(_spec(domain="ignored"))
    registry.tasks.update(TASK, domain=None)  # the value it has already
    version = _dataset()
    registry.datasets.register(version)
    registry.datasets.register(version)
    key, _ = registry.keys.create(scope="admin")
    registry.keys.revoke(key.id)
    registry.keys.revoke(key.id)
    assert [e.action for e in registry.audit.events()] == [
        "task.created",
        "dataset.registered",
        "key.created",
        "key.revoked",
    ]


def test_the_actor_defaults_to_the_registrys_then_to_the_user(database_url: str) -> None:
    with Registry(database_url, clock=StepClock(), actor="svc:retrain") as registry:
        registry.tasks.create(_spec())
        registry.tasks.create(_spec("alerts"), actor="ana")
        registry.keys.create(scope="admin")  # every store acts as the registry's actor
        assert [e.actor for e in registry.audit.events()] == ["svc:retrain", "ana", "svc:retrain"]
    with Registry(database_url, clock=StepClock(START + timedelta(hours=1))) as registry:
        registry.tasks.update(TASK, domain="support")
        assert _last(registry).actor == default_actor()
        assert default_actor().startswith("cli:")
        with pytest.raises(ValidationError, match="actor"):
            registry.tasks.update(TASK, domain="x", actor=" ")
        assert len(registry.audit.events()) == 4


def test_events_filter_by_task_time_and_count(registry: Registry) -> None:
    registry.tasks.create(_spec())
    registry.tasks.create(_spec("alerts"))
    _model(registry)
    _model(registry, task="alerts")
    registry.keys.create(scope="admin")
    assert [e.action for e in registry.audit.events(TASK)] == ["task.created", "model.registered"]
    assert [e.subject for e in registry.audit.events("alerts")] == ["alerts", "v1"]
    since = START + timedelta(seconds=2)
    assert [e.action for e in registry.audit.events(since=since)] == [
        "model.registered",
        "model.registered",
        "key.created",
    ]
    assert [e.action for e in registry.audit.events(limit=2)] == [
        "model.registered",
        "key.created",
    ]
    assert registry.audit.events(limit=0) == []
    assert registry.audit.events("nobody") == []
    with pytest.raises(ValidationError, match="limit"):
        registry.audit.events(limit=-1)


# -- an event is committed with its change, or rolled back with it ---------------------------


def test_a_refused_change_writes_no_event(registry: Registry) -> None:
    registry.tasks.create(_spec())
    for _ in range(2):
        _model(registry)
    registry.promotions.move(TASK, "champion", 1, actor="ana", expected_current=None)
    before = registry.audit.events()
    with pytest.raises(ConflictError):
        registry.promotions.move(TASK, "champion", 2, actor="bo", expected_current=None)
    with pytest.raises(AlreadyExistsError):
        registry.tasks.create(_spec(domain="other"))
    with pytest.raises(ValidationError, match="unknown field"):
        registry.tasks.update(TASK, latency=3)
    assert registry.audit.events() == before
    assert [e.action for e in before][-1] == "alias.moved"


@contextmanager
def _commits_fail() -> Iterator[None]:
    """Every session commit raises once its statements (the change and its event) ran."""

    def boom(session: Session) -> None:
        session.flush()
        raise RuntimeError("the commit failed")

    sa.event.listen(Session, "before_commit", boom)
    try:
        yield
    finally:
        sa.event.remove(Session, "before_commit", boom)


CHANGES: dict[str, Callable[[Registry], object]] = {
    "task.created": lambda r: r.tasks.create(_spec("alerts")),
    "task.updated": lambda r: r.tasks.update(TASK, domain="support"),
    "model.registered": lambda r: _model(r),
    "alias.moved": lambda r: r.promotions.move(TASK, "champion", 1, actor="ana"),
    "gate.decided": lambda r: r.promotions.record_gate(
        TASK, 1, alias="champion", passed=True, checks=[], actor="ana"
    ),
    "key.created": lambda r: r.keys.create(scope="admin"),
}


@pytest.mark.parametrize("action", sorted(CHANGES))
def test_a_change_whose_commit_fails_leaves_neither_it_nor_its_event(
    registry: Registry, action: str
) -> None:
    registry.tasks.create(_spec())
    _model(registry)
    before = (registry.audit.events(), registry.tasks.all(), registry.keys.all())
    with _commits_fail(), pytest.raises(RuntimeError, match="the commit failed"):
        CHANGES[action](registry)
    after = (registry.audit.events(), registry.tasks.all(), registry.keys.all())
    assert after == before
    assert registry.promotions.aliases(TASK) == {} and registry.promotions.gates(TASK) == []
    assert [m.version for m in registry.models.all()] == [1]
    CHANGES[action](registry)  # the same change, committed this time, writes its event
    assert registry.audit.events()[-1].action == action
