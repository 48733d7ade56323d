"""Curate → train → promote → a weaker model refused, through the library, with the real
encoder on a small slice of BANKING77 and a real registry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from niche.errors import ConflictError, GateRefusedError
from niche.progress import Advance
from niche.registry import Registry
from niche.settings import Settings
from niche.workflows import (
    DataSpec,
    curate_data,
    evaluate_registered,
    promote,
    train_and_register,
)

LABELS = ("card_arrival", "exchange_rate", "pin_blocked", "top_up_failed")


@pytest.mark.slow
def test_a_weaker_model_is_refused_with_exit_4_and_the_champion_stays(
    four_intents, encoder, monkeypatch
):
    monkeypatch.setenv("NICHE_BOOTSTRAP_RESAMPLES", "200")
    settings = Settings()
    registry = Registry(settings=settings)
    curated = curate_data(DataSpec(data=four_intents), settings, seed=0, registry=registry)
    assert [d.fingerprint for d in registry.datasets.all()] == [curated.version.fingerprint]

    prefix = curated.version.fingerprint[:10]
    first = train_and_register(prefix, settings, task="intents", encoder=encoder, registry=registry)
    again = train_and_register(prefix, settings, task="intents", encoder=encoder, registry=registry)
    assert (first.version, again.version) == (1, 1)  # the same bytes: one version

    promoted = promote("intents", 1, settings, encoder=encoder, registry=registry, actor="test")
    assert (promoted.moved, promoted.refused) == (True, False)
    promoted.raise_for_refusal()  # a passed gate raises nothing

    weaker = train_and_register(
        prefix, settings, task="intents", encoder=encoder, registry=registry, fraction=0.05
    )
    refused = promote("intents", weaker.version, settings, encoder=encoder, registry=registry)
    assert (refused.moved, refused.refused, refused.previous.version) == (False, True, 1)
    with pytest.raises(GateRefusedError) as caught:
        refused.raise_for_refusal()
    error = caught.value
    assert (error.exit_code, error.http_status) == (4, 409)
    assert (error.task, error.version, error.alias) == ("intents", 2, "champion")
    assert "non_inferior_to_champion" in error.checks
    assert error.checks == tuple(check.name for check in refused.decision.failed)
    assert registry.promotions.aliases("intents") == {"champion": 1}
    assert [(g.version, g.passed) for g in registry.promotions.gates("intents")] == [
        (1, True),
        (2, False),
    ]
    # Each promotion recorded its evaluation of the candidate; this one adds a third.
    report = evaluate_registered(
        "intents", "champion", settings, encoder=encoder, registry=registry
    )
    assert report.rows == curated.version.report.to_dict()["rows_out"]["test"]
    assert len(registry.models.evaluations("intents", 1)) == 2

    # Someone else moves the alias while the gate is being decided: ConflictError, and the
    # decision is not stored either (one transaction), so the gate can be decided again.
    third = train_and_register(
        prefix, settings, task="intents", encoder=encoder, registry=registry, fraction=0.1
    )
    assert third.version == 3
    registry.promotions.move("intents", "challenger", 2, actor="ana", reason="canary")
    decided = len(registry.promotions.gates("intents"))
    meanwhile = MovesTheAlias(registry, "intents", "challenger", to=3)
    with pytest.raises(ConflictError) as conflict:
        promote(
            "intents",
            1,
            settings,
            alias="challenger",
            encoder=encoder,
            registry=registry,
            evaluation=report,
            progress=meanwhile,
        )
    assert meanwhile.moved and conflict.value.exit_code == 3
    assert (conflict.value.expected, conflict.value.actual) == (2, 3)
    assert registry.promotions.aliases("intents") == {"champion": 1, "challenger": 3}
    assert len(registry.promotions.gates("intents")) == decided
    last = registry.audit.events("intents")[-1]  # eve's move; no gate.decided after it
    assert (last.action, last.actor, last.detail["to_version"]) == ("alias.moved", "eve", 3)


class MovesTheAlias:
    """A Progress that, when the gate for ``alias`` starts being decided, moves the alias to
    version ``to`` as another user would (an injected event, no sleeps)."""

    def __init__(self, registry: Registry, task: str, alias: str, *, to: int) -> None:
        self.registry, self.task_name, self.alias, self.to = registry, task, alias, to
        self.moved = False

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        if description.startswith(f"deciding the {self.alias} gate") and not self.moved:
            self.registry.promotions.move(self.task_name, self.alias, self.to, actor="eve")
            self.moved = True
        yield lambda _: None


@pytest.mark.slow
def test_promoting_to_challenger_is_gated_without_no_champion_yet_while_one_serves(
    four_intents, encoder, monkeypatch
):
    monkeypatch.setenv("NICHE_BOOTSTRAP_RESAMPLES", "200")
    settings = Settings()
    registry = Registry(settings=settings)
    curated = curate_data(DataSpec(data=four_intents), settings, seed=0, registry=registry)
    prefix = curated.version.fingerprint[:10]
    first = train_and_register(prefix, settings, task="intents", encoder=encoder, registry=registry)
    champion = promote("intents", first.version, settings, encoder=encoder, registry=registry)
    assert champion.moved

    canary = promote(
        "intents",
        first.version,
        settings,
        alias="challenger",
        encoder=encoder,
        registry=registry,
        evaluation=champion.evaluation,
    )
    # Held out and not worse than the general model; no "no champion yet" while v1 serves.
    assert [c.name for c in canary.decision.checks] == ["held_out", "quality_vs_general"]
    assert canary.moved and canary.previous is None
    assert registry.promotions.aliases("intents") == {"champion": 1, "challenger": 1}
    gate = registry.promotions.gates("intents")[-1]
    assert (gate.alias, gate.passed) == ("challenger", True)
    assert gate.spec_fingerprint == canary.decision.spec_fingerprint is not None
