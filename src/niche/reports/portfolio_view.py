"""What the dashboard shows, gathered from the registry as JSON-ready dicts: the portfolio
overview (the leaderboard, open alerts) and one task's page (versions, alias history, gate
decisions, evaluations, drift timeline, recent traffic).

    >>> data = overview(settings, registry=registry)
    >>> data["tasks"]["banking77"]["quality"]  # the leaderboard row's champion quality (its metric)
    0.91
    >>> task_view(registry, "banking77", board=data["leaderboard"])["fields"]["requests"]
    120

The pages (:mod:`niche.reports.dashboard_html`) are rendered from exactly these dicts, and the
dashboard serves them as JSON too, so a script or a browser test reads the same numbers. Every
figure of the overview is the leaderboard's (:func:`~niche.reports.leaderboard.leaderboard`),
so it equals ``niche leaderboard --json`` over the same window.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from niche.reports.leaderboard import leaderboard
from niche.reports.timelines import timeline
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.registry import Registry

__all__ = ["OVERVIEW_FIELDS", "TASK_FIELDS", "TRAFFIC_SHOWN", "overview", "row_fields", "task_view"]

OVERVIEW_FIELDS: Final = (
    "champion",
    "quality",
    "general_quality",
    "vs_general",
    "traffic_share",
    "cascade_rate",
    "cost_per_1m_usd",
    "open_alerts",
)
"""The figures of a task's row on the overview (``data-field`` names), from its leaderboard row."""

TASK_FIELDS: Final = ("champion", "quality", "general_quality", "requests")
"""The key figures of a task's page."""

TRAFFIC_SHOWN: Final = 50
"""Most recent traffic records a task page lists."""


def row_fields(row: dict[str, Any] | None) -> dict[str, Any]:
    """A leaderboard row (``LeaderboardRow.to_dict()``) as the dashboard's figures; all None
    for a task the leaderboard does not list (yet)."""
    if row is None:
        return {**dict.fromkeys((*OVERVIEW_FIELDS, "requests")), "metric": None}
    mine, theirs = row["specialist"] or {}, row["general"] or {}
    return {
        "champion": row["champion"],
        # On the task's metric (accuracy or macro-F1), as the difference and the scores are.
        "quality": mine.get("quality", mine.get("accuracy")),
        "general_quality": theirs.get("quality", theirs.get("accuracy")),
        "vs_general": row["difference"],
        "traffic_share": row["traffic_share"],
        "cascade_rate": row["cascade_rate"],
        "cost_per_1m_usd": mine.get("cost_per_1m_usd"),
        "open_alerts": row["open_alerts"],
        "requests": row["requests"],
        "metric": row.get("metric", "accuracy"),
    }


def overview(
    settings: Settings,
    *,
    registry: Registry,
    since: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The overview: ``{"refreshed_at", "since", "fields": {"portfolio_score", …},
    "domains": [{"name", "score", "quality_vs_general", "tasks": [names]}],
    "tasks": {name: figures}, "notes": {name: note}, "alerts": [...], "leaderboard":
    Leaderboard.to_dict()}``; ``fields`` are ``portfolio_score``, ``portfolio_vs_general``,
    ``portfolio_requests``, ``portfolio_tasks`` and ``portfolio_open_alerts``."""
    clock = now or datetime.now(UTC)
    board = leaderboard(settings, registry=registry, since=since, now=clock).to_dict()
    alerts = [alert.to_dict() for alert in registry.monitoring.alerts(state="open")]
    portfolio = board["portfolio"]
    return {
        "refreshed_at": clock.isoformat(),
        "since": board["since"],
        "fields": {
            "portfolio_score": portfolio["score"],
            "portfolio_vs_general": portfolio["quality_vs_general"],
            "portfolio_requests": portfolio["requests"],
            "portfolio_tasks": portfolio["tasks"],
            "portfolio_open_alerts": len(alerts),
        },
        "domains": [
            {
                "name": domain["name"],
                "score": domain["score"],
                "quality_vs_general": domain["quality_vs_general"],
                "tasks": [row["task"] for row in domain["tasks"]],
            }
            for domain in board["domains"]
        ],
        "tasks": {
            row["task"]: row_fields(row) for domain in board["domains"] for row in domain["tasks"]
        },
        "notes": {
            row["task"]: row["note"]
            for domain in board["domains"]
            for row in domain["tasks"]
            if row["note"]
        },
        "alerts": alerts,
        "leaderboard": board,
    }


def _board_row(board: dict[str, Any] | None, task: str) -> dict[str, Any] | None:
    for domain in (board or {}).get("domains", []):
        for row in domain["tasks"]:
            if row["task"] == task:
                return dict(row)
    return None


def task_view(
    registry: Registry,
    task: str,
    *,
    board: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One task's page: its key figures (from ``board``, the overview's leaderboard, so they
    equal the overview's), versions, aliases and their history, gate decisions with their
    checks, evaluations, monitoring timeline, the newest :data:`TRAFFIC_SHOWN` traffic records
    (newest first) and open alerts. An unknown task raises
    :class:`~niche.errors.TaskNotFoundError`."""
    record = registry.tasks.get(task)
    versions = registry.models.all(task)
    row = _board_row(board, task)
    evaluations = [
        _evaluation(evaluation)
        for version in versions
        for evaluation in registry.models.evaluations(task, version.version)
    ]
    traffic = registry.traffic.query(task, limit=TRAFFIC_SHOWN)
    return {
        "task": record.name,
        "domain": record.spec.domain,
        "metric": record.spec.metric,
        "labels": list(record.spec.labels or []),
        "refreshed_at": (now or datetime.now(UTC)).isoformat(),
        "fields": {name: row_fields(row)[name] for name in TASK_FIELDS},
        "row": row,
        "versions": [
            {
                "version": v.version,
                "kind": v.kind,
                "created_at": v.created_at.isoformat(),
                "dataset_fingerprint": v.dataset_fingerprint,
            }
            for v in versions
        ],
        "aliases": registry.promotions.aliases(task),
        "alias_history": [event.to_dict() for event in registry.promotions.history(task)],
        "gates": [_gate(gate.to_dict()) for gate in registry.promotions.gates(task)],
        "evaluations": evaluations,
        "timeline": timeline(registry, task),
        "traffic": [
            {
                "id": r.id,
                "at": r.at.isoformat(),
                "route": r.route,
                "label": r.specialist_label if r.route == "specialist" else r.general_label,
                "confidence": r.specialist_confidence,
                "latency_ms": r.latency_ms,
                "model_version": r.model_version,
            }
            for r in reversed(traffic)
        ],
        "alerts": [a.to_dict() for a in registry.monitoring.alerts(task, state="open")],
    }


def _gate(gate: dict[str, Any]) -> dict[str, Any]:
    checks = [
        {key: check.get(key) for key in ("name", "passed", "value", "threshold")}
        for check in gate.get("checks") or []
    ]
    keep = ("id", "version", "alias", "passed", "forced", "why", "actor", "at")
    return {**{key: gate.get(key) for key in keep}, "checks": checks}


def _evaluation(evaluation: Any) -> dict[str, Any]:
    metrics = evaluation.metrics or {}
    general = evaluation.general or {}
    paired = (evaluation.comparison or {}).get("paired_test") or {}
    return {
        "id": evaluation.id,
        "version": evaluation.version,
        "split": evaluation.split,
        "rows": metrics.get("n"),
        "accuracy": metrics.get("accuracy"),
        "accuracy_ci": metrics.get("accuracy_ci"),
        "general_accuracy": general.get("accuracy"),
        "general_accuracy_ci": general.get("accuracy_ci"),
        "p_value": paired.get("p_value"),
        "created_at": evaluation.created_at.isoformat(),
    }
