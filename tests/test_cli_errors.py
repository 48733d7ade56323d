"""Every CLI command, given a bad argument, exits with its exact code and one line naming the
problem, never a traceback. The commands are walked from the typer app, so a new command
without a case here fails the coverage test."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from niche.cli import app
from niche.cli.app import NicheGroup
from niche.errors import ConflictError, GateRefusedError, NicheError, ValidationError

runner = CliRunner()

TASK = "spam"
# A model registered with a dataset fingerprint the registry has never seen.
ORPHAN_FINGERPRINT = "cd" * 32
BAD_DATABASE = {"NICHE_DATABASE_URL": "bogus://"}
BAD_DATABASE_MESSAGE = "unsupported registry database bogus://"


@dataclass(frozen=True)
class Case:
    """One bad invocation: its arguments, environment, exit code and what the line names."""

    args: list[str]
    code: int
    names: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


MISSING = "/nonexistent/tickets.csv"

CASES: dict[tuple[str, ...], list[Case]] = {
    ("tco",): [
        Case(["tco", "--months", "0"], 2, ("months must be a positive integer, got 0",)),
        Case(["tco", "nosuch"], 2, ("no task 'nosuch'",)),
    ],
    ("report",): [
        Case(
            ["report", "--out", "/nonexistent/dir/report.html"],
            2,
            ("--out '/nonexistent/dir/report.html'", "no directory '/nonexistent/dir'"),
        ),
        Case(["report", "--out", "/tmp"], 2, ("--out '/tmp' is a directory",)),
    ],
    ("quickstart",): [
        Case(["quickstart", "--data", MISSING], 2, (MISSING, "no such file")),
        Case(
            ["quickstart", "--kind", "nosuch"],
            2,
            ("unknown specialist kind 'nosuch'", "known kinds:", "text-two-stage"),
        ),
    ],
    ("settings",): [Case(["settings"], 2, ("NICHE_SEED='abc'", "int"), {"NICHE_SEED": "abc"})],
    ("train",): [
        Case(["train", "deadbeef"], 2, ("no dataset version 'deadbeef'",)),
        Case(["train", "deadbeef", "--fraction", "-0.5"], 2, ("fraction", "-0.5")),
        Case(
            ["train", "deadbeef", "--kind", "nosuch"],
            2,
            ("unknown specialist kind 'nosuch'", "known kinds:", "text", "zero-shot"),
        ),
        Case(
            ["train", "deadbeef", "--kind", "text-finetuned", "--epochs", "0"],
            2,
            ("specialist kind 'text-finetuned': option epochs must be >= 1, got 0",),
        ),
        Case(
            ["train", "deadbeef", "--epochs", "2"],
            2,
            ("specialist kind 'text' has no option 'epochs'", "options: c,"),
        ),
        Case(
            ["train", "deadbeef", "--kind", "text-finetuned", "-o", "learning_rate=-1"],
            2,
            ("option learning_rate must be > 0.0, got -1",),
        ),
        Case(["train", "deadbeef", "--option", "epochs"], 2, ("--option 'epochs'", "KEY=VALUE")),
    ],
    ("evaluate",): [
        Case(["evaluate", "nosuch", "1"], 2, ("no task 'nosuch'",)),
        Case(["evaluate", TASK, "1"], 2, (f"model {TASK} v1", ORPHAN_FINGERPRINT[:16])),
    ],
    ("promote",): [
        Case(["promote", TASK, "1", "--force"], 2, ("--force needs --why",)),
        Case(["promote", TASK, "v9"], 2, (f"task '{TASK}' has no model version 9",)),
    ],
    ("gates",): [Case(["gates", "nosuch"], 2, ("no task 'nosuch'",))],
    ("gc",): [Case(["gc"], 2, (BAD_DATABASE_MESSAGE,), BAD_DATABASE)],
    ("traffic", "list"): [
        Case(["traffic", "--since", "yesterday"], 2, ("--since 'yesterday'",)),
        Case(["traffic", "list", "--since", "yesterday"], 2, ("--since 'yesterday'",)),
    ],
    ("traffic", "prune"): [
        Case(["traffic", "prune", "--older-than", "ages"], 2, ("--older-than 'ages'",)),
        Case(["traffic", "prune"], 2, ("--older-than 30d", "NICHE_TRAFFIC_RETENTION_DAYS")),
    ],
    ("traffic", "dead-letters"): [
        Case(
            ["traffic", "dead-letters"],
            2,
            ("cannot read the dead-letter file", "Not a directory"),
            {"NICHE_TRAFFIC_DEAD_LETTER_DIR": "/etc/hostname"},
        )
    ],
    ("audit",): [
        Case(["audit", "--since", "bogus"], 2, ("--since 'bogus'",)),
        Case(["audit"], 2, (BAD_DATABASE_MESSAGE,), BAD_DATABASE),
    ],
    ("distil",): [
        Case(["distil", TASK], 2, (f"task {TASK}: 0 labelled rows", "at least 200")),
        Case(["distil", TASK, "--since", "bogus"], 2, ("--since 'bogus'",)),
        Case(["distil", "nosuch"], 2, ("no task 'nosuch'",)),
    ],
    ("distill",): [Case(["distill", "nosuch"], 2, ("no task 'nosuch'",))],
    ("feedback",): [Case(["feedback", "--file", MISSING], 2, (MISSING, "no such file"))],
    ("serve",): [Case(["serve", "--workers", "0"], 2, ("--workers must be at least 1",))],
    ("monitor",): [
        Case(["monitor", "nosuch"], 2, ("no task 'nosuch'",)),
        Case(["monitor", "--window", "soon"], 2, ("--window 'soon'",)),
    ],
    ("loop",): [
        Case(["loop", "--once", "nosuch"], 2, ("no task 'nosuch'",)),
        Case(["loop", "--interval", "bogus"], 2, ("interval 'bogus' is not a duration",)),
    ],
    ("replay",): [
        Case(
            ["replay", "--dataset", "sms_spam", "--task", TASK, "--url", "http://127.0.0.1:9"],
            2,
            ("nothing answers at http://127.0.0.1:9", "niche serve"),
        ),
        Case(
            ["replay", "--dataset", "sms_spam", "--task", TASK, "--url", "x", "--shift", "soon"],
            2,
            ("--shift",),
        ),
    ],
    ("demo", "portfolio"): [
        Case(
            ["demo", "portfolio", "--report", "/nonexistent/dir/report.html"],
            2,
            ("--report '/nonexistent/dir/report.html'", "no directory '/nonexistent/dir'"),
        )
    ],
    ("demo", "loop"): [
        Case(["demo", "loop", "--domains", "banking"], 2, ("--domains takes two domains",))
    ],
    ("leaderboard",): [
        Case(["leaderboard", "--domain", "nosuch"], 2, ("no domain 'nosuch'", "(known: (none))")),
        Case(["leaderboard", "--since", "yesterday"], 2, ("--since 'yesterday'",)),
    ],
    ("alerts",): [
        Case(["alerts", "--state", "closed"], 2, ("alert state must be one of open, resolved",)),
        Case(["alerts", "nosuch"], 2, ("no task 'nosuch'",)),
    ],
    ("data", "inspect"): [Case(["data", "inspect", "--dataset", "nosuch"], 2, ("'nosuch'",))],
    ("data", "curate"): [
        Case(
            ["data", "curate", "--dataset", "banking77", "--data", MISSING],
            2,
            ("either a catalog dataset or a data file",),
        ),
        Case(["data", "curate", "--test-size", "1.5"], 2, ("test_size", "1.5")),
    ],
    ("tasks", "create"): [
        Case(["tasks", "create", "intents", "--set", "sla=3"], 2, ("sla takes fields",)),
        Case(["tasks", "create", "Bad Name"], 2, ("task name 'Bad Name'",)),
    ],
    ("tasks", "list"): [Case(["tasks", "list"], 2, (BAD_DATABASE_MESSAGE,), BAD_DATABASE)],
    ("tasks", "show"): [Case(["tasks", "show", "nosuch"], 2, ("no task 'nosuch'",))],
    ("tasks", "edit"): [
        Case(["tasks", "edit", TASK, "--set", "cascade_threshold"], 2, ("KEY=VALUE",)),
        Case(
            ["tasks", "edit", TASK, "--set", "sla.min_quality=high"],
            2,
            (f"task {TASK}", "--set sla.min_quality=high", "wrong type"),
        ),
        Case(["tasks", "edit", TASK, "--set", "labels=ham"], 2, ("labels must be a JSON list",)),
        Case(
            ["tasks", "edit", TASK, "--set", "metric=f1"],
            2,
            (f"task {TASK}: metric must be one of accuracy, macro_f1, got 'f1'",),
        ),
    ],
    ("datasets", "list"): [Case(["datasets", "list"], 2, (BAD_DATABASE_MESSAGE,), BAD_DATABASE)],
    ("datasets", "show"): [Case(["datasets", "show", "zz"], 2, ("dataset version 'zz'",))],
    ("models", "list"): [Case(["models", "list", "nosuch"], 2, ("no task 'nosuch'",))],
    ("models", "show"): [Case(["models", "show", TASK, "v9"], 2, ("no model version 9",))],
    ("models", "lineage"): [
        Case(["models", "lineage", TASK, "v9"], 2, ("no model version 9",)),
        Case(["models", "lineage", TASK, "v9", "--json"], 2, ("no model version 9",)),
        Case(["models", "lineage", "nosuch", "1"], 2, ("no task 'nosuch'",)),
    ],
    ("aliases", "history"): [Case(["aliases", "history", "nosuch"], 2, ("no task 'nosuch'",))],
    ("db", "upgrade"): [Case(["db", "upgrade"], 2, (BAD_DATABASE_MESSAGE,), BAD_DATABASE)],
    ("keys", "create"): [
        Case(["keys", "create", "--scope", "root"], 2, ("key scope must be one of",))
    ],
    ("keys", "list"): [Case(["keys", "list"], 2, (BAD_DATABASE_MESSAGE,), BAD_DATABASE)],
    ("general", "check"): [
        Case(["general", "check", "nosuch"], 2, ("no task 'nosuch'",)),
        Case(["general", "check"], 2, ("no general model is configured",)),
    ],
    ("keys", "revoke"): [Case(["keys", "revoke", "99"], 2, ("no API key with id or prefix '99'",))],
}


def _leaf_commands() -> set[tuple[str, ...]]:
    leaves: set[tuple[str, ...]] = set()

    def walk(command: object, path: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            leaves.add(path)
            return
        for name, sub in subcommands.items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return leaves


@pytest.fixture
def registry_with_an_orphan_model(niche_home: Path) -> Path:
    """Task ``spam`` with v1, whose dataset version was never registered."""
    from niche.registry import Registry
    from niche.registry.tasks import TaskSpec
    from niche.settings import Settings

    with Registry(settings=Settings()) as registry:
        registry.tasks.create(TaskSpec(name=TASK, labels=["ham", "spam"]))
        registry.models.register(
            TASK,
            kind="text",
            artifact_digest="ab" * 32,
            artifact_uri="file:///nowhere",
            dataset_fingerprint=ORPHAN_FINGERPRINT,
            lineage={},
        )
    return niche_home


def test_every_command_has_a_bad_argument_case():
    assert set(CASES) == _leaf_commands()


@pytest.mark.parametrize(
    "case",
    [case for cases in CASES.values() for case in cases],
    ids=lambda case: " ".join(case.args),
)
def test_a_bad_argument_exits_with_its_code_and_one_line(registry_with_an_orphan_model, case):
    result = runner.invoke(app, case.args, env=case.env)
    # CliRunner catches exceptions: an unhandled one would be result.exception, not SystemExit.
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == case.code, result.output
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for name in case.names:
        assert name in message, (name, message)


@pytest.mark.parametrize(
    ("args", "code", "name"),
    [
        (["models", "lineage", TASK, "v9"], 2, "no model version 9"),
        (["tasks", "edit", TASK, "--set", "sla.min_quality=high"], 2, "sla.min_quality=high"),
        (["promote", TASK, "1", "--force"], 2, "--why"),
    ],
)
def test_in_a_real_process_no_traceback_only_the_line(
    registry_with_an_orphan_model, args, code, name
):
    done = subprocess.run(
        [sys.executable, "-m", "niche", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and name in done.stderr, done.stderr
    assert done.stdout == ""


def test_unparsable_options_are_usage_errors_without_a_traceback():
    result = runner.invoke(app, ["train", "deadbeef", "--fraction", "abc"])
    assert result.exit_code == 2
    assert "--fraction" in result.stderr
    assert isinstance(result.exception, SystemExit), result.exception


def test_the_root_group_turns_each_niche_error_into_its_exit_code_and_one_line():
    demo = typer.Typer(cls=NicheGroup)
    raised: dict[str, NicheError] = {
        "bad": ValidationError("--limit must be 0 or more", param="limit"),
        "moved": ConflictError("alias 'champion' of task 'spam' is v3, not v2 as expected"),
        "refused": GateRefusedError("gate refused spam v4 for champion: failed held_out"),
        "other": NicheError("something else"),
    }

    for name, error in raised.items():

        def command(error: NicheError = error) -> None:
            raise error

        demo.command(name)(command)

    for name, code in (("bad", 2), ("moved", 3), ("refused", 4), ("other", 1)):
        result = runner.invoke(demo, [name])
        assert result.exit_code == code, (name, result.output)
        assert result.stderr == f"error: {raised[name]}\n"


def test_lineage_of_a_model_whose_dataset_is_not_registered_stops_at_the_model(
    registry_with_an_orphan_model,
):
    # It died with `KeyError: 'source'`; the lineage is shown as far as it goes.
    text = runner.invoke(app, ["models", "lineage", TASK, "1"])
    assert (text.exit_code, text.exception) == (0, None), text.output
    assert f"model {TASK} v1 (text" in text.stdout
    assert f"dataset {ORPHAN_FINGERPRINT}: not registered" in text.stdout
    as_json = runner.invoke(app, ["models", "lineage", TASK, "1", "--json"])
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.stdout)
    assert payload["dataset"] == {"registered": False, "fingerprint": ORPHAN_FINGERPRINT}
    assert payload["model"]["version"] == 1
