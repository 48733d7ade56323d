"""``niche demo loop``: the closed loop end to end on the embedded default (a thin shell over
:func:`niche.workflows.demo.demo_loop`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from niche.cli.app import JsonOpt, app
from niche.cli.output import RichProgress, make_console, print_json, table
from niche.settings import Settings

demo_app = typer.Typer(help="Demonstrations that run end to end on this machine.")
app.add_typer(demo_app, name="demo")


@demo_app.command("loop")
def demo_loop_command(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home", help="Keep the demo's registry and gateway log here (default: a temp dir)."
        ),
    ] = None,
    domains: Annotated[
        str,
        typer.Option("--domains", help="Two CLINC150 domains: the traffic, then the shift."),
    ] = "banking,travel",
    requests: Annotated[
        int, typer.Option("--requests", min=100, help="Requests per replay step.")
    ] = 400,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the replayed stream.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Traffic → distilled specialist → drift → retrained specialist, with a real gateway,
    SQLite and the built-in zero-shot general model (no API key): every step's numbers, then
    the audit trail."""
    from niche.errors import ValidationError
    from niche.workflows.demo import DemoStep, demo_loop

    pair = tuple(d.strip() for d in domains.split(","))
    if len(pair) != 2:
        raise ValidationError(f"--domains takes two domains, e.g. banking,travel; got {domains!r}")
    console = make_console()

    def show(step: DemoStep) -> None:
        if not json_out:
            console.print(f"[bold]{step.name}[/]  {step.title}", highlight=False)

    with RichProgress(enabled=not json_out) as progress:
        result = demo_loop(
            Settings(),
            home=home,
            domains=(pair[0], pair[1]),
            requests=requests,
            seed=seed,
            on_step=show,
            progress=progress,
        )
    if json_out:
        print_json(result.to_dict())
        return
    events = result.steps[-1].numbers.get("events", [])
    # One traffic.labelled event per feedback post: counted in the audit step's line above,
    # left out of the table so the loop's steps show.
    table(
        f"audit: {result.task} (traffic.labelled events left out; niche audit lists them)",
        ["at", "actor", "action", "subject", "detail"],
        [
            [e["at"], e["actor"], e["action"], e["subject"], _detail(e["detail"])]
            for e in events
            if e["action"] != "traffic.labelled"
        ],
    )
    console.print(f"done in {result.seconds:.0f} s")


_DETAIL_CHARS = 200


def _detail(detail: dict[str, Any]) -> str:
    """An event's detail as ``key=value`` pairs, cut short (``niche audit --json`` has all)."""
    text = ", ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in detail.items()
        if value is not None and value != []
    )
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"
