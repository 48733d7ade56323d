"""``niche loop`` and ``niche audit`` on loop decisions, through the real CLI, registry and
encoder in a real NICHE_HOME."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from niche.cli import app
from niche.registry import Registry
from niche.settings import Settings
from tests import loop_support
from tests.loop_support import TASK

runner = CliRunner()


@pytest.fixture(scope="module")
def banking_rows(datasets_dir: Path) -> list[tuple[str, str]]:
    return loop_support.banking_rows(datasets_dir)


def _setup(rows: list[tuple[str, str]]) -> None:
    with Registry(settings=Settings()) as registry:
        loop_support.create_task(registry)
        loop_support.capture(registry, rows)


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return json.loads(result.stdout)


def test_loop_once_prints_did_nothing_with_its_reason_and_audit_shows_it(
    cli_env, banking_rows
) -> None:
    _setup(banking_rows[:30])
    [decision] = _json(runner.invoke(app, ["loop", "--once", "--json", TASK]))
    assert decision["task"] == TASK and decision["action"] == "skip"
    assert decision["reason"] == "only 30 labelled rows, 80 needed (loop.min_rows)"

    shown = runner.invoke(app, ["loop", "--once"])  # every task, as a table
    assert shown.exit_code == 0, shown.output
    assert "only 30 labelled rows, 80 needed" in shown.stdout

    events = _json(runner.invoke(app, ["audit", TASK, "--json"]))
    loop_events = [e for e in events if e["action"] == "loop.decided"]
    assert [e["subject"] for e in loop_events] == ["skip", "skip"]
    assert loop_events[0]["detail"]["rows"] == {"labelled": 30, "new": None, "min_rows": 80}
    audit = runner.invoke(app, ["audit", TASK])
    assert audit.exit_code == 0, audit.output
    assert "only 30 labelled rows, 80 needed (loop.min_rows); rows: 30 labelled (min 80)" in (
        audit.stdout
    )


@pytest.mark.slow
def test_loop_once_promotes_a_first_champion_and_audit_shows_every_step(
    cli_env, banking_rows
) -> None:
    _setup(banking_rows)
    shown = runner.invoke(app, ["loop", "--once", TASK])
    assert shown.exit_code == 0, shown.output
    assert "promoted" in shown.stdout and "none → v1" in shown.stdout

    audit = runner.invoke(app, ["audit", TASK])
    assert audit.exit_code == 0, audit.output
    lines = audit.stdout
    assert "first: no champion yet, 240 labelled rows (loop.min_rows=80)" in lines
    assert "champion v1, after first" in lines
    assert "gate passed" in lines and "champion none → v1" in lines
    assert "accuracy " in lines and " vs general " in lines
    assert "rows: 240 labelled (min 80)" in lines and "seconds: " in lines
    # Everything the loop changed is recorded as the loop: the model, the gate, the alias.
    events = _json(runner.invoke(app, ["audit", TASK, "--json"]))
    changes = [
        e for e in events if e["action"] in ("model.registered", "gate.decided", "alias.moved")
    ]
    assert [e["action"] for e in changes] == ["model.registered", "gate.decided", "alias.moved"]
    assert all(e["actor"].startswith("loop:") for e in changes), changes


def test_loop_refuses_an_unknown_task_and_a_bad_interval(cli_env) -> None:
    unknown = runner.invoke(app, ["loop", "--once", "nope"])
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error: no task 'nope'")
    bad = runner.invoke(app, ["loop", "--interval", "soon"])
    assert bad.exit_code == 2
    assert "interval 'soon' is not a duration" in bad.stderr


def test_sigterm_stops_a_running_loop_between_passes(cli_env, banking_rows) -> None:
    _setup(banking_rows[:30])

    def stop_after_first_pass() -> None:
        with Registry(settings=Settings()) as registry:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any(e.action == "loop.decided" for e in registry.audit.events(TASK)):
                    break
                time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=stop_after_first_pass)
    killer.start()
    started = time.monotonic()
    result = runner.invoke(app, ["loop", "--interval", "1h", "--json", TASK])
    killer.join(10)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60  # not the hour's wait
    [line] = result.stdout.splitlines()  # one pass, one decision, as a JSON line
    assert json.loads(line)["action"] == "skip"
    assert "stopping after the current step" in result.stderr
    with Registry(settings=Settings()) as registry:
        assert registry.leases.get(TASK) is None
    assert signal.getsignal(signal.SIGTERM) == before  # the loop's handler is gone again
