"""``niche distil TASK``: a dataset version from the task's captured traffic (teacher and gold
labels), curated and registered.

The command parses options, calls :func:`niche.workflows.distil` and prints (lines or
``--json``). Too few labelled rows exit 2 with the count and how to get more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from niche.cli.app import JsonOpt, SeedOpt, TaskArg, app
from niche.cli.output import RichProgress, print_json
from niche.settings import Settings


@app.command("distil")
def distil_command(
    task: TaskArg,
    since: Annotated[
        str | None,
        typer.Option(help="Only records from this time: ISO-8601, or a duration back (7d, 12h)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Only records before this time: ISO-8601, or a duration back."),
    ] = None,
    min_rows: Annotated[
        int | None,
        typer.Option(
            "--min-rows", min=2, help="The fewest labelled rows to accept (default: loop.min_rows)."
        ),
    ] = None,
    with_labels: Annotated[
        Path | None,
        typer.Option(
            "--with-labels",
            help="A request_id,label CSV whose labels count as gold for this dataset only.",
        ),
    ] = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Distil a dataset version from a task's traffic: the general model's answers as labels,
    gold labels over them, the newest rows as the test split."""
    from niche.workflows import distil

    with RichProgress(enabled=not json_out) as progress:
        result = distil(
            task,
            Settings(),
            since=since,
            until=until,
            min_rows=min_rows,
            with_labels=with_labels,
            seed=seed,
            progress=progress,
        )
    payload = result.to_dict()
    if json_out:
        print_json(payload)
        return
    for line in _summary_lines(payload):
        typer.echo(line)


def _summary_lines(payload: dict[str, Any]) -> list[str]:
    """What ``niche distil`` prints for :meth:`~niche.workflows.DistilledData.to_dict`."""
    window, rows, test = payload["window"], payload["rows"], payload["test_rows"]
    verb = "already registered" if payload["already_registered"] else "registered"
    bounds = ", ".join(
        f"{name} {window[name]}" for name in ("since", "until", "after_id") if window[name]
    )
    lines = [
        f"dataset version {payload['fingerprint']} {verb} ({payload['source']})",
        f"  window: records {window['first_id']}-{window['last_id']}, "
        f"{window['records_read']} read" + (f" ({bounds})" if bounds else ""),
        f"  rows: train {payload['splits'].get('train', 0)}, test "
        f"{payload['splits'].get('test', 0)} after curation; {rows['teacher']} teacher, "
        f"{rows['gold']} gold before (test: {test['teacher']} teacher, {test['gold']} gold)",
    ]
    skipped = payload["skipped"]
    if skipped:
        lines.append("  skipped: " + ", ".join(f"{n} {reason}" for reason, n in skipped.items()))
    routes = ", ".join(f"{route} {n}" for route, n in payload["routes"].items())
    lines.append(
        f"  routes: {routes} (shadowed {payload['shadowed']}, sampled {payload['sampled']})"
    )
    lines.append(f"next: niche train {payload['fingerprint'][:12]} --task {payload['task']}")
    return lines
