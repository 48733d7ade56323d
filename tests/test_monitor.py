"""``monitor`` on a real registry (SQLite and PostgreSQL), the real encoder, a real champion
trained on a BANKING77 slice, and traffic records of real BANKING77 test texts: in-distribution
windows raise no drift alarm, unseen intents do; gold labels show as accuracy; a stored check
opens and resolves alerts; too little traffic is "insufficient", never an alarm."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from niche.errors import TaskNotFoundError, ValidationError
from niche.registry import Registry, TrafficRecord
from niche.registry.tasks import MonitoringSpec, TaskSpec
from niche.settings import Settings
from niche.workflows import monitor, parse_window
from tests.clocks import START

TASK = "bank8"
# Intents close to one another, so the champion is unsure of some texts (as on real traffic).
SEEN = (
    "card_arrival",
    "card_delivery_estimate",
    "top_up_failed",
    "pending_top_up",
    "top_up_reverted",
    "pending_transfer",
    "transfer_not_received_by_recipient",
    "balance_not_updated_after_bank_transfer",
)
UNSEEN = (
    "age_limit",
    "apple_pay_or_google_pay",
    "atm_support",
    "beneficiary_not_allowed",
    "cancel_transfer",
    "country_support",
    "disposable_card_limits",
    "getting_spare_card",
)
WINDOW = 150
THRESHOLD = 0.7  # the task's cascade threshold
SERVED_AT = START + timedelta(days=1)  # traffic starts after the promotion (StepClock: START+s)
NOW = START + timedelta(days=2)
DRIFT = ("input_drift", "input_drift_projection", "prediction_drift", "confidence_drift")


def _read(path: Path, labels: tuple[str, ...], per_label: int) -> tuple[list[str], list[str]]:
    """The first ``per_label`` rows of each of ``labels`` in ``path``."""
    taken = dict.fromkeys(labels, 0)
    texts, out = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = row["category"]
            if taken.get(label, per_label) < per_label:
                taken[label] += 1
                texts.append(row["text"])
                out.append(label)
    return texts, out


@dataclass(frozen=True)
class Slice:
    """The champion's curated dataset version and traffic texts, built once per module."""

    version: Any
    seen: tuple[list[str], list[str]]  # BANKING77 test texts of the 8 intents it learnt
    unseen: tuple[list[str], list[str]]  # … of 8 intents it never saw


@pytest.fixture(scope="module")
def bank_slice(datasets_dir: Path) -> Slice:
    from niche.data import Rows, curate

    texts, labels = _read(datasets_dir / "banking77" / "train.csv", SEEN, 60)
    version = curate(
        Rows(texts=texts, labels=labels, source="banking77 slice"), test_size=0.4, seed=0
    )
    test_csv = datasets_dir / "banking77" / "test.csv"
    return Slice(
        version, _shuffled(_read(test_csv, SEEN, 40)), _shuffled(_read(test_csv, UNSEEN, 40))
    )


def _shuffled(rows: tuple[list[str], list[str]]) -> tuple[list[str], list[str]]:
    """The rows in a seeded random order (the file is sorted by label: traffic is not)."""
    import random

    order = list(range(len(rows[0])))
    random.Random(0).shuffle(order)
    return [rows[0][i] for i in order], [rows[1][i] for i in order]


@dataclass
class Setup:
    registry: Registry
    settings: Settings
    encoder: Any
    version: int
    predictor: Any
    slice: Slice
    next_at: Any = SERVED_AT

    def serve(
        self,
        texts: list[str],
        labels: list[str],
        *,
        gold_every: int = 0,
        sampled_every: int = 4,
        known: bool = True,
    ) -> None:
        """Store records of the champion answering ``texts`` (true labels ``labels``) as the
        gateway would: confident answers stand, the rest cascade to a general model that
        names the true label when it is one of the task's (``known``)."""
        predictions = self.predictor.predict(texts)
        records = []
        for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
            confidence = float(predictions.confidences[i])
            sampled = sampled_every > 0 and i % sampled_every == 0
            cascaded = confidence < THRESHOLD
            asked = cascaded or sampled
            general = label if asked and known else None
            route = "specialist"
            if cascaded:
                route = "general" if general is not None else "specialist-fallback"
            records.append(
                TrafficRecord(
                    task=TASK,
                    model=TASK,
                    route=route,
                    input=text,
                    text=text,
                    specialist_label=predictions.labels[i],
                    specialist_confidence=confidence,
                    model_version=self.version,
                    alias="champion",
                    general_label=general,
                    general_answer=general,
                    shadow=sampled and not cascaded,
                    sampled=sampled and not cascaded,
                    latency_ms=4.0 + (i % 7) + (300.0 if cascaded else 0.0),
                    cost_usd=0.0004 if asked else 0.000001,
                    status=200,
                    gold_label=label if gold_every and i % gold_every == 0 else None,
                    at=self.next_at,
                )
            )
            self.next_at += timedelta(seconds=1)
        self.registry.traffic.record(records)


@pytest.fixture
def setup(registry: Registry, bank_slice: Slice, encoder) -> Setup:
    from niche.workflows import load_specialist, train_and_register

    settings = Settings()
    spec = TaskSpec(
        name=TASK,
        labels=sorted(SEEN),
        cascade_threshold=THRESHOLD,
        monitoring=MonitoringSpec(window=WINDOW, min_rows=50),
    )
    registry.tasks.create(spec)
    registry.datasets.register(bank_slice.version)
    record = train_and_register(
        bank_slice.version, settings, task=TASK, encoder=encoder, registry=registry
    )
    registry.promotions.move(TASK, "champion", record.version, actor="test", reason="fixture")
    predictor = load_specialist(record, settings, encoder=encoder)
    return Setup(registry, settings, encoder, record.version, predictor, bank_slice)


def _check(setup: Setup, **options: Any) -> Any:
    options = {"store": False, "now": NOW, "seed": 0, **options}
    (report,) = monitor(
        TASK, setup.settings, registry=setup.registry, encoder=setup.encoder, **options
    )
    return report


def _signals(report: Any) -> dict[str, Any]:
    return {signal.name: signal for signal in report.signals}


def test_a_window_like_the_training_rows_raises_no_drift_alarm(setup: Setup) -> None:
    texts, labels = setup.slice.seen
    setup.serve(texts[: 2 * WINDOW], labels[: 2 * WINDOW])  # the first serving window, then this
    report = _check(setup)
    signals = _signals(report)
    assert report.model_version == setup.version
    for name in (*DRIFT, "cascade_rate", "agreement"):
        assert signals[name].alarm is False, signals[name]
        assert not signals[name].detail.get("insufficient"), signals[name]
    assert signals["input_drift"].detail["reference"] == "training rows"
    assert signals["confidence_drift"].detail["reference"] == "held-out rows (test)"
    assert signals["cascade_rate"].detail["reference"] == "first serving window"
    window = report.window
    assert (window["rows"], window["champion_rows"]) == (WINDOW, WINDOW)
    assert window["reference"]["serving_rows"] == WINDOW
    assert window["reference"]["serving_last_id"] < window["first_id"]
    assert window["reference"]["training_rows"] == len(setup.slice.version.splits["train"])
    # No gold labels: accuracy is estimated from the calibrated confidences.
    assert "accuracy" not in signals and signals["estimated_accuracy"].statistic > 0.5
    # Agreement counts the randomly sampled shadow requests only; all of them in detail.
    current = setup.registry.traffic.window(TASK, limit=WINDOW, newest=True)
    sampled = [r for r in current if r.sampled and r.general_label is not None]
    both = [r for r in current if r.general_label is not None]
    agreement = signals["agreement"]
    assert 0 < agreement.n == len(sampled) < len(both) == agreement.detail["all_records"]["n"]


def test_unseen_intents_raise_input_and_confidence_drift_and_the_cascade_rate(
    setup: Setup,
) -> None:
    texts, labels = setup.slice.seen
    setup.serve(texts[:WINDOW], labels[:WINDOW])
    unseen, unseen_labels = setup.slice.unseen
    setup.serve(unseen[:WINDOW], unseen_labels[:WINDOW], known=False)
    report = _check(setup)
    signals = _signals(report)
    for name in ("input_drift", "input_drift_projection", "confidence_drift", "cascade_rate"):
        assert signals[name].alarm is True, signals[name]
    assert report.alarm is True
    cascade = signals["cascade_rate"]
    assert cascade.statistic is not None and cascade.statistic > 0
    assert report.window["reference"]["serving_rows"] == WINDOW


def test_gold_labels_show_as_accuracy(setup: Setup) -> None:
    texts, labels = setup.slice.seen
    setup.serve(texts[:300], labels[:300], gold_every=3)
    report = _check(setup)
    signals = _signals(report)
    assert "estimated_accuracy" not in signals
    accuracy = signals["accuracy"]
    window_gold = sum(1 for i in range(300 - WINDOW, 300) if i % 3 == 0)
    assert accuracy.n == window_gold
    assert 0.7 < accuracy.statistic <= 1.0
    assert accuracy.alarm is False


def test_a_stored_check_opens_alerts_and_a_later_one_resolves_them(setup: Setup) -> None:
    from tests.test_alerts import Hooks, _hooks

    texts, labels = setup.slice.seen
    unseen, unseen_labels = setup.slice.unseen
    setup.serve(texts[:WINDOW], labels[:WINDOW])
    setup.serve(unseen[:WINDOW], unseen_labels[:WINDOW], known=False)
    with Hooks() as server:
        hooks = _hooks([f"{server.root}/ok"])
        report = _check(setup, store=True, webhooks=hooks)
        assert hooks.flush(10)
        alarming = sorted(s.name for s in report.signals if s.alarm)
        assert sorted(a.signal for a in report.opened) == alarming
        assert report.report_id is not None
        stored = setup.registry.monitoring.latest(TASK)
        assert stored is not None and stored.id == report.report_id
        assert stored.signals == [s.to_dict() for s in report.signals]
        assert stored.window == report.window and stored.alarm is True
        assert sorted(a.signal for a in setup.registry.monitoring.alerts(TASK)) == alarming
        events = sorted(e["alert"]["signal"] for e in server.received)
        assert events == alarming
        assert {e["event"] for e in server.received} == {"alert.opened"}
        assert server.received[0]["report"]["report_id"] == report.report_id
        assert server.received[0]["report"]["task"] == TASK

        # Back to what it learnt: the drift alerts resolve.
        setup.serve(texts[WINDOW : 2 * WINDOW], labels[WINDOW : 2 * WINDOW])
        later = _check(setup, store=True, webhooks=hooks)
        assert hooks.flush(10)
    resolved = {a.signal for a in later.resolved}
    assert {"input_drift", "confidence_drift"} <= resolved
    still_open = {a.signal for a in setup.registry.monitoring.alerts(TASK, state="open")}
    assert still_open == {s.name for s in later.signals if s.alarm}
    assert "alert.resolved" in {e["event"] for e in server.received}


def test_too_few_records_are_insufficient_and_raise_no_alarm(setup: Setup) -> None:
    unseen, unseen_labels = setup.slice.unseen
    setup.serve(unseen[:20], unseen_labels[:20], known=False)  # shifted, but only 20
    report = _check(setup)
    assert report.alarm is False
    for signal in report.signals:
        assert signal.alarm is False
        assert signal.detail.get("insufficient") is True, signal
    assert report.window["rows"] == 20


def test_a_task_without_a_champion_or_traffic_is_reported_without_alarm(
    registry: Registry,
) -> None:
    registry.tasks.create(TaskSpec(name="empty", labels=["a", "b"]))
    (report,) = monitor("empty", registry=registry, now=NOW, store=True)
    assert report.model_version is None and report.alarm is False
    assert any("no champion" in note for note in report.notes)
    assert report.window["rows"] == 0
    assert all(signal.alarm is False for signal in report.signals)
    assert all(signal.detail.get("insufficient") for signal in report.signals)
    assert registry.monitoring.latest("empty") is not None
    assert registry.monitoring.alerts("empty") == []


def test_every_task_is_checked_and_an_unknown_one_is_refused(registry: Registry) -> None:
    for name in ("alpha", "beta"):
        registry.tasks.create(TaskSpec(name=name, labels=["a", "b"]))
    assert [r.task for r in monitor(registry=registry, now=NOW, store=False)] == ["alpha", "beta"]
    with pytest.raises(TaskNotFoundError, match=r"no task 'gamma' \(known: alpha, beta\)"):
        monitor("gamma", registry=registry, now=NOW)
    assert registry.monitoring.reports() == []


def test_the_window_option_takes_a_count_or_a_duration(setup: Setup) -> None:
    assert parse_window("500") == 500 and parse_window("1h") == "1h" and parse_window(None) is None
    with pytest.raises(ValidationError, match=r"--window 'soon' is neither"):
        parse_window("soon")
    texts, labels = setup.slice.seen
    setup.serve(texts[:320], labels[:320])  # one a second, the last at SERVED_AT + 319 s
    report = _check(setup, window=100)
    assert report.window["rows"] == 100 and report.window["size"] == 100
    last = SERVED_AT + timedelta(seconds=319)
    timed = _check(setup, window="60s", now=last + timedelta(seconds=1))
    assert timed.window["size"] == "60s" and timed.window["rows"] == 60


def test_the_cli_prints_each_report_as_json(
    setup: Setup, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from niche.cli import app

    texts, labels = setup.slice.seen
    setup.serve(texts[:120], labels[:120])
    monkeypatch.setenv("NICHE_DATABASE_URL", setup.registry.database_url)
    runner = CliRunner()
    result = runner.invoke(app, ["monitor", TASK, "--window", "100", "--json", "--no-store"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["task"] == TASK and report["model_version"] == setup.version
    assert set(report) >= {"window", "signals", "alarm", "alerts", "notes", "at"}
    for signal in report["signals"]:
        assert {"name", "statistic", "p_value", "interval", "threshold", "alarm"} <= set(signal)
        assert isinstance(signal["alarm"], bool)
    assert setup.registry.monitoring.reports(TASK) == []  # --no-store

    table = runner.invoke(app, ["monitor", TASK, "--window", "100"])
    assert table.exit_code == 0, table.output
    assert "input_drift" in table.stdout and "verdict" in table.stdout
    alerts = runner.invoke(app, ["alerts", TASK, "--state", "open", "--json"])
    assert alerts.exit_code == 0, alerts.output
    assert json.loads(alerts.stdout) == [
        a.to_dict() for a in setup.registry.monitoring.alerts(TASK, state="open")
    ]
    bad = runner.invoke(app, ["alerts", TASK, "--state", "closed"])
    assert bad.exit_code == 2 and "alert state must be one of open, resolved" in bad.stderr
    unknown = runner.invoke(app, ["monitor", "nope", "--json"])
    assert unknown.exit_code != 0 and "no task 'nope'" in unknown.stderr


def test_a_champion_that_cannot_be_loaded_is_noted_and_its_traffic_still_checked(
    setup: Setup,
) -> None:
    texts, labels = setup.slice.seen
    setup.serve(texts[:100], labels[:100])
    lost = setup.registry.models.register(
        TASK,
        kind="text",
        artifact_digest="0" * 64,
        artifact_uri="file:///nowhere",
        dataset_fingerprint=setup.slice.version.fingerprint,
        lineage={},
    )
    setup.registry.promotions.move(TASK, "champion", lost.version, actor="test", reason="x")
    report = _check(setup)
    assert report.model_version == lost.version and report.alarm is False
    assert any(f"v{lost.version} cannot be loaded" in note for note in report.notes)
    assert any(f"v{lost.version} answered nothing in the window" in n for n in report.notes)
    signals = _signals(report)
    assert signals["error_rate"].n == 100  # the task's traffic is still checked
    assert signals["input_drift"].detail["insufficient"] is True
