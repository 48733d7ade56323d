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
                _loop_brief(e["detail"]) if e["action"] == "loop.decided" else _brief(e["detail"]),
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


def _loop_brief(detail: dict[str, Any]) -> str:
    """A loop decision's reason, then its numbers: rows, alarms, data, versions, gate, time."""
    parts = [str(detail.get("reason", ""))]
    rows = detail.get("rows") or {}
    if rows.get("labelled") is not None:
        new = f", {rows['new']} new" if rows.get("new") is not None else ""
        usable = f", {rows['usable']} usable" if rows.get("usable") is not None else ""
        parts.append(f"rows: {rows['labelled']} labelled{new}{usable} (min {rows.get('min_rows')})")
    signals = (detail.get("monitor") or {}).get("signals") or []
    if signals:
        alarms = [s["name"] for s in signals if s.get("alarm")]
        parts.append(
            f"{len(signals)} signals, alarms: {', '.join(alarms)}"
            if alarms
            else f"{len(signals)} signals, no alarm"
        )
    dataset = detail.get("dataset") or {}
    if dataset:
        splits = ", ".join(f"{k}={v}" for k, v in (dataset.get("splits") or {}).items())
        ids = dataset.get("origin") or {}
        span = f", records {ids['first_id']}-{ids['last_id']}" if "first_id" in ids else ""
        parts.append(f"data {str(dataset.get('fingerprint', ''))[:12]} ({splits}{span})")
    evaluation = detail.get("evaluation") or {}
    if isinstance(evaluation.get("accuracy"), float | int):
        general = evaluation.get("general_accuracy")
        versus = f" vs general {general:.3f}" if isinstance(general, float | int) else ""
        parts.append(
            f"accuracy {evaluation['accuracy']:.3f}{versus} on {evaluation.get('rows')} rows"
        )
    gate = detail.get("gate") or {}
    if gate:
        parts.append(
            "gate passed"
            if gate.get("passed")
            else f"gate failed {', '.join(gate.get('failed') or [])}"
        )
    if "candidate" in detail:
        before, after = detail.get("champion"), detail.get("champion_after")
        parts.append(
            f"champion {f'v{before}' if before else 'none'} → {f'v{after}' if after else 'none'}"
        )
    error = detail.get("error") or {}
    if error and error.get("message"):
        parts.append(f"error in {error.get('step')}: {error.get('class')}")
    seconds = dict(detail.get("seconds") or {})
    if seconds:
        total = seconds.pop("total", None)
        steps = ", ".join(f"{k} {v:g}" for k, v in seconds.items())
        parts.append(f"seconds: {steps}{f' (total {total:g})' if total is not None else ''}")
    return "; ".join(part for part in parts if part)
