"""``niche tco [TASK…] [--months 6] [--requests-per-month N] [--json]``: each task's cost of
ownership, specialised vs the general model alone, with energy, emissions and a verdict."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from niche.cli.app import JsonOpt, app
from niche.cli.output import make_console, print_json, table

_COLUMNS = [
    "task",
    "requests/month",
    "general-only $",
    "portfolio $",
    "savings",
    "break-even",
    "kWh general / portfolio",
    "gCO2e general / portfolio",
    "verdict",
]


@app.command("tco")
def tco_command(
    tasks: Annotated[
        list[str] | None, typer.Argument(help="Only these tasks (default: every task).")
    ] = None,
    months: Annotated[int, typer.Option(help="Months the costs are summed over.")] = 6,
    requests_per_month: Annotated[
        float | None,
        typer.Option(help="Requests a month for every task (default: each task's last 30 days)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Total cost of ownership per task and for the portfolio: general-only vs specialist +
    cascade + training + maintenance, savings, break-even month, kWh and gCO2e both ways, and
    a verdict (specialise / keep general / need more data) with its reason."""
    from niche.reports import tco

    payload = tco(
        tasks=tasks or None, months=months, requests_per_month=requests_per_month
    ).to_dict()
    if json_out:
        print_json(payload)
        return
    print_tco(payload)


def _usd(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _pair(values: dict[str, Any], digits: int = 3) -> str:
    def one(value: float | None) -> str:
        return "—" if value is None else f"{value:.{digits}g}"

    return f"{one(values['general'])} / {one(values['portfolio'])}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} %"


def print_tco(payload: dict[str, Any], *, sources: bool = True) -> None:
    """Print a ``TcoReport.to_dict()``: the table, the portfolio's line and (``sources``)
    where every input came from."""
    rows = payload["tasks"]
    table(
        f"Total cost of ownership over {payload['months']} months",
        _COLUMNS,
        [
            [
                row["task"],
                f"{row['requests_per_month']:,.0f}",
                _usd(row["general_usd"]),
                _usd(row["portfolio_usd"]),
                _pct(row["savings_pct"]),
                row["break_even_month"],
                _pair(row["energy_kwh"]),
                _pair(row["emissions_gco2e"]),
                f"{row['verdict']}: {row['reason']}",
            ]
            for row in rows
        ],
    )
    console = make_console()
    if not rows:
        console.print("no tasks yet (create one: niche tasks create NAME)", markup=False)
        return
    total = payload["portfolio"]
    console.print(
        f"portfolio ({total['specialised']} of {total['tasks']} tasks specialised): "
        f"${_usd(total['general_usd'])} general-only, ${_usd(total['portfolio_usd'])} "
        f"following the verdicts, savings {_pct(total['savings_pct']) or '—'}, break-even "
        f"month {total['break_even_month'] or '—'}, kWh {_pair(total['energy_kwh'])}, "
        f"gCO2e {_pair(total['emissions_gco2e'])}",
        markup=False,
    )
    if not sources:
        return
    console.print("inputs: " + "; ".join(payload["sources"]), markup=False)
    for row in rows:
        console.print(f"{row['task']}: " + "; ".join(row["sources"]), markup=False)
