"""``niche report --out report.html [--since 30d] [--months 6]``: the leaderboard and the
cost of ownership as one self-contained HTML page with plots (no CDN, opens offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from niche.cli.app import app
from niche.cli.output import make_console
from niche.settings import Settings


@app.command("report")
def report_command(
    out: Annotated[Path, typer.Option(help="The HTML file to write (its directory must exist).")],
    since: Annotated[
        str | None,
        typer.Option(
            help="Leaderboard traffic since: ISO-8601, or a duration back from now (30d); "
            "default: all."
        ),
    ] = None,
    months: Annotated[int, typer.Option(help="Months the costs are summed over.")] = 6,
) -> None:
    """Write the portfolio report: leaderboard bars with 95 % interval whiskers per domain,
    the cost of ownership over the months, the tables behind them and their JSON."""
    from niche.reports import build_report
    from niche.reports.html import check_out_path

    check_out_path(out)  # a bad --out fails before any work
    path = build_report(Settings(), since=since, months=months).write(out)
    make_console().print(str(path), markup=False, soft_wrap=True)
