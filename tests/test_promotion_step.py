"""Promotion as one audited step (issue 9), on real SQLite and real PostgreSQL.

The gate decision and the alias move are one transaction (a database trigger that refuses the
alias write leaves neither half); a gate counts for moving an alias by hand only while the
task's spec is the one it was decided under; ``challenger`` is gated too; two promotions of
one alias at once: one wins, the other gets ConflictError. The gateway's admin route is driven
in-process over HTTP with real specialists.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from niche.errors import ConflictError, GateRefusedError
from niche.evaluation import Evaluation
from niche.registry import PromotionRecord, Registry
from niche.registry.gates import GateCheck, GateResult, decide
from niche.registry.tasks import SLA, TaskSpec, gate_fingerprint
from niche.specialists import Predictions

TASK = "tickets"
CHECKS = [
    GateCheck("held_out", True, 0.0, 0.0, "none seen in training"),
    GateCheck("quality_vs_general", True, 0.05, 0.0, "better than the general model"),
]
PASSED = GateResult(passed=True, checks=CHECKS)


def _current(registry: Registry) -> str:
    return gate_fingerprint(registry.tasks.get(TASK).spec)


def _changes(registry: Registry) -> list[str]:
    return [
        e.action for e in registry.audit.events(TASK) if e.action in ("gate.decided", "alias.moved")
    ]


def _refuse_alias_writes(registry: Registry) -> None:
    """A real trigger that fails every write to the aliases table, as a crash there would."""
    engine = registry.database.engine()
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            for op in ("INSERT", "UPDATE"):
                connection.exec_driver_sql(
                    f"CREATE TRIGGER refuse_alias_{op.lower()} BEFORE {op} ON aliases "
                    "BEGIN SELECT RAISE(ABORT, 'alias writes refused'); END"
                )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse_alias_write() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'alias writes refused'; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_alias_write BEFORE INSERT OR UPDATE ON aliases "
                "FOR EACH ROW EXECUTE FUNCTION refuse_alias_write()"
            )


# -- one transaction -------------------------------------------------------------------------


def test_a_failure_between_storing_the_gate_and_moving_the_alias_leaves_neither_half(
    tickets: Registry,
) -> None:
    tickets.promotions.promote(TASK, "champion", 1, decision=PASSED)
    before = (tickets.promotions.gates(TASK), tickets.promotions.history(TASK))
    trail = tickets.audit.events()
    _refuse_alias_writes(tickets)
    statements: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()[:3]))

    attempts: list[Callable[[], PromotionRecord]] = [
        # A fresh passed decision (the CLI, quickstart) ...
        lambda: tickets.promotions.promote(TASK, "champion", 2, decision=PASSED),
        # ... a forced one (a failed decision, moved anyway) ...
        lambda: tickets.promotions.promote(
            TASK, "champion", 3, decision=GateResult(False, CHECKS), force=True, why="outage"
        ),
        # ... and a forced move by hand (the admin route), which stores a forced gate.
        lambda: tickets.promotions.promote(TASK, "challenger", 2, force=True, why="canary"),
    ]
    engine = tickets.database.engine()
    sa.event.listen(engine, "before_cursor_execute", on_execute)
    try:
        for attempt in attempts:
            statements.clear()
            with pytest.raises(sa.exc.DBAPIError, match="alias writes refused"):
                attempt()
            # The gate half was written first, in the transaction that then failed.
            gate_at = statements.index("INSERT INTO gate_decisions")
            writes = ("INSERT INTO aliases", "UPDATE aliases SET")
            assert any(s in writes for s in statements[gate_at:]), statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)
    assert (tickets.promotions.gates(TASK), tickets.promotions.history(TASK)) == before
    assert tickets.promotions.aliases(TASK) == {"champion": 1}
    assert tickets.audit.events() == trail


# -- the spec a gate was decided under -------------------------------------------------------


def test_each_gate_records_the_spec_it_was_decided_under(tickets: Registry) -> None:
    spec = tickets.tasks.get(TASK).spec
    fresh = GateResult(passed=True, checks=CHECKS, spec_fingerprint=gate_fingerprint(spec))
    outcome = tickets.promotions.promote(TASK, "champion", 1, decision=fresh)
    recorded = tickets.promotions.record_gate(
        TASK, 2, alias="champion", passed=False, checks=[], actor="ana"
    )
    forced = tickets.promotions.promote(TASK, "challenger", 3, force=True, why="try it")
    assert outcome.gate is not None and forced.gate is not None
    fingerprints = [g.spec_fingerprint for g in tickets.promotions.gates(TASK)]
    assert fingerprints == [gate_fingerprint(spec)] * 3
    assert [outcome.gate.spec_fingerprint, recorded.spec_fingerprint] == fingerprints[:2]
    assert tickets.promotions.gates(TASK)[0].to_dict()["spec_fingerprint"] == fingerprints[0]
    # What a gate depends on changes the fingerprint; serving knobs do not.
    assert gate_fingerprint(spec.with_changes(cascade_threshold=0.9)) == fingerprints[0]
    for change in (
        {"sla": {"min_quality": 0.9}},
        {"general": {"max_tokens": 16}},
        {"labels": ["billing", "outage", "other"]},
    ):
        assert gate_fingerprint(spec.with_changes(**change)) != fingerprints[0], change


def test_by_hand_a_gate_passed_under_an_older_spec_no_longer_counts(tickets: Registry) -> None:
    tickets.promotions.promote(TASK, "champion", 1, decision=PASSED)
    tickets.promotions.record_gate(TASK, 2, alias="champion", passed=True, checks=[], actor="ana")
    tickets.tasks.update(TASK, sla={"min_quality": 0.9})
    gates, trail = tickets.promotions.gates(TASK), tickets.audit.events()
    with pytest.raises(GateRefusedError) as caught:
        tickets.promotions.promote(TASK, "champion", 2, why="rollforward")
    assert str(caught.value) == (
        "task tickets changed since v2 passed its gate for champion (its SLA, labels, "
        "general model or metric were edited): that gate no longer counts; gate it again under the "
        "current spec with `niche promote tickets 2 --alias champion`, or send force: true "
        "with a reason"
    )
    assert (caught.value.exit_code, caught.value.http_status) == (4, 409)
    assert tickets.promotions.gates(TASK) == gates and tickets.audit.events() == trail
    assert tickets.promotions.aliases(TASK) == {"champion": 1}

    # Gated again under the current spec, it moves; an edit of a serving knob keeps the gate.
    tickets.promotions.record_gate(TASK, 2, alias="champion", passed=True, checks=[], actor="ana")
    tickets.tasks.update(TASK, cascade_threshold=0.9)
    moved = tickets.promotions.promote(TASK, "champion", 2, why="rollforward")
    assert (moved.moved, moved.forced, moved.gate) == (True, False, None)

    # Editing the general model also retires the gate: a forced move then stores a forced
    # decision under the current spec, with its reason and actor.
    tickets.promotions.record_gate(TASK, 1, alias="champion", passed=True, checks=[], actor="ana")
    tickets.tasks.update(TASK, general={"max_tokens": 16})
    with pytest.raises(GateRefusedError, match="changed since v1 passed"):
        tickets.promotions.promote(TASK, "champion", 1, why="rollback")
    forced = tickets.promotions.promote(
        TASK, "champion", 1, force=True, why="rollback: v2 mislabels refunds", actor="api:nk-1"
    )
    assert forced.moved and forced.forced and forced.gate is not None
    assert (forced.gate.forced, forced.gate.why, forced.gate.actor) == (
        True,
        "rollback: v2 mislabels refunds",
        "api:nk-1",
    )
    assert forced.gate.spec_fingerprint == _current(tickets)


def test_a_decision_made_under_an_older_spec_is_refused_and_stores_nothing(
    tickets: Registry,
) -> None:
    old = tickets.tasks.get(TASK).spec
    tickets.tasks.update(TASK, sla={"latency_p95_ms": 20})  # edited while the gate ran
    stale = GateResult(passed=True, checks=CHECKS, spec_fingerprint=gate_fingerprint(old))
    trail = tickets.audit.events()
    with pytest.raises(ConflictError) as caught:
        tickets.promotions.promote(TASK, "champion", 1, decision=stale, expected_current=None)
    assert str(caught.value) == (
        "task tickets changed while v1 was being gated for champion (its SLA, labels, "
        "general model or metric were edited): nothing was stored; gate it again with "
        "`niche promote tickets 1 --alias champion`"
    )
    assert caught.value.exit_code == 3
    assert tickets.promotions.gates(TASK) == [] and tickets.promotions.aliases(TASK) == {}
    assert tickets.audit.events() == trail

    fresh = GateResult(passed=True, checks=CHECKS, spec_fingerprint=_current(tickets))
    outcome = tickets.promotions.promote(TASK, "champion", 1, decision=fresh)
    assert outcome.moved and outcome.gate is not None
    assert outcome.gate.spec_fingerprint == _current(tickets)


# -- the challenger is gated too -------------------------------------------------------------


def test_by_hand_the_challenger_needs_a_passed_gate_and_a_staging_alias_none(
    tickets: Registry,
) -> None:
    with pytest.raises(GateRefusedError) as caught:
        tickets.promotions.promote(TASK, "challenger", 2, why="canary")
    assert str(caught.value).startswith("task tickets v2 has no passed gate for challenger")
    assert (caught.value.alias, caught.value.exit_code) == ("challenger", 4)
    assert tickets.promotions.aliases(TASK) == {} and _changes(tickets) == []

    # A failed gate does not count; a passed challenger gate does, and so does a passed
    # champion gate (the champion's rule is the stricter).
    tickets.promotions.record_gate(TASK, 2, alias="challenger", passed=False, checks=[], actor="a")
    with pytest.raises(GateRefusedError):
        tickets.promotions.promote(TASK, "challenger", 2, why="canary")
    tickets.promotions.record_gate(TASK, 2, alias="challenger", passed=True, checks=[], actor="a")
    assert tickets.promotions.promote(TASK, "challenger", 2, why="canary").moved
    tickets.promotions.record_gate(TASK, 3, alias="champion", passed=True, checks=[], actor="a")
    assert tickets.promotions.promote(TASK, "challenger", 3, why="canary v3").moved
    # A challenger gate does not make a champion.
    with pytest.raises(GateRefusedError, match="no passed gate for champion"):
        tickets.promotions.promote(TASK, "champion", 2, why="promote the canary")

    forced = tickets.promotions.promote(TASK, "challenger", 1, force=True, why="compare v1")
    assert forced.forced and forced.gate is not None
    assert (forced.gate.alias, forced.gate.forced, forced.gate.why) == (
        "challenger",
        True,
        "compare v1",
    )

    staging = tickets.promotions.promote(TASK, "staging", 1, why="for the QA team")
    assert (staging.moved, staging.forced, staging.gate) == (True, False, None)
    assert tickets.promotions.aliases(TASK) == {"challenger": 1, "staging": 1}


def _evaluation(n_correct: int, n: int = 400, *, kind: str = "text") -> Evaluation:
    correct = np.array([True] * n_correct + [False] * (n - n_correct))
    accuracy = n_correct / n
    return Evaluation(
        kind=kind,
        n=n,
        accuracy=accuracy,
        accuracy_ci=(accuracy - 0.02, accuracy + 0.02),
        macro_f1=accuracy,
        macro_f1_ci=(accuracy - 0.02, accuracy + 0.02),
        per_class={},
        ece=0.01,
        latency_p50_ms=50.0,
        latency_p95_ms=100.0,
        items_per_s=1000.0,
        cpu_s_per_1m=1000.0,
        cost_per_1m_usd=0.05,
        wh_per_query=1e-5,
        predictions=Predictions(labels=["x"] * n, confidences=np.ones(n)),
        correct=correct,
    )


def test_the_challenger_gate_is_the_champions_without_the_comparison_with_the_champion() -> None:
    spec = TaskSpec(name=TASK, sla=SLA(min_quality=0.8, min_quality_vs_general=0.0))
    candidate, general, champion = _evaluation(330), _evaluation(300), _evaluation(380)
    strict = decide(spec, candidate, general, champion=champion)
    assert [c.name for c in strict.failed] == ["non_inferior_to_champion"]
    # The challenger is compared with the champion on canary traffic, not by its gate: no
    # such check, and no "no champion yet" while one exists.
    light = decide(spec, candidate, general, champion=champion, alias="challenger")
    assert light.passed
    assert [c.name for c in light.checks] == ["held_out", "sla.min_quality", "quality_vs_general"]
    assert "no champion yet" not in {c.detail for c in light.checks}
    assert light.spec_fingerprint == strict.spec_fingerprint == gate_fingerprint(spec)
    # Held out, the SLA and not worse than the general model all still count.
    worse = decide(spec, _evaluation(250), general, alias="challenger")
    assert [c.name for c in worse.failed] == ["sla.min_quality", "quality_vs_general"]
    seen = decide(spec, candidate, general, overlap=3, alias="challenger")
    assert [c.name for c in seen.failed] == ["held_out"]


# -- two promotions of one alias at once -----------------------------------------------------


def test_two_promotions_of_one_alias_at_once_one_wins_the_other_conflicts(
    tickets: Registry, database_url: str
) -> None:
    """Each promoter reads the alias unset and gates its version; the first holds its
    transaction open (its gate stored, not committed) until the second has started."""
    first_holding, second_started = threading.Event(), threading.Event()
    outcomes: dict[int, PromotionRecord | ConflictError] = {}

    def promoter(version: int, registry: Registry) -> None:
        if version == 3:
            second_started.set()
        try:
            outcomes[version] = registry.promotions.promote(
                TASK, "challenger", version, decision=PASSED, expected_current=None
            )
        except ConflictError as exc:
            outcomes[version] = exc

    def hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith("INSERT INTO gate_decisions"):
            first_holding.set()
            assert second_started.wait(10)

    with Registry(database_url) as first, Registry(database_url) as second:
        sa.event.listen(first.database.engine(), "after_cursor_execute", hold)
        threads = [
            threading.Thread(target=promoter, args=(2, first)),
            threading.Thread(target=promoter, args=(3, second)),
        ]
        threads[0].start()
        assert first_holding.wait(10)
        threads[1].start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    won, lost = outcomes[2], outcomes[3]
    assert isinstance(won, PromotionRecord) and won.moved
    assert isinstance(lost, ConflictError) and lost.exit_code == 3
    assert (lost.expected, lost.actual) == (None, 2)
    assert tickets.promotions.aliases(TASK) == {"challenger": 2}
    assert [g.version for g in tickets.promotions.gates(TASK)] == [2]  # the loser stored none
    assert [(e.from_version, e.to_version) for e in tickets.promotions.history(TASK)] == [(None, 2)]


# -- the admin route -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_admin_route_moves_guarded_aliases_only_on_a_current_passed_gate(
    niche_home: Path, encoder_cache_dir: Path, database_url: str, trained: Any, serving_encoder: Any
) -> None:
    from niche.gateway import Gateway
    from niche.settings import Settings
    from tests.gateway_support import TASK as SMS
    from tests.gateway_support import in_process, register_portfolio

    settings = Settings(
        home=str(niche_home), cache_dir=str(encoder_cache_dir), database_url=database_url
    )
    register_portfolio(settings, trained)  # v1 champion, v2 registered
    registry = Registry(settings=settings)
    async with in_process(Gateway(settings, encoder=serving_encoder)) as http:

        async def put(alias: str, **body: Any) -> Any:
            return await http.put(f"/v1/admin/tasks/{SMS}/aliases/{alias}", json=body)

        # The challenger takes canary traffic: no gate, no move.
        refused = await put("challenger", version=2, reason="canary")
        error = refused.json()["error"]
        assert (refused.status_code, error["code"]) == (409, "gate_required")
        assert error["message"].startswith(f"task {SMS} v2 has no passed gate for challenger")

        # A gate passed under the current spec lets it move; one passed under an older SLA
        # does not: the message says the task changed and how to gate it again.
        registry.promotions.record_gate(SMS, 2, alias="champion", passed=True, checks=[])
        canary = await put("challenger", version=2, reason="canary")
        assert canary.status_code == 200 and canary.json()["moved"] is True
        registry.tasks.update(SMS, sla={"min_quality": 0.99})
        stale = await put("champion", version=2, reason="rollforward", expected_current=1)
        error = stale.json()["error"]
        assert (stale.status_code, error["code"], error["param"]) == (
            409,
            "gate_required",
            "version",
        )
        assert error["message"].startswith(f"task {SMS} changed since v2 passed its gate")
        assert f"`niche promote {SMS} 2 --alias champion`" in error["message"]

        # Forced, it moves and stores a forced decision with its reason and the caller.
        forced = await put("champion", version=2, reason="hotfix 7", force=True)
        assert forced.status_code == 200
        assert (forced.json()["forced"], forced.json()["reason"]) == (True, "forced: hotfix 7")
        staging = await put("staging", version=1, reason="for QA")
        assert staging.status_code == 200 and staging.json()["forced"] is False
    gates = registry.promotions.gates(SMS)
    assert [(g.version, g.alias, g.passed, g.forced, g.why, g.actor) for g in gates[1:]] == [
        (2, "champion", False, True, "hotfix 7", "api:local"),
    ]
    assert gates[-1].spec_fingerprint == gate_fingerprint(registry.tasks.get(SMS).spec)
    assert registry.promotions.aliases(SMS) == {"champion": 2, "challenger": 2, "staging": 1}
    registry.close()


# -- gates stored before the spec was recorded -----------------------------------------------


def test_a_gate_stored_before_migration_0005_is_kept_but_no_longer_counts(
    database_url: str,
) -> None:
    from alembic import command

    from niche.registry import db as registry_db
    from niche.registry.models import Base

    at = datetime(2026, 1, 1, tzinfo=UTC)
    tables = Base.metadata.tables
    engine = registry_db.create_engine_for(database_url)
    try:
        with engine.execution_options(**registry_db.WRITE).begin() as connection:
            command.upgrade(registry_db._alembic_config(connection), "0004")
        with engine.begin() as connection:
            columns = {c["name"] for c in sa.inspect(connection).get_columns("gate_decisions")}
            assert "spec_fingerprint" not in columns
            spec = TaskSpec(name=TASK, labels=["billing", "outage"]).to_dict()
            task_id = connection.execute(
                sa.insert(tables["tasks"]).values(
                    name=TASK, spec=spec, created_at=at, updated_at=at
                )
            ).inserted_primary_key[0]
            model_id = connection.execute(
                sa.insert(tables["model_versions"]).values(
                    task_id=task_id,
                    version=1,
                    kind="text",
                    artifact_digest="0" * 64,
                    artifact_uri="file:///artifacts/0",
                    dataset_fingerprint="f" * 64,
                    lineage={},
                    created_at=at,
                )
            ).inserted_primary_key[0]
            connection.execute(
                sa.insert(tables["gate_decisions"]).values(
                    task_id=task_id,
                    model_version_id=model_id,
                    alias="champion",
                    passed=True,
                    forced=False,
                    why=None,
                    checks=[],
                    actor="cli:ana",
                    at=at,
                )
            )
    finally:
        engine.dispose()
    with Registry(database_url) as registry:
        assert registry.upgrade() == registry_db.head_revision()
        (legacy,) = registry.promotions.gates(TASK)
        assert (legacy.passed, legacy.actor, legacy.spec_fingerprint) == (True, "cli:ana", None)
        with pytest.raises(GateRefusedError, match="before niche recorded the task spec"):
            registry.promotions.promote(TASK, "champion", 1, why="rollback")
        assert registry.promotions.aliases(TASK) == {}
    engine = registry_db.create_engine_for(database_url)
    try:  # and back: the column goes, the decision stays
        with engine.execution_options(**registry_db.WRITE).begin() as connection:
            command.downgrade(registry_db._alembic_config(connection), "0004")
        with engine.connect() as connection:
            columns = {c["name"] for c in sa.inspect(connection).get_columns("gate_decisions")}
            count = connection.scalar(sa.text("SELECT count(*) FROM gate_decisions"))
        assert "spec_fingerprint" not in columns and count == 1
    finally:
        engine.dispose()
