"""The report's and the dashboard's plots: matplotlib (the ``report`` extra), rendered to
inline SVG with text as paths (no font to load, no external reference), stable ids.

    >>> plt = pyplot()
    >>> svg = inline_svg(plt, domain_figure(plt, board["domains"][0]), "accuracy per task")

Every function takes the JSON forms the views print (``Leaderboard.to_dict()``,
``TcoReport.to_dict()``, :func:`~niche.reports.timelines.timelines`), so a plot shows exactly
the numbers a script reads.
"""

from __future__ import annotations

import html
import io
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from niche.errors import ConfigurationError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "cascade_figure",
    "domain_figure",
    "inline_svg",
    "pyplot",
    "tco_figure",
    "timeline_figure",
]

_SVG_START = re.compile(r"<svg\b")
# Namespace declarations are not loads, but an inline SVG in HTML needs none of them.
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')

# The drift signals a timeline plots as -log10(p) against their alpha, and the estimates it
# plots as a value with its interval.
TESTED_SIGNALS = ("input_drift", "prediction_drift", "confidence_drift", "cascade_rate")
ESTIMATED_SIGNALS = ("agreement", "accuracy", "estimated_accuracy")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, set up for inline SVG; ConfigurationError
    naming the extra when matplotlib is not installed."""
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise ConfigurationError("plots need matplotlib: pip install 'niche[report]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "path"  # text as paths: no font to load
    plt.rcParams["svg.hashsalt"] = "niche-report"  # stable ids across runs
    return plt


def inline_svg(plt: Any, figure: Figure, title: str) -> str:
    """``figure`` as a ``<figure role="img">`` holding an inline ``<svg>`` (the figure is
    closed)."""
    buffer = io.StringIO()
    figure.savefig(
        buffer,
        format="svg",
        bbox_inches="tight",
        metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
    )
    plt.close(figure)
    text = buffer.getvalue()
    start = _SVG_START.search(text)
    svg = text[start.start() :] if start else text
    head, _, rest = svg.partition(">")
    svg = _XMLNS.sub("", head) + ">" + rest
    label = html.escape(title, quote=True)
    return f'<figure role="img" aria-label="{label}">{svg}</figure>'


def domain_figure(plt: Any, domain: dict[str, Any]) -> Figure | None:
    """Champion vs general quality per task of a leaderboard domain (each task's metric:
    accuracy or macro-F1), whiskers at the stored 95 % intervals; None when no task of the
    domain has an evaluated champion."""
    rows = [r for r in domain["tasks"] if _quality(r["specialist"])[0] is not None]
    if not rows:
        return None
    figure: Figure
    figure, axes = plt.subplots(figsize=(max(4.0, 1.4 * len(rows) + 2), 3.2))
    width = 0.38
    for offset, side, label, colour in (
        (-width / 2, "specialist", "champion", "#1f77b4"),
        (width / 2, "general", "general model", "#ff7f0e"),
    ):
        xs, heights, low, high = [], [], [], []
        for i, row in enumerate(rows):
            quality, ci = _quality(row[side])
            if quality is None:
                continue
            ci = ci or [quality, quality]
            xs.append(i + offset)
            heights.append(quality)
            low.append(max(0.0, quality - ci[0]))
            high.append(max(0.0, ci[1] - quality))
        if xs:
            axes.bar(xs, heights, width, yerr=[low, high], capsize=4, label=label, color=colour)
    names = [
        r["task"] + (" (macro-F1)" if r.get("metric", "accuracy") != "accuracy" else "")
        for r in rows
    ]
    axes.set_xticks(range(len(rows)), names, parse_math=False)
    axes.set_ylim(0.0, 1.05)
    axes.set_ylabel("quality (95 % CI)")
    axes.legend(loc="lower right", fontsize="small")
    axes.set_title(domain["name"], parse_math=False)
    return figure


def _quality(side: dict[str, Any] | None) -> tuple[float | None, list[float] | None]:
    """A leaderboard side's quality on its task's metric and its interval (records stored
    before tasks named a metric have accuracy only)."""
    figures = side or {}
    if figures.get("quality") is not None:
        return figures["quality"], figures.get("quality_ci")
    return figures.get("accuracy"), figures.get("accuracy_ci")


def cascade_figure(plt: Any, curves: dict[str, list[dict[str, Any]]]) -> Figure:
    """Coverage vs accuracy per task, one line each."""
    figure: Figure
    figure, axes = plt.subplots(figsize=(5.0, 3.2))
    for task, curve in curves.items():
        points = sorted(curve, key=lambda p: p["coverage"])
        axes.plot(
            [p["coverage"] for p in points],
            [p["accuracy"] for p in points],
            marker="o",
            label=task,
        )
    axes.set_xlabel("coverage (specialist share)")
    axes.set_ylabel("accuracy")
    axes.set_xlim(0.0, 1.02)
    axes.legend(fontsize="small")
    return figure


def tco_figure(plt: Any, costs: dict[str, Any]) -> Figure:
    """Cumulative cost, general-only vs portfolio, for the portfolio and each specialised
    task."""
    series = [("portfolio", costs["portfolio"]["months"])]
    series += [(row["task"], row["months"]) for row in costs["tasks"] if row["months"]]
    figure: Figure
    figure, axes_list = plt.subplots(
        1, len(series), figsize=(3.6 * len(series), 3.0), squeeze=False
    )
    for axes, (name, months) in zip(axes_list[0], series, strict=True):
        xs = [m["month"] for m in months]
        general: list[float] = []
        portfolio: list[float] = []
        for m in months:
            general.append((general[-1] if general else 0.0) + m["general_usd"])
            portfolio.append((portfolio[-1] if portfolio else 0.0) + m["portfolio_usd"])
        axes.plot(xs, general, marker="o", label="general-only")
        axes.plot(xs, portfolio, marker="s", label="portfolio")
        axes.set_xlabel("month")
        axes.set_ylabel("cumulative USD")
        axes.set_xticks(xs)
        axes.set_title(name, parse_math=False)
        axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def timeline_figure(plt: Any, task: str, points: list[dict[str, Any]]) -> Figure | None:
    """A task's monitoring checks over time (``points``: its
    :func:`~niche.reports.timelines.timelines` entry): on top, each drift test's
    -log10(p) with its alpha as a dashed line (above it: an alarm); below, agreement with the
    general model and accuracy with their 95 % intervals and floors. None without points."""
    if not points:
        return None
    at = [datetime.fromisoformat(p["at"]) for p in points]
    figure: Figure
    figure, (drift, estimates) = plt.subplots(2, 1, figsize=(6.4, 4.4), sharex=True)
    for name in TESTED_SIGNALS:
        values = [_neg_log10(p["signals"].get(name, {}).get("p_value")) for p in points]
        if any(v is not None for v in values):
            line = drift.plot(at, _gaps(values), marker=".", label=name)[0]
            alpha = next(
                (p["signals"][name]["threshold"] for p in points if name in p["signals"]), None
            )
            if alpha:
                drift.axhline(_neg_log10(alpha), color=line.get_color(), ls="--", lw=0.8)
    drift.set_ylabel("-log10 p")
    drift.set_title(task, parse_math=False)
    if drift.get_legend_handles_labels()[0]:
        drift.legend(fontsize="x-small", loc="upper left")
    for name in ESTIMATED_SIGNALS:
        series = [p["signals"].get(name, {}) for p in points]
        values = [s.get("statistic") for s in series]
        if not any(v is not None for v in values):
            continue
        line = estimates.plot(at, _gaps(values), marker=".", label=name)[0]
        low = [(s.get("interval") or [None, None])[0] for s in series]
        high = [(s.get("interval") or [None, None])[1] for s in series]
        if any(v is not None for v in low):
            estimates.fill_between(
                at, _gaps(low), _gaps(high), color=line.get_color(), alpha=0.15, lw=0
            )
    estimates.set_ylabel("agreement / accuracy")
    estimates.set_ylim(0.0, 1.02)
    if estimates.get_legend_handles_labels()[0]:
        estimates.legend(fontsize="x-small", loc="lower left")
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def _neg_log10(p: float | None) -> float | None:
    import math

    if p is None:
        return None
    return -math.log10(max(p, 1e-300))


def _gaps(values: list[float | None]) -> list[float]:
    """None as NaN: matplotlib leaves a gap."""
    return [float("nan") if v is None else float(v) for v in values]
