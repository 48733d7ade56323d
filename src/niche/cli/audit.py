"""``niche audit [TASK] [--since T] [--json]``: who changed what, and when."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from niche.cli.app import JsonOpt, app
from niche.cli.output import print_json, table
from niche.settings import Settings


@app.command("audit")
def audit_command(
    task: Annotated[str | None, typer.Argument(help="Only this task's events.")] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO-8601 time, or a duration back from now: 30m, 1h, 2d.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Every change to the registry, oldest first: who did what, to what, when."""
    from niche.workflows import audit_events

    payload = [event.to_dict() for event in audit_events(task, Settings(), since=since)]
    if json_out:
        print_json(payload)
        return
    table(
        "audit",
        ["id", "at", "actor", "action", "task", "subject", "detail"],
        [
            [
                e["id"],
                e["at"],
                e["actor"],
                e["action"],
                e["task"],
                e["subject"],
                _brief(e["detail"]),
            ]
            for e in payload
        ],
    )


def _brief(detail: dict[str, Any]) -> str:
    """``key=value`` pairs of an event's detail, unset ones left out."""
    return ", ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in detail.items()
        if value is not None and value != []
    )
