"""The loop's policy (:func:`niche.workflows.loop.decide`): a pure function of the task's
``loop.*`` spec, the facts and the time, checked exactly, trigger by trigger and guard by guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from niche.errors import ValidationError
from niche.registry.tasks import LOOP_TRIGGERS, LoopSpec
from niche.workflows.loop import parse_interval
from niche.workflows.loop_policy import LoopFacts, decide, signal_trigger

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ALL = LOOP_TRIGGERS


def spec(**changes) -> LoopSpec:
    """A policy with no cooldown and no daily cap unless a test sets them."""
    values = {"min_rows": 100, "new_rows": 500, "cooldown_s": 0.0, "max_retrains_per_day": 99}
    return LoopSpec(**(values | changes))


def served(**changes) -> LoopFacts:
    """A task with champion v3, trained a day ago, and enough rows, quiet otherwise."""
    values = {
        "champion": 3,
        "champion_trained_at": NOW - timedelta(days=1),
        "labelled_rows": 1_000,
        "new_rows": 10,
    }
    return LoopFacts(**(values | changes))


# -- first ---------------------------------------------------------------------------------


def test_a_task_with_enough_rows_and_no_champion_gets_its_first_specialist() -> None:
    decision = decide(spec(), LoopFacts(labelled_rows=100), NOW)
    assert decision.action == "train"
    assert decision.trigger == "first"
    assert decision.reason == "first: no champion yet, 100 labelled rows (loop.min_rows=100)"


def test_too_few_rows_for_a_first_specialist_says_how_many_and_how_many_are_needed() -> None:
    decision = decide(spec(), LoopFacts(labelled_rows=99), NOW)
    assert decision.action == "skip"
    assert decision.trigger is None
    assert decision.reason == "only 99 labelled rows, 100 needed (loop.min_rows)"
    assert decision.numbers == {"labelled_rows": 99, "min_rows": 100}


def test_without_the_first_trigger_a_task_without_champion_is_left_alone() -> None:
    decision = decide(spec(triggers=("drift",)), LoopFacts(labelled_rows=5_000), NOW)
    assert decision.action == "skip"
    assert "leaves out first" in decision.reason


def test_a_disabled_loop_never_trains() -> None:
    decision = decide(spec(enabled=False), LoopFacts(labelled_rows=5_000), NOW)
    assert (decision.action, decision.reason) == ("skip", "loop.enabled is false")


# -- triggers on a served task -------------------------------------------------------------


def test_a_quiet_served_task_is_not_retrained_and_the_reason_gives_the_numbers() -> None:
    decision = decide(spec(), served(), NOW)
    assert decision.action == "skip"
    assert decision.reason == (
        "no trigger fired: no drift/agreement/accuracy alarm; 10 of 500 new labelled rows"
    )
    assert decision.numbers["new_rows"] == 10


@pytest.mark.parametrize(
    ("alarm", "trigger"),
    [
        ("input_drift", "drift"),
        ("input_drift_projection", "drift"),
        ("prediction_drift", "drift"),
        ("confidence_drift", "drift"),
        ("cascade_rate", "drift"),
        ("agreement", "agreement"),
        ("accuracy", "accuracy"),
        ("estimated_accuracy", "accuracy"),
    ],
)
def test_an_alarming_signal_pulls_its_trigger(alarm: str, trigger: str) -> None:
    decision = decide(spec(), served(alarms=(alarm,)), NOW)
    assert (decision.action, decision.trigger) == ("train", trigger)
    assert decision.reason == f"{trigger}: {alarm} alarmed on v3"


@pytest.mark.parametrize("alarm", ["latency_p95", "error_rate", "cost_per_1k", "input_driftless"])
def test_alarms_a_retrain_cannot_fix_pull_no_trigger(alarm: str) -> None:
    assert signal_trigger(alarm) is None
    assert decide(spec(), served(alarms=(alarm,)), NOW).action == "skip"


def test_an_alarm_whose_trigger_is_off_is_said_but_does_not_retrain() -> None:
    decision = decide(spec(triggers=("first", "new_rows")), served(alarms=("input_drift",)), NOW)
    assert decision.action == "skip"
    assert decision.reason == (
        "no trigger fired: input_drift alarmed, but loop.triggers leaves out drift; "
        "10 of 500 new labelled rows"
    )


def test_enough_new_rows_since_the_champions_data_retrain() -> None:
    assert decide(spec(), served(new_rows=499), NOW).action == "skip"
    decision = decide(spec(), served(new_rows=500), NOW)
    assert (decision.action, decision.trigger) == ("train", "new_rows")
    assert decision.reason == "new_rows: 500 labelled rows since v3's data (loop.new_rows=500)"


def test_the_schedule_retrains_once_the_champion_is_old_enough() -> None:
    policy = spec(triggers=("schedule",), schedule_s=86_400 + 60)
    early = decide(policy, served(), NOW)
    assert early.action == "skip"
    assert early.reason == "no trigger fired: next scheduled retrain in 60 s"
    decision = decide(policy, served(), NOW + timedelta(seconds=60))
    assert (decision.action, decision.trigger) == ("train", "schedule")
    # Without schedule_s, the trigger never fires.
    assert decide(spec(triggers=("schedule",)), served(), NOW + timedelta(days=99)).action == (
        "skip"
    )


def test_several_triggers_fire_and_the_first_in_trigger_order_is_named() -> None:
    facts = served(alarms=("agreement", "input_drift"), new_rows=10_000)
    decision = decide(spec(), facts, NOW)
    assert decision.trigger == "drift"
    assert decision.fired == ("drift", "agreement", "new_rows")


# -- guards --------------------------------------------------------------------------------


def test_a_trigger_with_too_few_rows_does_nothing_and_names_the_trigger() -> None:
    decision = decide(spec(), served(alarms=("input_drift",), labelled_rows=40), NOW)
    assert (decision.action, decision.trigger) == ("skip", "drift")
    assert decision.reason == "only 40 labelled rows, 100 needed (loop.min_rows)"


def test_the_cooldown_counts_from_the_last_retrain_the_loop_started() -> None:
    policy = spec(cooldown_s=3600)
    facts = served(alarms=("input_drift",), trainings=(NOW - timedelta(seconds=1200),))
    decision = decide(policy, facts, NOW)
    assert (decision.action, decision.trigger) == ("skip", "drift")
    assert decision.reason == (
        "cooling down: trained 1200 s ago, loop.cooldown_s=3600 (2400 s left)"
    )
    assert decision.numbers["seconds_since_training"] == 1200
    assert decide(policy, facts, NOW + timedelta(seconds=2400)).action == "train"


def test_the_cooldown_also_counts_from_a_model_anyone_registered() -> None:
    facts = served(alarms=("input_drift",), last_model_at=NOW - timedelta(seconds=10))
    assert decide(spec(cooldown_s=60), facts, NOW).action == "skip"
    assert decide(spec(cooldown_s=60), facts, NOW + timedelta(seconds=50)).action == "train"


def test_the_daily_cap_counts_retrains_started_in_the_last_24_hours() -> None:
    trainings = (
        NOW - timedelta(hours=25),  # older than a day: not counted
        NOW - timedelta(hours=20),
        NOW - timedelta(hours=2),
    )
    facts = served(alarms=("input_drift",), trainings=trainings)
    decision = decide(spec(max_retrains_per_day=2), facts, NOW)
    assert decision.action == "skip"
    assert decision.reason == "2 retrains started in the last 24 h, loop.max_retrains_per_day=2"
    assert decide(spec(max_retrains_per_day=3), facts, NOW).action == "train"
    # Four hours later the one from 20 h ago has aged out of the window.
    assert decide(spec(max_retrains_per_day=2), facts, NOW + timedelta(hours=4)).action == "train"


def test_a_cap_of_zero_never_retrains() -> None:
    decision = decide(spec(max_retrains_per_day=0), LoopFacts(labelled_rows=5_000), NOW)
    assert decision.action == "skip"
    assert "loop.max_retrains_per_day=0" in decision.reason


def test_the_default_policy_gives_a_task_with_a_few_hundred_rows_its_first_specialist() -> None:
    # The promise: defaults that let a task with a few hundred teacher-labelled rows
    # get its first specialist (and nothing sooner than the default minimum).
    assert decide(LoopSpec(), LoopFacts(labelled_rows=300), NOW).action == "train"
    assert decide(LoopSpec(), LoopFacts(labelled_rows=150), NOW).action == "skip"


# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("600", 600.0), (600, 600.0), (0.5, 0.5), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0)],
)
def test_intervals_parse_to_seconds(text, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "0", "-5m", True, float("nan")])
def test_a_bad_interval_is_refused(text) -> None:
    with pytest.raises(ValidationError, match="interval"):
        parse_interval(text)
