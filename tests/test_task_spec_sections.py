"""The task spec's ``monitoring`` and ``loop`` sections: strict, range-checked, editable with
``--set``, and stored as JSON that reads back to the same spec."""

from __future__ import annotations

import json

import pytest

from niche.errors import ValidationError
from niche.registry.tasks import LoopSpec, MonitoringSpec, TaskSpec, gate_fingerprint
from niche.workflows import create_task, edit_task


def test_defaults_round_trip_through_json_and_leave_the_gate_fingerprint_alone():
    spec = TaskSpec(name="intents", labels=["a", "b"])
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["loop"]["triggers"] == ["first", "drift", "agreement", "accuracy", "new_rows"]
    assert TaskSpec.from_dict(data) == spec
    edited = spec.with_changes(loop={"min_rows": 300}, monitoring={"window": "1h"})
    assert (edited.loop.min_rows, edited.loop.cooldown_s, edited.monitoring.window) == (
        300,
        3600.0,
        "1h",
    )
    # Monitoring and loop policy do not change what a gate measured.
    assert gate_fingerprint(edited) == gate_fingerprint(spec)


@pytest.mark.parametrize(
    ("section", "changes", "message"),
    [
        (MonitoringSpec, {"window": "1.5h"}, "monitoring.window must be a number of records"),
        (MonitoringSpec, {"window": 0}, "monitoring.window"),
        (MonitoringSpec, {"input_drift_alpha": 0}, "monitoring.input_drift_alpha"),
        (MonitoringSpec, {"min_agreement": 1.5}, "monitoring.min_agreement"),
        (MonitoringSpec, {"windw": 500}, "monitoring: unknown field(s) windw"),
        (LoopSpec, {"triggers": ["drift", "hourly"]}, "unknown trigger(s) hourly"),
        (LoopSpec, {"triggers": "drift"}, "loop.triggers must be a list"),
        (LoopSpec, {"min_rows": 1}, "loop.min_rows must be a whole number >= 2"),
        (LoopSpec, {"cooldown_s": -1}, "loop.cooldown_s"),
        (LoopSpec, {"since": "a week"}, "loop.since must be a duration"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(section, changes, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        section.from_dict(changes)


def test_tasks_edit_sets_loop_and_monitoring_fields_and_refuses_bad_ones(registry):
    create_task("intents", labels=["a", "b"], registry=registry)
    record = edit_task(
        "intents",
        ["loop.min_rows=300", 'loop.triggers=["first","drift"]', "monitoring.window=1000"],
        registry=registry,
    )
    assert record.spec.loop.min_rows == 300 and record.spec.loop.triggers == ("first", "drift")
    assert record.spec.monitoring.window == 1000
    with pytest.raises(ValidationError, match="unknown trigger"):
        edit_task("intents", ['loop.triggers=["sometimes"]'], registry=registry)
    assert registry.tasks.get("intents").spec.loop.triggers == ("first", "drift")
