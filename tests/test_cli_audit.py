"""``niche audit`` end to end: a quickstart, a task edit, a key creation and a refused
promotion, each in the audit trail with its actor and time (issue 8's acceptance), on the real
encoder, the sms_spam catalog dataset and a real NICHE_HOME."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from niche.cli import app

runner = CliRunner()


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return json.loads(result.stdout)


def _aware(at: str) -> datetime:
    parsed = datetime.fromisoformat(at)
    assert parsed.tzinfo is not None, at
    return parsed


@pytest.mark.slow
def test_audit_shows_a_quickstart_a_task_edit_a_key_and_a_refused_promotion(cli_env):
    out = _json(runner.invoke(app, ["quickstart", "--dataset", "sms_spam", "--json"]))
    task, fingerprint = out["registry"]["task"], out["dataset"]["fingerprint"]
    assert (task, out["gate"]["passed"], out["gate"]["moved"]) == ("sms_spam", True, True)
    accuracy = out["specialist"]["accuracy"]
    assert accuracy < 1.0  # so the floor set next is out of reach

    edited = runner.invoke(app, ["tasks", "edit", task, "--set", "sla.min_quality=1.0"])
    assert edited.exit_code == 0, edited.output
    key = _json(runner.invoke(app, ["keys", "create", "--scope", "inference", "--json"]))
    # v1 does not hold `challenger` yet, and its accuracy misses the task's new floor.
    refused = runner.invoke(app, ["promote", task, "1", "--alias", "challenger", "--json"])
    assert refused.exit_code == 4, refused.output
    assert refused.stderr.strip() == f"error: gate refused {task} v1 for challenger: failed " + (
        ", ".join(c["name"] for c in json.loads(refused.stdout)["checks"] if not c["passed"])
    )

    events = _json(runner.invoke(app, ["audit", "--json"]))
    assert [e["action"] for e in events] == [
        "dataset.registered",  # curating registers the version before the task exists
        "task.created",
        "model.registered",
        "gate.decided",
        "alias.moved",
        "task.updated",
        "key.created",
        "gate.decided",  # refused: no alias.moved follows
    ]
    for event in events:
        assert event["actor"].startswith("cli:") and len(event["actor"]) > len("cli:"), event
    times = [_aware(e["at"]) for e in events]
    assert times == sorted(times)

    registered, created, model, passed, moved, updated, key_event, failed = events
    assert registered["detail"]["fingerprint"] == fingerprint
    assert registered["detail"]["uri"].startswith("file://")  # the files are in the artifact store
    assert (created["task"], created["subject"]) == (task, task)
    assert (model["task"], model["subject"]) == (task, "v1")
    assert passed["detail"] == {
        "version": 1,
        "alias": "champion",
        "passed": True,
        "forced": False,
        "why": None,
        "failed": [],
    }
    assert moved["detail"]["alias"] == "champion"
    assert (moved["detail"]["from_version"], moved["detail"]["to_version"]) == (None, 1)
    assert updated["task"] == task
    assert updated["detail"]["changed"]["sla"]["to"]["min_quality"] == 1.0
    assert key_event["subject"] == key["prefix"] and key_event["detail"]["scope"] == "inference"
    assert key["secret"] not in json.dumps(events)  # the secret is never kept, audit included
    assert (failed["task"], failed["subject"]) == (task, "v1")
    assert failed["detail"]["alias"] == "challenger"
    assert (failed["detail"]["passed"], failed["detail"]["forced"]) == (False, False)
    assert "sla.min_quality" in failed["detail"]["failed"]
    assert _json(runner.invoke(app, ["tasks", "show", task, "--json"]))["aliases"] == {
        "champion": 1
    }

    # A task's events only (the dataset and the key name no task); a time window.
    mine = _json(runner.invoke(app, ["audit", task, "--json"]))
    assert mine == [e for e in events if e["task"] == task]
    assert [e["action"] for e in mine] == [
        "task.created",
        "model.registered",
        "gate.decided",
        "alias.moved",
        "task.updated",
        "gate.decided",
    ]
    since = updated["at"]
    assert _json(runner.invoke(app, ["audit", "--since", since, "--json"])) == events[5:]
    assert _json(runner.invoke(app, ["audit", "--since", "2999-01-01T00:00:00Z", "--json"])) == []

    # Without --json: one rich table, every event a row (wide enough that none wraps).
    table = runner.invoke(app, ["audit"], env={"COLUMNS": "5000"})
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].strip() == "audit"
    rows = [line for line in lines if line.startswith("│ ")]
    assert len(rows) == len(events)
    for event, row in zip(events, rows, strict=True):
        cells = [cell.strip() for cell in row.strip("│").split("│")]
        assert cells[:6] == [
            str(event["id"]),
            event["at"],
            event["actor"],
            event["action"],
            event["task"] or "",
            event["subject"] or "",
        ]
    assert "alias=challenger" in rows[-1] and "passed=false" in rows[-1]
