"""The whole loop on one task, on the real registry (SQLite and PostgreSQL) and the real
encoder: a first specialist from teacher-labelled traffic; unshifted traffic served by it
raises no alarm and no retrain; traffic shifted to intents it never saw is flagged by the
monitor, and the loop retrains on it and moves ``champion`` to a version that knows them.

Serving is simulated as the gateway serves (:func:`tests.loop_support.serve`): the champion's
real predictions, cascades under the task's threshold, a random shadow sample, the general
model answering with the true label."""

from __future__ import annotations

from pathlib import Path

import pytest

from niche.workflows import load_specialist
from niche.workflows.loop import loop_once
from tests import loop_support
from tests.conftest import FOUR_INTENTS
from tests.loop_support import TASK

NEW_INTENTS = (
    "cash_withdrawal_charge",
    "lost_or_stolen_card",
    "transfer_timing",
    "visa_or_mastercard",
)
HOLDER = "loop:test:1"


@pytest.mark.slow
def test_the_loop_retrains_on_drifted_traffic_and_moves_champion(
    registry, encoder, datasets_dir: Path, monkeypatch: pytest.MonkeyPatch, encoder_cache_dir
) -> None:
    monkeypatch.setenv("NICHE_CACHE_DIR", str(encoder_cache_dir))
    monkeypatch.setenv("NICHE_BOOTSTRAP_RESAMPLES", "200")
    banking = datasets_dir / "banking77"
    # new_rows out of reach: only the monitor's alarms may start the retrain.
    loop_support.create_task(registry, FOUR_INTENTS + NEW_INTENTS, new_rows=100_000)

    def once():
        [decision] = loop_once([TASK], registry=registry, encoder=encoder, holder=HOLDER)
        return decision

    # 1. No specialist yet: every request went to the general model.
    loop_support.capture(registry, loop_support.read_rows(banking / "train.csv", FOUR_INTENTS, 60))
    first = once()
    assert (first.action, first.trigger) == ("promoted", "first"), first.reason
    v1 = registry.promotions.get(TASK, "champion")
    assert v1 is not None and v1.version == 1
    specialist = load_specialist(v1, encoder=encoder)
    assert set(specialist.label_set) == set(FOUR_INTENTS)

    # 2. The same intents, texts it never saw: served mostly by the specialist, no alarm.
    same = loop_support.read_rows(banking / "test.csv", FOUR_INTENTS, 40)
    routes = loop_support.serve(registry, specialist, 1, same)
    assert routes.get("specialist", 0) > 0.8 * len(same)
    quiet = once()
    assert quiet.action == "skip", quiet.reason
    assert quiet.reason.startswith("no trigger fired: no drift/agreement/accuracy alarm")
    signals = {s["name"]: s for s in quiet.detail["monitor"]["signals"]}
    assert {"input_drift", "prediction_drift", "confidence_drift", "cascade_rate"} <= set(signals)
    assert not any(s["alarm"] for s in signals.values())

    # 3. Traffic shifts to four intents it never learnt: they cascade, the monitor flags it.
    shifted = loop_support.read_rows(banking / "train.csv", NEW_INTENTS, 60)
    # The specialist stays confident on intents it never saw (a softmax over four labels has
    # nowhere else to go), so few cascade: the random shadow share (here one request in two)
    # is what brings the general model's labels for them.
    loop_support.serve(registry, specialist, 1, shifted, sample_share=0.5)
    retrained = once()
    assert (retrained.action, retrained.trigger) == ("promoted", "drift"), retrained.reason
    assert retrained.reason == "champion v1 → v2, after drift"
    alarms = [s["name"] for s in retrained.detail["monitor"]["signals"] if s["alarm"]]
    assert "input_drift" in alarms
    v2 = registry.promotions.get(TASK, "champion")
    assert v2 is not None and v2.version == 2
    assert set(load_specialist(v2, encoder=encoder).label_set) == set(FOUR_INTENTS + NEW_INTENTS)

    # The audit trail tells the story, step by step, with its numbers.
    story = [
        (e.subject, e.detail.get("trigger"))
        for e in registry.audit.events(TASK)
        if e.action == "loop.decided"
    ]
    assert story == [
        ("train", "first"),
        ("promoted", "first"),
        ("skip", None),
        ("train", "drift"),
        ("promoted", "drift"),
    ]
    done = registry.audit.events(TASK)[-1].detail
    assert done["champion"] == 1 and done["champion_after"] == 2
    non_inferior = {c["name"]: c for c in done["gate"]["checks"]}["non_inferior_to_champion"]
    assert non_inferior["passed"] and non_inferior["value"] > 0  # v2 beats v1 on the new rows
