"""``niche demo loop``: the closed loop end to end on the embedded default (a thin shell over
:func:`niche.workflows.demo.demo_loop`); ``niche demo portfolio``: a portfolio of specialists,
its leaderboard, cost of ownership and report (over
:func:`niche.workflows.portfolio.build_portfolio` and :mod:`niche.reports`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from niche.cli.app import JsonOpt, app
from niche.cli.output import RichProgress, make_console, print_json, table
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.workflows.demo import DemoStep

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
    from niche.workflows.demo import demo_loop

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


@demo_app.command("portfolio")
def demo_portfolio_command(
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="The HTML report to write (its directory must exist; default: "
            "$NICHE_HOME/report.html).",
        ),
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain", help="Run the quickstart again for tasks that already have a champion."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """What `make demo` runs: banking77, CLINC150 banking, sms_spam and CLINC150 travel,
    each curated, trained, evaluated against the general model and gated for champion, a
    little traffic through a gateway and one monitoring check each; then the leaderboard,
    the cost-of-ownership verdicts and the report. Tasks that have a champion are reused."""
    from niche.cli.leaderboard import print_leaderboard
    from niche.cli.tco import print_tco
    from niche.reports import build_report
    from niche.reports.html import check_out_path
    from niche.workflows import portfolio

    settings = Settings()
    if report is not None:
        check_out_path(report, option="--report")  # a bad path fails before minutes of work
    console = make_console()

    def show(step: DemoStep) -> None:
        if not json_out:
            console.print(f"[bold]{step.name}[/]  {step.title}", highlight=False)

    with RichProgress(enabled=not json_out) as progress:
        result = portfolio.build_portfolio(
            settings,
            portfolio=portfolio.DEFAULT_PORTFOLIO,
            retrain=retrain,
            on_step=show,
            progress=progress,
        )
    started = time.perf_counter()
    # One build: the page and what is printed here are the same figures.
    page = build_report(settings)
    path = page.write(report if report is not None else settings.home.resolve() / "report.html")
    seconds = round(time.perf_counter() - started, 3)
    board, costs = page.data["leaderboard"], page.data["tco"]
    if json_out:
        payload = result.to_dict()
        payload["timings_s"]["report"] = seconds
        print_json(payload | {"leaderboard": board, "tco": costs, "report": str(path)})
        return
    print_leaderboard(board)
    print_tco(costs, sources=False)
    console.print("verdicts (inputs and their sources: niche tco):", markup=False)
    for row in costs["tasks"]:
        console.print(f"{row['task']}: {row['verdict']} — {row['reason']}", markup=False)
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings_s.items())
    console.print(
        f"done in {result.seconds + seconds:.0f} s ({timings}, report {seconds:.0f} s)",
        markup=False,
    )
    console.print("report:", markup=False)
    console.print(str(path), markup=False, soft_wrap=True)


_DETAIL_CHARS = 200


def _detail(detail: dict[str, Any]) -> str:
    """An event's detail as ``key=value`` pairs, cut short (``niche audit --json`` has all)."""
    text = ", ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in detail.items()
        if value is not None and value != []
    )
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"
