"""``niche leaderboard [--domain D] [--since 30d] [--json]``: per domain, each task's champion
against the general model, weighted domain scores and the portfolio score."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from niche.cli.app import JsonOpt, app
from niche.cli.output import make_console, print_json, table
from niche.settings import Settings

_COLUMNS = [
    "task",
    "champion",
    "quality (95% CI)",
    "general (95% CI)",
    "difference",
    "p",
    "p95 ms",
    "$/1M (general)",
    "Wh/query",
    "traffic",
    "cascade",
    "SLA",
    "alerts",
]


@app.command("leaderboard")
def leaderboard_command(
    domain: Annotated[str | None, typer.Option(help="Only this domain's tasks.")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Traffic since: ISO-8601, or a duration back from now (30d); default: all."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Per domain, each task's champion vs the general model (quality on the task's metric,
    accuracy or macro-F1, with 95 % intervals,
    paired p-value, latency, cost, energy, traffic share, cascade rate, SLA, open alerts)
    and the traffic-weighted domain and portfolio scores."""
    from niche.reports import leaderboard

    payload = leaderboard(Settings(), domain=domain, since=since).to_dict()
    if json_out:
        print_json(payload)
        return
    print_leaderboard(payload)


def print_leaderboard(payload: dict[str, Any]) -> None:
    """Print a ``Leaderboard.to_dict()``: one table per domain, then the portfolio's line."""
    console = make_console()
    if not payload["domains"]:
        console.print("no tasks yet (create one: niche tasks create NAME)", markup=False)
        return
    for board in payload["domains"]:
        title = (
            f"{board['name']} — score {_pct(board['score'])}, "
            f"vs general {_signed(board['quality_vs_general'])}, "
            f"traffic {_pct(board['traffic_share'])}"
        )
        table(title, _COLUMNS, [_cells(row) for row in board["tasks"]])
    portfolio = payload["portfolio"]
    console.print(
        f"portfolio: score {_pct(portfolio['score'])}, vs general "
        f"{_signed(portfolio['quality_vs_general'])}, {portfolio['tasks']} tasks, "
        f"{portfolio['requests']} requests  ({payload['formula']})",
        markup=False,
    )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f} pts"


def _with_ci(side: dict[str, Any] | None, metric: str = "accuracy") -> str:
    """The side's quality on the task's metric, with its interval (macro-F1 says so)."""
    if not side or side.get("quality", side.get("accuracy")) is None:
        return "—"
    value = side.get("quality", side.get("accuracy"))
    ci = side.get("quality_ci", side.get("accuracy_ci"))
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return f"{value:.3f}{interval}" + (" macro-F1" if metric == "macro_f1" else "")


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _cells(row: dict[str, Any]) -> list[str]:
    mine, theirs = row["specialist"], row["general"]
    champion = f"v{row['champion']}" if row["champion"] is not None else "none"
    if row["note"]:
        champion = f"{champion} ({row['note']})" if row["champion"] is not None else row["note"]
    ci = row["difference_ci"]
    difference = _signed(row["difference"]) + (
        f" [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]" if ci else ""
    )
    cost = "—"
    if mine is not None:
        cost = (
            f"{_number(mine['cost_per_1m_usd'])} ({_number((theirs or {}).get('cost_per_1m_usd'))})"
        )
    failing = [name for name, state in row["sla"].items() if state == "not met"]
    checked = [name for name, state in row["sla"].items() if state != "unchecked"]
    sla = "—" if not checked else ("met" if not failing else "not met: " + ", ".join(failing))
    return [
        row["task"],
        champion,
        _with_ci(mine, row.get("metric", "accuracy")),
        _with_ci(theirs, row.get("metric", "accuracy")),
        difference if row["difference"] is not None else "—",
        _number(row["p_value"], 2),
        _number(mine and mine["latency_p95_ms"]),
        cost,
        _number(mine and mine["wh_per_query"]),
        _pct(row["traffic_share"]),
        _pct(row["cascade_rate"]),
        sla,
        str(row["open_alerts"]),
    ]
