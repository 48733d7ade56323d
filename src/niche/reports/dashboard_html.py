"""The dashboard's pages as HTML strings, from the dicts of :mod:`niche.reports.portfolio_view`.

Pure functions: data in, markup out. Every string from the registry is escaped; the pages
hold no inline script or style (the Content-Security-Policy forbids both): behaviour is in
``static/dashboard.js``, looks in ``static/dashboard.css``. Numbers that refresh in place are
``<… data-field="F" data-value="RAW" data-format="K">formatted</…>``: ``data-value`` is the
JSON number as the view gives it (empty for null), ``data-format`` tells the script how to
format a new value the way :func:`formatted` does here.

    >>> page = overview_page(overview(settings, registry=registry), refresh_s=10.0)
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = [
    "FORMATS",
    "error_page",
    "formatted",
    "login_page",
    "overview_page",
    "raw",
    "strict_svg",
    "task_page",
]

FORMATS: Final[dict[str, Callable[[Any], str]]] = {
    "pct": lambda v: f"{v * 100:.1f}%",
    "pts": lambda v: f"{v * 100:+.1f} pts",
    "acc": lambda v: f"{v:.3f}",
    "usd": lambda v: f"${v:.2f}" if abs(v) >= 1 else f"${v:.4f}",
    "int": lambda v: str(v),
    "version": lambda v: f"v{v}",
}
"""How each ``data-format`` shows a value (``static/dashboard.js`` formats alike)."""

_OVERVIEW_COLUMNS: Final = (
    ("champion", "champion", "version"),
    ("quality", "quality", "acc"),
    ("general_quality", "general", "acc"),
    ("vs_general", "vs general", "pts"),
    ("traffic_share", "traffic", "pct"),
    ("cascade_rate", "cascade", "pct"),
    ("cost_per_1m_usd", "$/1M", "usd"),
    ("open_alerts", "alerts", "int"),
)

_STYLE_ATTRIBUTE = re.compile(r'\sstyle="([^"]*)"')
_STYLE_ELEMENT = re.compile(r"<style\b[^>]*>.*?</style>", re.DOTALL)
_PROPERTY = re.compile(r"^[a-z-]+$")
_UNSAFE_VALUE = re.compile(r"[\"<>&]|url\(", re.IGNORECASE)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def formatted(value: Any, kind: str) -> str:
    """``value`` as the page shows it in format ``kind`` (``—`` for null)."""
    if value is None:
        return "—"
    return FORMATS[kind](value)


def raw(value: Any) -> str:
    """The ``data-value`` of a figure: its JSON form (``repr`` of a float), empty for null."""
    return "" if value is None else json.dumps(value)


def _field(name: str, value: Any, kind: str, *, tag: str = "span") -> str:
    return (
        f'<{tag} data-field="{_e(name)}" data-value="{_e(raw(value))}" '
        f'data-format="{_e(kind)}">{_e(formatted(value, kind))}</{tag}>'
    )


def strict_svg(markup: str) -> str:
    """matplotlib's SVG made to obey ``style-src 'self'``: its ``<style>`` element dropped
    (its two rules are in dashboard.css) and each ``style="p: v"`` attribute turned into
    the SVG presentation attributes ``p="v"`` (matplotlib only writes such properties)."""

    def attributes(found: re.Match[str]) -> str:
        parts = []
        for declaration in found.group(1).split(";"):
            name, _, value = declaration.partition(":")
            name, value = name.strip(), value.strip()
            if _PROPERTY.match(name) and value and not _UNSAFE_VALUE.search(value):
                parts.append(f' {name}="{value}"')
        return "".join(parts)

    return _STYLE_ATTRIBUTE.sub(attributes, _STYLE_ELEMENT.sub("", markup))


# -- the frame --------------------------------------------------------------------------------


def _document(
    title: str,
    body: Iterable[str],
    *,
    source: str | None = None,
    refresh_s: float | None = None,
    refreshed_at: str | None = None,
    logout: bool = False,
) -> str:
    attributes = ""
    if source is not None and refresh_s is not None:
        attributes = f' data-refresh-s="{_e(f"{refresh_s:g}")}" data-source="{_e(source)}"'
    nav = ['<header><nav><a href="/ui" id="home">niche portfolio</a>']
    if logout:
        nav.append(
            '<form method="post" action="/ui/logout" class="logout">'
            '<button type="submit" id="logout">log out</button></form>'
        )
    nav.append("</nav>")
    if refreshed_at is not None:
        nav.append(
            f'<p class="status">figures of <span id="refreshed-at">{_e(refreshed_at)}</span>'
            ' <span id="refresh-status" role="status"></span></p>'
        )
    nav.append("</header>")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            # No favicon request (a 404 a browser would report as a console error).
            '<link rel="icon" href="data:,">',
            '<link rel="stylesheet" href="/ui/static/dashboard.css">',
            '<script src="/ui/static/dashboard.js" defer></script>',
            f"</head><body{attributes}>",
            *nav,
            "<main>",
            *body,
            "</main></body></html>",
            "",
        ]
    )


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], **attrs: str) -> str:
    extra = "".join(f' {name}="{_e(value)}"' for name, value in attrs.items())
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f"<table{extra}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(text: object, *, cls: str = "text") -> str:
    return f'<td class="{cls}">{_e("—" if text is None else text)}</td>'


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _ci(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _alerts(alerts: list[dict[str, Any]], *, with_task: bool) -> str:
    parts = ['<section id="alerts"><h2>Open alerts</h2>']
    if not alerts:
        parts.append('<p class="note">no open alert</p>')
    else:
        header = (["task"] if with_task else []) + ["signal", "opened", "model version"]
        rows = [
            ([_td(a["task"])] if with_task else [])
            + [_td(a["signal"]), _td(a["opened_at"]), _td(a["model_version"], cls="num")]
            for a in alerts
        ]
        parts.append(_table(header, rows))
    parts.append("</section>")
    return "".join(parts)


# -- the pages --------------------------------------------------------------------------------


def overview_page(data: dict[str, Any], *, refresh_s: float, logout: bool = False) -> str:
    """The portfolio overview: the portfolio score, one row per task grouped by domain
    (``<table id="tasks">``, rows ``<tr data-task>``), the open alerts."""
    fields = data["fields"]
    body = [
        "<h1>Portfolio</h1>",
        '<p class="note">numbers refresh in place every '
        f"{_e(f'{refresh_s:g}')} s; plots and tables are drawn with the page</p>",
        f"<p>portfolio score {_field('portfolio_score', fields['portfolio_score'], 'pct')}, "
        f"vs general {_field('portfolio_vs_general', fields['portfolio_vs_general'], 'pts')}, "
        f"{_field('portfolio_tasks', fields['portfolio_tasks'], 'int')} tasks, "
        f"{_field('portfolio_requests', fields['portfolio_requests'], 'int')} requests, "
        f"{_field('portfolio_open_alerts', fields['portfolio_open_alerts'], 'int')} open "
        "alerts</p>",
        f'<p class="note">traffic since {_e(data["since"] or "the first record")}; scores: '
        f"{_e(data['leaderboard']['formula'])}</p>",
    ]
    header = "".join(f"<th>{_e(h)}</th>" for h in ["task", *(c[1] for c in _OVERVIEW_COLUMNS)])
    table = [f'<table id="tasks"><thead><tr>{header}</tr></thead>']
    for domain in data["domains"]:
        table.append(f'<tbody data-domain="{_e(domain["name"])}">')
        table.append(
            f'<tr class="domain"><th colspan="{len(_OVERVIEW_COLUMNS) + 1}" scope="rowgroup">'
            f"{_e(domain['name'])}: score {_e(formatted(domain['score'], 'pct'))}, vs general "
            f"{_e(formatted(domain['quality_vs_general'], 'pts'))}</th></tr>"
        )
        for task in domain["tasks"]:
            figures = data["tasks"][task]
            note = data["notes"].get(task)
            remark = f' <span class="note">{_e(note)}</span>' if note else ""
            if figures.get("metric") == "macro_f1":  # quality and its difference are macro-F1
                remark = ' <span class="note">(macro-F1)</span>' + remark
            cells = [f'<td class="text"><a href="/ui/tasks/{_e(task)}">{_e(task)}</a>{remark}</td>']
            cells += [
                _field(name, figures[name], kind, tag="td") for name, _, kind in _OVERVIEW_COLUMNS
            ]
            table.append(f'<tr data-task="{_e(task)}">{"".join(cells)}</tr>')
        table.append("</tbody>")
    if not data["domains"]:
        table.append('<tbody><tr><td class="note">no task yet</td></tr></tbody>')
    table.append("</table>")
    body.append("".join(table))
    body.append(_alerts(data["alerts"], with_task=True))
    return _document(
        "niche · portfolio",
        body,
        source="/ui/data/overview.json",
        refresh_s=refresh_s,
        refreshed_at=data["refreshed_at"],
        logout=logout,
    )


def task_page(
    data: dict[str, Any],
    *,
    refresh_s: float,
    timeline_svg: str | None,
    plot_note: str | None = None,
    logout: bool = False,
) -> str:
    """A task's page: its key figures, then sections ``versions``, ``aliases``, ``gates``,
    ``evaluations``, ``drift`` (``timeline_svg`` and a table), ``traffic`` and ``alerts``."""
    fields = data["fields"]
    name = data["task"]
    metric = "macro-F1" if data.get("metric") == "macro_f1" else "accuracy"
    body = [
        f'<h1 id="task-name">{_e(name)}</h1>',
        f"<p>domain {_e(data['domain'] or '(none)')}; champion "
        f"{_field('champion', fields['champion'], 'version')}, {_e(metric)} "
        f"{_field('quality', fields['quality'], 'acc')} vs general "
        f"{_field('general_quality', fields['general_quality'], 'acc')}; "
        f"{_field('requests', fields['requests'], 'int')} requests</p>",
        f'<p class="note">labels: {_e(", ".join(data["labels"]) or "—")}. The figures above '
        f"refresh in place every {_e(f'{refresh_s:g}')} s; plots and tables are drawn with "
        "the page (reload to redraw them)</p>",
    ]
    versions = [
        [
            _td(f"v{v['version']}"),
            _td(v["kind"]),
            _td(v["created_at"]),
            f'<td class="text" title="{_e(v["dataset_fingerprint"])}">'
            f"{_e(v['dataset_fingerprint'][:12])}</td>",
        ]
        for v in data["versions"]
    ]
    body.append('<section id="versions"><h2>Versions</h2>')
    body.append(
        _table(["version", "kind", "created", "dataset"], versions)
        if versions
        else '<p class="note">no model version yet</p>'
    )
    body.append("</section>")
    current = ", ".join(f"{alias} → v{v}" for alias, v in sorted(data["aliases"].items()))
    history = [
        [
            _td(e["at"]),
            _td(e["alias"]),
            _td(f"v{e['from_version']}" if e["from_version"] is not None else None),
            _td(f"v{e['to_version']}"),
            _td(e["actor"]),
            _td(e["reason"]),
        ]
        for e in reversed(data["alias_history"])
    ]
    body.append(f'<section id="aliases"><h2>Aliases</h2><p>{_e(current or "no alias yet")}</p>')
    if history:
        body.append(_table(["at", "alias", "from", "to", "actor", "reason"], history))
    body.append("</section>")
    body.append(_gates(data["gates"]))
    evaluations = [
        [
            _td(f"v{e['version']}"),
            _td(e["split"]),
            _td(e["rows"], cls="num"),
            _td(_ci(e["accuracy"], e["accuracy_ci"]), cls="num"),
            _td(_ci(e["general_accuracy"], e["general_accuracy_ci"]), cls="num"),
            _td(_num(e["p_value"], 2), cls="num"),
            _td(e["created_at"]),
        ]
        for e in reversed(data["evaluations"])
    ]
    body.append('<section id="evaluations"><h2>Evaluations</h2>')
    body.append(
        _table(
            ["version", "split", "rows", "accuracy (95% CI)", "general (95% CI)", "p", "at"],
            evaluations,
        )
        if evaluations
        else '<p class="note">no evaluation yet</p>'
    )
    body.append("</section>")
    body.append(_drift(data["timeline"], timeline_svg, plot_note))
    traffic = [
        [
            _td(r["at"]),
            _td(r["route"]),
            _td(r["label"]),
            _td(_num(r["confidence"]), cls="num"),
            _td(_num(r["latency_ms"]), cls="num"),
        ]
        for r in data["traffic"]
    ]
    body.append('<section id="traffic"><h2>Recent traffic</h2>')
    body.append(
        _table(["at", "route", "label", "confidence", "latency ms"], traffic)
        if traffic
        else '<p class="note">no traffic yet</p>'
    )
    body.append("</section>")
    body.append(_alerts(data["alerts"], with_task=False))
    return _document(
        f"niche · {name}",
        body,
        source=f"/ui/data/tasks/{name}.json",
        refresh_s=refresh_s,
        refreshed_at=data["refreshed_at"],
        logout=logout,
    )


def _gates(gates: list[dict[str, Any]]) -> str:
    parts = ['<section id="gates"><h2>Gate decisions</h2>']
    if not gates:
        parts.append('<p class="note">no gate decision yet</p></section>')
        return "".join(parts)
    rows = []
    for gate in reversed(gates):
        checks = "".join(
            f'<li class="{"passed" if c["passed"] else "failed"}">{_e(c["name"])}: '
            f"{'passed' if c['passed'] else 'failed'} ({_e(_value(c['value']))} / "
            f"{_e(_value(c['threshold']))})</li>"
            for c in gate["checks"]
        )
        verdict = ("passed" if gate["passed"] else "failed") + (
            " (forced)" if gate["forced"] else ""
        )
        rows.append(
            [
                _td(gate["at"]),
                _td(f"v{gate['version']}"),
                _td(gate["alias"]),
                _td(verdict),
                _td(gate["actor"]),
                f'<td class="text"><ul class="checks">{checks}</ul>{_e(gate["why"] or "")}</td>',
            ]
        )
    parts.append(_table(["at", "version", "alias", "decision", "actor", "checks"], rows))
    parts.append("</section>")
    return "".join(parts)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _drift(points: list[dict[str, Any]], svg: str | None, note: str | None) -> str:
    parts = ['<section id="drift"><h2>Drift and agreement</h2>']
    if not points:
        parts.append('<p class="note">no monitoring check yet</p></section>')
        return "".join(parts)
    if svg is not None:
        parts.append(svg)
        parts.append('<p class="note">the plot is drawn with the page: reload to redraw it</p>')
    elif note is not None:
        parts.append(f'<p class="note" id="plot-note">{_e(note)}</p>')
    names = sorted({name for p in points for name in p["signals"]})
    rows = []
    for point in reversed(points):
        cells = [_td(point["at"]), _td(point["model_version"], cls="num")]
        for name in names:
            signal = point["signals"].get(name)
            if signal is None:
                cells.append(_td(None, cls="num"))
                continue
            value = signal["p_value"] if signal["p_value"] is not None else signal["statistic"]
            cells.append(_td(_num(value) + (" ⚠" if signal["alarm"] else ""), cls="num"))
        rows.append(cells)
    parts.append(_table(["checked", "version", *names], rows))
    parts.append("</section>")
    return "".join(parts)


def login_page(*, message: str | None = None) -> str:
    """The login form (it posts the key in the body, never in a URL)."""
    body = ["<h1>Log in</h1>"]
    if message:
        body.append(f'<p class="error" id="login-error" role="alert">{_e(message)}</p>')
    body.append(
        '<form method="post" action="/ui/login" class="login">'
        '<label for="key">admin API key</label> '
        '<input type="password" name="key" id="key" autocomplete="current-password" required> '
        '<button type="submit" id="login">log in</button></form>'
        '<p class="note">create one with <code>niche keys create --scope admin</code></p>'
    )
    return _document("niche · log in", body)


def error_page(status: int, message: str, *, logout: bool = False) -> str:
    """A page saying what went wrong (the message must already be fit for a client)."""
    body = [f"<h1>{_e(status)}</h1>", f'<p class="error" id="error">{_e(message)}</p>']
    return _document(f"niche · {status}", body, logout=logout)
