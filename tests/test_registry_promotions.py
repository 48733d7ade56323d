"""The one promotion rule (gate decision + alias move + audit, one transaction), both backends."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from niche.errors import ConflictError, GateRefusedError, NicheError, ValidationError
from niche.registry import PromotionRecord, Registry
from niche.registry.gates import GateCheck, GateResult
from niche.registry.stores import GUARDED_ALIASES
from niche.registry.tasks import TaskSpec

TASK = "tickets"
PASSED = GateResult(
    passed=True,
    checks=[
        GateCheck("held_out", True, 0.0, 0.0, "none seen in training"),
        GateCheck("quality_vs_general", True, 0.05, 0.0, "better than the general model"),
    ],
)
FAILED = GateResult(
    passed=False,
    checks=[
        GateCheck("held_out", True, 0.0, 0.0, "none seen in training"),
        GateCheck("non_inferior_to_champion", False, -0.08, -0.01, "worse than the champion"),
    ],
)


def _actions(registry: Registry) -> list[str]:
    setup = ("task.created", "model.registered")
    return [e.action for e in registry.audit.events(TASK) if e.action not in setup]


def test_the_champion_and_the_challenger_are_the_guarded_aliases() -> None:
    # The challenger takes canary traffic, so it is gated too (issue 9); others are free.
    assert frozenset({"champion", "challenger"}) == GUARDED_ALIASES


def test_a_passed_decision_is_stored_and_moves_the_alias(tickets: Registry) -> None:
    outcome = tickets.promotions.promote(TASK, "champion", 1, decision=PASSED, actor="ana")
    assert isinstance(outcome, PromotionRecord)
    assert (outcome.version, outcome.previous_version) == (1, None)
    assert (outcome.moved, outcome.already, outcome.forced, outcome.passed) == (
        True,
        False,
        False,
        True,
    )
    assert outcome.gate is not None and outcome.gate.checks == [c.to_dict() for c in PASSED.checks]
    assert outcome.event is not None
    assert (outcome.event.from_version, outcome.event.to_version, outcome.event.reason) == (
        None,
        1,
        "gate passed (2 checks)",
    )
    assert tickets.promotions.aliases(TASK) == {"champion": 1}
    assert tickets.promotions.gates(TASK) == [outcome.gate]
    assert tickets.promotions.history(TASK) == [outcome.event]
    assert _actions(tickets) == ["gate.decided", "alias.moved"]
    gate_event, alias_event = tickets.audit.events(TASK)[-2:]
    assert gate_event.at == alias_event.at == outcome.gate.at == outcome.event.at
    assert {gate_event.actor, alias_event.actor} == {"ana"}

    second = tickets.promotions.promote(
        TASK, "champion", 2, decision=PASSED, why="retrained on March data", expected_current=1
    )
    assert second.moved and second.previous_version == 1
    assert second.event is not None and second.event.reason == "retrained on March data"
    payload = orjson.loads(orjson.dumps(second.to_dict()))
    assert payload["moved"] is True and payload["passed"] is True
    assert payload["gate"]["version"] == 2 and payload["event"]["from_version"] == 1


def test_a_refused_decision_is_stored_and_moves_nothing(tickets: Registry) -> None:
    tickets.promotions.promote(TASK, "champion", 1, decision=PASSED)
    refused = tickets.promotions.promote(TASK, "champion", 2, decision=FAILED, actor="bo")
    assert (refused.moved, refused.forced, refused.passed, refused.event) == (
        False,
        False,
        False,
        None,
    )
    assert refused.previous_version == 1
    assert refused.gate is not None and not refused.gate.passed and not refused.gate.forced
    assert [(g.version, g.passed) for g in tickets.promotions.gates(TASK)] == [
        (1, True),
        (2, False),
    ]
    assert tickets.promotions.aliases(TASK) == {"champion": 1}
    assert len(tickets.promotions.history(TASK)) == 1
    assert _actions(tickets) == ["gate.decided", "alias.moved", "gate.decided"]
    assert tickets.audit.events(TASK)[-1].detail["failed"] == ["non_inferior_to_champion"]


def test_a_forced_promotion_without_a_reason_is_refused_and_stores_nothing(
    tickets: Registry,
) -> None:
    for why in (None, "", "   "):
        with pytest.raises(ValidationError, match="reason") as caught:
            tickets.promotions.promote(TASK, "champion", 2, decision=FAILED, force=True, why=why)
        assert caught.value.param == "why" and caught.value.exit_code == 2
        with pytest.raises(ValidationError, match="reason"):
            tickets.promotions.promote(TASK, "champion", 2, force=True, why=why)
    assert tickets.promotions.gates(TASK) == [] and tickets.promotions.aliases(TASK) == {}
    assert _actions(tickets) == []


def test_a_forced_promotion_with_a_reason_moves_and_says_so(tickets: Registry) -> None:
    tickets.promotions.promote(TASK, "champion", 1, decision=PASSED)
    forced = tickets.promotions.promote(
        TASK, "champion", 2, decision=FAILED, force=True, why="hotfix for an outage"
    )
    assert (forced.moved, forced.forced, forced.passed) == (True, True, False)
    assert (
        forced.gate is not None and forced.gate.forced and forced.gate.why == "hotfix for an outage"
    )
    assert forced.event is not None and forced.event.reason == "forced: hotfix for an outage"
    assert tickets.promotions.aliases(TASK) == {"champion": 2}
    assert tickets.audit.events(TASK)[-2].detail["forced"] is True
    # Forcing a decision that passed anyway is an ordinary promotion.
    plain = tickets.promotions.promote(TASK, "champion", 3, decision=PASSED, force=True, why="x")
    assert plain.moved and not plain.forced and plain.gate is not None and not plain.gate.forced


def test_a_version_already_holding_the_alias_moves_nothing(tickets: Registry) -> None:
    tickets.promotions.promote(TASK, "champion", 1, decision=PASSED)
    again = tickets.promotions.promote(TASK, "champion", 1, decision=PASSED)
    assert (again.moved, again.already, again.previous_version, again.event) == (
        False,
        True,
        1,
        None,
    )
    assert again.gate is not None  # the fresh decision is kept all the same
    by_hand = tickets.promotions.promote(TASK, "champion", 1)
    assert (by_hand.moved, by_hand.already, by_hand.gate) == (False, True, None)
    assert len(tickets.promotions.history(TASK)) == 1
    assert _actions(tickets) == ["gate.decided", "alias.moved", "gate.decided"]


def test_by_hand_the_champion_needs_a_passed_gate_for_that_version(tickets: Registry) -> None:
    with pytest.raises(GateRefusedError) as caught:
        tickets.promotions.promote(TASK, "champion", 2, why="rollforward")
    error = caught.value
    assert str(error) == (
        "task tickets v2 has no passed gate for champion; run `niche promote` (which gates "
        "it), or send force: true with a reason"
    )
    assert (error.task, error.version, error.alias) == (TASK, 2, "champion")
    assert isinstance(error, NicheError) and error.exit_code == 4 and error.http_status == 409
    assert tickets.promotions.aliases(TASK) == {} and _actions(tickets) == []

    # A passed gate for another version, or another alias, does not count.
    tickets.promotions.record_gate(TASK, 1, alias="champion", passed=True, checks=[], actor="a")
    tickets.promotions.record_gate(TASK, 2, alias="challenger", passed=True, checks=[], actor="a")
    tickets.promotions.record_gate(TASK, 2, alias="champion", passed=False, checks=[], actor="a")
    with pytest.raises(GateRefusedError):
        tickets.promotions.promote(TASK, "champion", 2, why="rollforward")

    tickets.promotions.record_gate(TASK, 2, alias="champion", passed=True, checks=[], actor="a")
    gated = tickets.promotions.promote(TASK, "champion", 2, why="rollforward", actor="api:nk-1")
    assert (gated.moved, gated.forced, gated.gate) == (True, False, None)
    assert gated.event is not None and gated.event.reason == "rollforward"
    assert gated.event.actor == "api:nk-1"
    assert len(tickets.promotions.gates(TASK)) == 4  # no gate row of its own


def test_by_hand_a_forced_move_stores_a_forced_gate(tickets: Registry) -> None:
    forced = tickets.promotions.promote(
        TASK, "champion", 3, force=True, why="hotfix", expected_current=None
    )
    assert (forced.moved, forced.forced, forced.passed) == (True, True, False)
    assert forced.gate is not None
    assert (forced.gate.forced, forced.gate.why, forced.gate.checks) == (True, "hotfix", [])
    assert forced.event is not None and forced.event.reason == "forced: hotfix"
    assert tickets.promotions.gates(TASK) == [forced.gate]
    assert _actions(tickets) == ["gate.decided", "alias.moved"]


def test_by_hand_other_aliases_need_no_gate(tickets: Registry) -> None:
    moved = tickets.promotions.promote(TASK, "staging", 3, why="canary")
    assert (moved.moved, moved.forced, moved.gate) == (True, False, None)
    assert tickets.promotions.aliases(TASK) == {"staging": 3}
    assert _actions(tickets) == ["alias.moved"]


def test_a_stale_expectation_stores_neither_the_decision_nor_the_move(
    tickets: Registry,
) -> None:
    tickets.promotions.promote(TASK, "champion", 1, decision=PASSED)
    gates, trail = tickets.promotions.gates(TASK), tickets.audit.events()
    with pytest.raises(ConflictError, match="is v1, not unset"):
        tickets.promotions.promote(TASK, "champion", 2, decision=PASSED, expected_current=None)
    with pytest.raises(ConflictError, match="is unset, not v3"):
        tickets.promotions.promote(TASK, "challenger", 3, expected_current=3)
    assert tickets.promotions.gates(TASK) == gates and tickets.audit.events() == trail
    assert tickets.promotions.aliases(TASK) == {"champion": 1}


def test_served_reads_every_tasks_aliases_in_one_query(tickets: Registry) -> None:
    tickets.tasks.create(TaskSpec(name="alerts"))
    tickets.models.register(
        "alerts",
        kind="text",
        artifact_digest="a" * 64,
        artifact_uri="file:///artifacts/a",
        dataset_fingerprint="f" * 64,
        lineage={},
    )
    tickets.tasks.create(TaskSpec(name="unserved"))
    tickets.promotions.move(TASK, "champion", 2, actor="ana")
    tickets.promotions.move(TASK, "challenger", 3, actor="ana")
    tickets.promotions.move("alerts", "champion", 1, actor="ana")

    statements: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    engine = tickets.database.engine()
    sa.event.listen(engine, "before_cursor_execute", on_execute)
    try:
        served = tickets.promotions.served()
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)
    assert len(statements) == 1
    assert {
        task: {a: m.version for a, m in aliases.items()} for task, aliases in served.items()
    } == {
        "alerts": {"champion": 1},
        TASK: {"challenger": 3, "champion": 2},
    }
    assert served[TASK]["champion"] == tickets.models.get(TASK, 2)
