"""The portfolio report: one self-contained HTML file (no CDN, no external URL, opens offline)
with the leaderboard and the total cost of ownership, plotted and tabulated.

    >>> report = build_report(since="30d", months=6)
    >>> report.write("report.html")

The page shows exactly :func:`~niche.reports.leaderboard` and :func:`~niche.reports.tco`
(their ``to_dict()`` forms, in ``report.data``) and embeds that JSON in a
``<script type="application/json" id="niche-data">`` block. Plots (matplotlib, the ``report``
extra, rendered to inline SVG with text as paths): per domain, champion vs general model
accuracy with 95 % interval whiskers; each champion's cascade curve (coverage vs accuracy,
from the stored evaluation the leaderboard shows, ``report.data["cascade"]``); each task's
drift and agreement timeline over its stored monitoring checks (``report.data["timelines"]``,
see :mod:`niche.reports.timelines`) and the open alerts; the portfolio's cumulative cost over
the months, general-only vs following the verdicts, and the same per specialised task
(:mod:`niche.reports.plots` draws them all). Every string from the registry is escaped.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from niche.errors import ValidationError
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.registry import Registry

__all__ = ["Report", "build_report", "check_out_path"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
th { background: #f3f3f3; }
figure { margin: 0.5em 0 1.5em; }
figure svg { max-width: 100%; height: auto; }
.note { color: #666; font-size: 0.85em; }
"""


@dataclass(frozen=True)
class Report:
    """The page (``html``) and the figures it was built from (``data``: ``{"leaderboard":
    Leaderboard.to_dict(), "tco": TcoReport.to_dict(), "cascade": {task: [{"threshold",
    "coverage", "accuracy"}, …]}}``)."""

    html: str
    data: dict[str, Any]

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the page to ``path`` atomically (a temporary file beside it, then a rename);
        returns the path. A missing directory or a directory as ``path``: ValidationError."""
        target = check_out_path(path)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.html)
            # mkstemp makes the file private (0600); a report is meant to be shared and opened
            # by a browser, so it gets the mode any new file gets here.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temp, 0o666 & ~umask)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return target


def check_out_path(path: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """``path`` as a Path when a file can be written there, else ValidationError naming it
    (as the command's ``option``)."""
    target = Path(path)
    param = option.lstrip("-")
    if target.is_dir():
        raise ValidationError(f"{option} {str(target)!r} is a directory", param=param)
    if not target.parent.is_dir():
        raise ValidationError(
            f"{option} {str(target)!r}: no directory {str(target.parent)!r}", param=param
        )
    return target


def build_report(
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    since: str | None = None,
    months: int = 6,
    now: datetime | None = None,
) -> Report:
    """The report of every task: the leaderboard over the traffic since ``since`` and the
    cost of ownership over ``months`` (``now`` ends both windows; default: each view's)."""
    from niche.reports.leaderboard import leaderboard
    from niche.reports.tco import tco
    from niche.reports.timelines import timelines
    from niche.workflows._context import resolve

    settings, registry = resolve(settings, registry)
    board = leaderboard(settings, registry=registry, since=since, now=now).to_dict()
    costs = tco(settings, registry=registry, months=months, now=now).to_dict()
    shown = [row["task"] for domain in board["domains"] for row in domain["tasks"]]
    data = {
        "leaderboard": board,
        "tco": costs,
        "cascade": _cascades(registry, board),
        "timelines": {
            task: points
            for task, points in timelines(registry=registry, tasks=shown).items()
            if points
        },
        "alerts": [a.to_dict() for a in registry.monitoring.alerts(state="open")],
    }
    return Report(html=_page(data), data=data)


def _cascades(registry: Registry, board: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each champion's cascade curve (threshold, coverage, accuracy) from the evaluation the
    leaderboard shows (its stored ``comparison["cascade"]``); tasks without one are left out."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for domain in board["domains"]:
        for row in domain["tasks"]:
            if row["evaluation_id"] is None:
                continue
            evaluations = registry.models.evaluations(row["task"], row["champion"])
            shown = next((e for e in evaluations if e.id == row["evaluation_id"]), None)
            curve = ((shown.comparison or {}).get("cascade") if shown else None) or []
            if curve:
                curves[row["task"]] = [
                    {key: point[key] for key in ("threshold", "coverage", "accuracy")}
                    for point in curve
                ]
    return curves


# -- the page ---------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(data: dict[str, Any]) -> str:
    from niche.reports import plots

    board, costs = data["leaderboard"], data["tco"]
    plt = plots.pyplot()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>niche portfolio report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>niche portfolio report</h1>",
        f'<p class="note">generated {_e(costs["generated_at"])}; traffic since '
        f"{_e(board['since'] or 'the first record')}; costs over {_e(costs['months'])} months</p>",
        "<h2>Leaderboard</h2>",
    ]
    portfolio = board["portfolio"]
    parts.append(
        f"<p>portfolio score <b>{_pct(portfolio['score'])}</b>, vs general "
        f"{_pts(portfolio['quality_vs_general'])}, {_e(portfolio['tasks'])} tasks, "
        f"{_e(portfolio['requests'])} requests</p>"
        f'<p class="note">{_e(board["formula"])}</p>'
    )
    for domain in board["domains"]:
        parts.append(
            f"<h3>{_e(domain['name'])}: score {_pct(domain['score'])}, vs general "
            f"{_pts(domain['quality_vs_general'])}, traffic {_pct(domain['traffic_share'])}</h3>"
        )
        figure = plots.domain_figure(plt, domain)
        if figure is not None:
            title = f"accuracy per task in {domain['name']}"
            parts.append(plots.inline_svg(plt, figure, title))
        parts.append(_leaderboard_table(domain["tasks"]))
    if data["cascade"]:
        parts.append("<h2>Cascade curves</h2>")
        parts.append(
            '<p class="note">at threshold t the specialist answers the rows where its '
            "confidence is at least t, the general model the rest: coverage (the specialist's "
            "share) against the cascade's accuracy, from the champion's test evaluation</p>"
        )
        curves = plots.cascade_figure(plt, data["cascade"])
        parts.append(plots.inline_svg(plt, curves, "cascade curves"))
        parts.append(_cascade_table(data["cascade"]))
    parts += _monitoring(plt, data["timelines"], data["alerts"])
    parts.append("<h2>Total cost of ownership</h2>")
    total = costs["portfolio"]
    parts.append(
        f"<p>portfolio ({_e(total['specialised'])} of {_e(total['tasks'])} tasks specialised): "
        f"{_usd(total['general_usd'])} general-only, {_usd(total['portfolio_usd'])} following "
        f"the verdicts, savings <b>{_usd(total['savings_usd'])}</b> "
        f"(<b>{_pct1(total['savings_pct'])}</b>), break-even month "
        f"{_e(total['break_even_month'] or '—')}</p>"
    )
    if total["months"]:
        cumulative = plots.tco_figure(plt, costs)
        parts.append(plots.inline_svg(plt, cumulative, "cumulative cost over the months"))
        parts.append(_months_table(total["months"]))
    parts.append(_tco_table(costs))
    parts.append(
        '<p class="note">inputs: ' + "; ".join(_e(s) for s in costs["sources"]) + "</p><ul>"
    )
    parts += [
        f'<li class="note">{_e(row["task"])}: {"; ".join(_e(s) for s in row["sources"])}</li>'
        for row in costs["tasks"]
    ]
    parts.append("</ul>")
    parts.append(
        '<script type="application/json" id="niche-data">' + _json_for_html(data) + "</script>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _monitoring(
    plt: Any, timelines: dict[str, list[dict[str, Any]]], alerts: list[dict[str, Any]]
) -> list[str]:
    """The drift and agreement timelines (one plot and table per task) and the open alerts."""
    from niche.reports import plots

    if not timelines and not alerts:
        return []
    parts = [
        "<h2>Drift and agreement</h2>",
        '<p class="note">each stored monitoring check: drift tests as -log10 p against their '
        "alpha (dashed; above it, an alarm), agreement with the general model and accuracy "
        "with their 95 % intervals</p>",
    ]
    for task, points in timelines.items():
        figure = plots.timeline_figure(plt, task, points)
        if figure is not None:
            parts.append(f"<h3>{_e(task)}</h3>")
            parts.append(plots.inline_svg(plt, figure, f"drift and agreement of {task}"))
            parts.append(_timeline_table(points))
    if alerts:
        parts.append("<h3>Open alerts</h3>")
        parts.append(
            _table(
                ["task", "signal", "opened", "model version"],
                [
                    [
                        _td(_e(a["task"]), text=True),
                        _td(_e(a["signal"]), text=True),
                        _td(_e(a["opened_at"]), text=True),
                        _td(_e(a["model_version"] if a["model_version"] is not None else "—")),
                    ]
                    for a in alerts
                ],
            )
        )
    return parts


def _timeline_table(points: list[dict[str, Any]]) -> str:
    names = sorted({name for p in points for name in p["signals"]})
    rows = []
    for point in points:
        cells = [_td(_e(point["at"]), text=True), _td(_e(point["model_version"]))]
        for name in names:
            signal = point["signals"].get(name)
            if signal is None:
                cells.append(_td("—"))
                continue
            value = signal["p_value"] if signal["p_value"] is not None else signal["statistic"]
            mark = " ⚠" if signal["alarm"] else ""
            cells.append(_td(_num(value) + mark))
        rows.append(cells)
    header = ["checked", "version", *names]
    return _table(header, rows)


def _json_for_html(data: dict[str, Any]) -> str:
    """JSON that cannot end its ``<script>`` block: ``<``, ``>`` and ``&`` as ``\\u`` escapes."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: str, *, text: bool = False) -> str:
    """A cell from an already formatted (escaped) value."""
    return f'<td class="text">{value}</td>' if text else f"<td>{value}</td>"


def _leaderboard_table(rows: list[dict[str, Any]]) -> str:
    header = [
        "task",
        "champion",
        "quality (95% CI)",
        "general (95% CI)",
        "difference (95% CI)",
        "p",
        "p95 ms",
        "$/1M",
        "general $/1M",
        "Wh/query",
        "traffic",
        "cascade",
        "SLA",
        "alerts",
    ]
    cells = []
    for row in rows:
        mine, theirs = row["specialist"] or {}, row["general"] or {}
        champion = f"v{row['champion']}" if row["champion"] is not None else "none"
        if row["note"]:
            champion += f" ({row['note']})"
        ci = row["difference_ci"]
        difference = _pts(row["difference"]) + (
            f" [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]" if ci else ""
        )
        sla = ", ".join(f"{name}: {state}" for name, state in row["sla"].items()) or "—"
        cells.append(
            [
                _td(_e(row["task"]), text=True),
                _td(_e(champion), text=True),
                _td(_e(_with_ci(mine, row.get("metric", "accuracy")))),
                _td(_e(_with_ci(theirs, row.get("metric", "accuracy")))),
                _td(difference if row["difference"] is not None else "—"),
                _td(_num(row["p_value"], 2)),
                _td(_num(mine.get("latency_p95_ms"))),
                _td(_num(mine.get("cost_per_1m_usd"))),
                _td(_num(theirs.get("cost_per_1m_usd"))),
                _td(_num(mine.get("wh_per_query"))),
                _td(_pct(row["traffic_share"])),
                _td(_pct(row["cascade_rate"])),
                _td(_e(sla), text=True),
                _td(_e(row["open_alerts"])),
            ]
        )
    return _table(header, cells)


def _tco_table(costs: dict[str, Any]) -> str:
    header = [
        "task",
        "domain",
        "verdict",
        "reason",
        "requests/month",
        "general-only $",
        "portfolio $",
        "savings $",
        "savings",
        "break-even month",
        "kWh general / portfolio",
        "gCO2e general / portfolio",
    ]
    cells = [
        [
            _td(_e(row["task"]), text=True),
            _td(_e(row["domain"] or "—"), text=True),
            _td(_e(row["verdict"]), text=True),
            _td(_e(row["reason"]), text=True),
            _td(f"{row['requests_per_month']:,.0f}"),
            _td(_usd(row["general_usd"])),
            _td(_usd(row["portfolio_usd"])),
            _td(_usd(row["savings_usd"])),
            _td(_pct1(row["savings_pct"])),
            _td(_e(row["break_even_month"] or "—")),
            _td(_pair(row["energy_kwh"])),
            _td(_pair(row["emissions_gco2e"])),
        ]
        for row in costs["tasks"]
    ]
    return _table(header, cells)


def _cascade_table(curves: dict[str, list[dict[str, Any]]]) -> str:
    cells = [
        [
            _td(_e(task), text=True),
            _td(f"{p['threshold']:g}"),
            _td(_pct(p["coverage"])),
            _td(f"{p['accuracy']:.3f}"),
        ]
        for task, curve in curves.items()
        for p in curve
    ]
    return _table(["task", "threshold", "coverage", "accuracy"], cells)


def _months_table(months: list[dict[str, Any]]) -> str:
    header = ["month", "general-only $", "portfolio $", "savings $", "cumulative savings $"]
    cells = [
        [
            _td(_e(m["month"])),
            _td(_usd(m["general_usd"])),
            _td(_usd(m["portfolio_usd"])),
            _td(_usd(m["savings_usd"])),
            _td(_usd(m["cumulative_savings_usd"])),
        ]
        for m in months
    ]
    return _table(header, cells)


# -- formats (shared with the tests: the tables show these strings) ---------------------------


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _pct1(value: float | None) -> str:
    """A percentage already in percent (TCO savings)."""
    return "—" if value is None else f"{value:.1f} %"


def _pts(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f} pts"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.2f}" if abs(value) >= 1 or value == 0 else f"${value:.3g}"


def _pair(values: dict[str, float | None]) -> str:
    return f"{_num(values['general'])} / {_num(values['portfolio'])}"


def _with_ci(side: dict[str, Any], metric: str = "accuracy") -> str:
    """The side's quality on the task's metric, with its interval (macro-F1 says so)."""
    value = side.get("quality", side.get("accuracy"))
    if value is None:
        return "—"
    ci = side.get("quality_ci", side.get("accuracy_ci"))
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return f"{value:.3f}{interval}" + (" macro-F1" if metric == "macro_f1" else "")
