"""registry.monitoring on real SQLite and real PostgreSQL: drift reports, alerts opened and
resolved in the report's transaction, their audit events, and racing checks."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from niche.errors import TaskNotFoundError, ValidationError
from niche.registry import Registry
from niche.registry.tasks import TaskSpec
from tests.clocks import START

TASK = "tickets"


def _signal(name: str, *, alarm: bool, statistic: float | None = 0.5, **more: Any) -> dict:
    return {
        "name": name,
        "statistic": statistic,
        "p_value": 0.001 if alarm else 0.4,
        "interval": None,
        "threshold": 0.01,
        "alarm": alarm,
        "method": "test",
        **more,
    }


@pytest.fixture
def monitored(registry: Registry) -> Registry:
    registry.tasks.create(TaskSpec(name=TASK, labels=["billing", "outage"]))
    return registry


def test_a_report_is_stored_and_read_back(monitored: Registry) -> None:
    signals = [_signal("input_drift", alarm=False), _signal("agreement", alarm=False)]
    report, opened, resolved = monitored.monitoring.record(
        TASK, model_version=2, window={"rows": 500, "first_id": 1}, signals=signals, alarm=False
    )
    assert (opened, resolved) == ([], [])
    assert report.task == TASK and report.model_version == 2 and report.alarm is False
    assert [s["name"] for s in report.signals] == ["input_drift", "agreement"]
    assert monitored.monitoring.latest(TASK) == report
    assert monitored.monitoring.reports(TASK) == [report]
    assert monitored.monitoring.latest("nothing-here") is None


def test_an_alarm_opens_one_alert_until_the_signal_is_back_in_bounds(
    monitored: Registry,
) -> None:
    store = monitored.monitoring
    first, opened, _ = store.record(
        TASK, model_version=1, window={}, signals=[_signal("input_drift", alarm=True)], alarm=True
    )
    assert [(a.signal, a.state, a.report_id) for a in opened] == [("input_drift", "open", first.id)]
    assert opened[0].detail["p_value"] == 0.001
    # Still alarming: the open alert stays the only one.
    _, again, _ = store.record(
        TASK, model_version=1, window={}, signals=[_signal("input_drift", alarm=True)], alarm=True
    )
    assert again == []
    # Too little data says nothing either way: the alert stays open.
    unjudged = _signal("input_drift", alarm=False, statistic=None, p_value=None)
    _, _, kept = store.record(TASK, model_version=1, window={}, signals=[unjudged], alarm=False)
    assert kept == []
    marked = _signal("input_drift", alarm=False, detail={"insufficient": True})
    _, _, kept = store.record(TASK, model_version=1, window={}, signals=[marked], alarm=False)
    assert kept == []
    assert [a.state for a in store.alerts(TASK)] == ["open"]
    # Back in bounds: resolved.
    last, _, resolved = store.record(
        TASK, model_version=1, window={}, signals=[_signal("input_drift", alarm=False)], alarm=False
    )
    assert [(a.signal, a.state) for a in resolved] == [("input_drift", "resolved")]
    assert resolved[0].resolved_at == last.at
    assert store.alerts(TASK, state="open") == []
    assert [a.id for a in store.alerts(TASK, state="resolved")] == [opened[0].id]
    # A new alarm opens a new alert.
    _, reopened, _ = store.record(
        TASK, model_version=1, window={}, signals=[_signal("input_drift", alarm=True)], alarm=True
    )
    assert len(reopened) == 1 and reopened[0].id != opened[0].id
    events = [
        (e.action, e.subject, e.detail["alert_id"])
        for e in monitored.audit.events(TASK)
        if e.action.startswith("alert.")
    ]
    assert events == [
        ("alert.opened", "input_drift", opened[0].id),
        ("alert.resolved", "input_drift", opened[0].id),
        ("alert.opened", "input_drift", reopened[0].id),
    ]


def test_a_refused_report_stores_nothing(monitored: Registry) -> None:
    bad = [_signal("input_drift", alarm=True), {"name": "agreement", "alarm": "yes"}]
    with pytest.raises(ValidationError, match=r"signals\[1\] \(agreement\): alarm"):
        monitored.monitoring.record(TASK, model_version=1, window={}, signals=bad, alarm=True)
    twice = [_signal("input_drift", alarm=True), _signal("input_drift", alarm=False)]
    with pytest.raises(ValidationError, match="listed twice"):
        monitored.monitoring.record(TASK, model_version=1, window={}, signals=twice, alarm=True)
    with pytest.raises(TaskNotFoundError, match=r"no task 'nope' \(known: tickets\)"):
        monitored.monitoring.record(
            "nope", model_version=1, window={}, signals=[_signal("x", alarm=True)], alarm=True
        )
    with pytest.raises(ValidationError, match="alert state must be one of open, resolved"):
        monitored.monitoring.alerts(state="closed")
    assert monitored.monitoring.reports() == []
    assert monitored.monitoring.alerts() == []
    assert [e.action for e in monitored.audit.events(TASK)] == ["task.created"]


def test_latest_all_is_the_newest_report_of_each_task(monitored: Registry) -> None:
    store = monitored.monitoring
    monitored.tasks.create(TaskSpec(name="spam", labels=["ham", "spam"]))
    monitored.tasks.create(TaskSpec(name="quiet", labels=["a", "b"]))
    older = START + timedelta(hours=1)
    newer = START + timedelta(hours=2)
    # Stored out of order: "newest" is by check time.
    new, _, _ = store.record(TASK, model_version=2, window={}, signals=[], alarm=False, at=newer)
    store.record(TASK, model_version=1, window={}, signals=[], alarm=False, at=older)
    spam, _, _ = store.record("spam", model_version=None, window={}, signals=[], alarm=False)
    assert store.latest_all() == {TASK: new, "spam": spam}
    assert store.latest(TASK) == new
    assert [r.model_version for r in store.reports(TASK)] == [1, 2]
    assert [r.model_version for r in store.reports(TASK, limit=1)] == [2]
    assert [r.model_version for r in store.reports(TASK, since=newer)] == [2]


def test_alerts_filter_by_task_state_time_and_limit(monitored: Registry) -> None:
    store = monitored.monitoring
    monitored.tasks.create(TaskSpec(name="spam", labels=["ham", "spam"]))
    signals = [_signal("input_drift", alarm=True), _signal("agreement", alarm=True)]
    store.record(TASK, model_version=1, window={}, signals=signals, alarm=True)
    store.record("spam", model_version=1, window={}, signals=signals[:1], alarm=True)
    assert [(a.task, a.signal) for a in store.alerts()] == [
        (TASK, "input_drift"),
        (TASK, "agreement"),
        ("spam", "input_drift"),
    ]
    assert [a.signal for a in store.alerts(TASK, state="open")] == ["input_drift", "agreement"]
    assert [a.task for a in store.alerts(limit=1)] == ["spam"]
    assert store.alerts(since=START + timedelta(days=1)) == []


def test_racing_checks_never_open_two_alerts_for_one_signal(database_url: str) -> None:
    """Checks of one task from many threads at once, each with its own registry (as two
    `niche monitor` runs or two loops would be)."""
    with Registry(database_url) as setup:
        setup.tasks.create(TaskSpec(name=TASK, labels=["billing", "outage"]))
    rounds, workers = 5, 4
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers)
    registries = [Registry(database_url) for _ in range(workers)]

    def check(registry: Registry, alarm: bool) -> None:
        try:
            for _ in range(rounds):
                barrier.wait(timeout=60)
                registry.monitoring.record(
                    TASK,
                    model_version=1,
                    window={},
                    signals=[_signal("input_drift", alarm=alarm)],
                    alarm=alarm,
                )
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    try:
        threads = [threading.Thread(target=check, args=(registry, True)) for registry in registries]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        alerts = registries[0].monitoring.alerts(TASK)
        assert [a.state for a in alerts] == ["open"]
        assert len(registries[0].monitoring.reports(TASK)) == rounds * workers
        opened = [e for e in registries[0].audit.events(TASK) if e.action == "alert.opened"]
        assert len(opened) == 1
    finally:
        for registry in registries:
            registry.close()
