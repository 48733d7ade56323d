"""The specialised leaderboard: per domain, each task's champion against the general model.

    >>> board = leaderboard(domain="banking", since="30d")
    >>> board.domains[0].score, board.score
    (0.91, 0.88)

Every figure comes from the registry: the champion's latest stored evaluation on the test
split (accuracy with its 95 % interval for both sides, the paired difference and its McNemar
p-value from the stored ``comparison``, latency p95, the cost per 1M requests recomputed from
the stored usage at the task's general prices and ``NICHE_CPU_HOUR_USD``, Wh per query from
the stored CPU seconds at ``NICHE_CPU_WATTS_PER_CORE``), the captured traffic in the window
(traffic share, cascade rate) and the open alerts.

Each task is ranked and scored on its own metric (``metric`` in its spec: accuracy, or
macro-F1 for a skewed label set): a row's ``quality``, its interval, the difference vs the
general model and its p-value are that metric's (for macro-F1, the stored paired macro-F1
bootstrap and its p-value); the ``accuracy`` fields stay accuracy's.

Scores (:data:`FORMULA`): a task's score is its champion's quality on its metric (None
without a champion or its test evaluation). A set of tasks (a domain, the portfolio) scores
``sum(w_i * acc_i) / sum(w_i)`` over its tasks with a score, where ``w_i =
leaderboard_weight_i * traffic_share_i`` and ``traffic_share_i`` is the task's records in the window over the records
of all tasks in it; when none of those tasks had traffic, ``w_i = leaderboard_weight_i``. The
set's quality vs general is the same weighted mean of each task's difference (champion minus
general model, the stored paired difference).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from niche.errors import ValidationError
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.registry import Registry
    from niche.registry.records import EvaluationRecord
    from niche.registry.tasks import TaskSpec

__all__ = [
    "FORMULA",
    "NO_DOMAIN",
    "DomainBoard",
    "Leaderboard",
    "LeaderboardRow",
    "Side",
    "leaderboard",
]

NO_DOMAIN: Final = "(none)"
"""The domain tasks without a ``domain`` tag are listed under."""

FORMULA: Final = (
    "score = sum(w_i * q_i) / sum(w_i) over the tasks with a champion test evaluation, "
    "q_i = the champion's quality on task i's own metric (accuracy, or macro-F1 for a task "
    "whose spec says metric: macro_f1); "
    "w_i = leaderboard_weight_i * traffic_share_i (leaderboard_weight_i alone when none of "
    "those tasks had traffic in the window); traffic_share_i = the task's records / the "
    "records of all tasks in the window; quality_vs_general = the same weighted mean of "
    "(champion q_i - general q_i), the stored paired difference on that metric"
)
"""How domain and portfolio scores are computed (also in the JSON as ``"formula"``)."""

_SECONDS_PER_HOUR = 3600.0
MET, NOT_MET, UNCHECKED = "met", "not met", "unchecked"


@dataclass(frozen=True)
class Side:
    """One side (champion or general model) of a row: its figures on the evaluation's rows.

    ``quality``/``quality_ci`` are the task's metric (accuracy's figures for an accuracy task).
    """

    accuracy: float | None
    accuracy_ci: tuple[float, float] | None
    latency_p95_ms: float | None
    cost_per_1m_usd: float | None
    wh_per_query: float | None
    quality: float | None = None
    quality_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the intervals as ``[low, high]``)."""
        return {
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.accuracy_ci) if self.accuracy_ci is not None else None,
            "quality": self.quality,
            "quality_ci": list(self.quality_ci) if self.quality_ci is not None else None,
            "latency_p95_ms": self.latency_p95_ms,
            "cost_per_1m_usd": self.cost_per_1m_usd,
            "wh_per_query": self.wh_per_query,
        }


@dataclass(frozen=True)
class LeaderboardRow:
    """One task: its champion vs the general model, its traffic, SLA status and open alerts.

    ``champion`` None: the task has no champion (``note`` says so, no score). ``sla`` maps
    each SLA field to ``met``, ``not met`` or ``unchecked`` (the field unset, or the
    evaluation lacks its figure); ``min_quality_vs_general`` is met when the stored 95 %
    lower limit of the paired difference clears it. ``metric`` is the task's (what
    ``score``, ``difference`` and ``p_value`` measure).
    """

    task: str
    domain: str
    weight: float
    champion: int | None
    evaluation_id: int | None
    rows: int | None
    specialist: Side | None
    general: Side | None
    difference: float | None
    difference_ci: tuple[float, float] | None
    p_value: float | None
    requests: int
    traffic_share: float | None
    cascade_rate: float | None
    sla: dict[str, str]
    open_alerts: int
    note: str | None = None
    metric: str = "accuracy"

    @property
    def score(self) -> float | None:
        """The task's score: its champion's test quality on its metric (None without one)."""
        return self.specialist.quality if self.specialist is not None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "task": self.task,
            "domain": self.domain,
            "weight": self.weight,
            "metric": self.metric,
            "champion": self.champion,
            "evaluation_id": self.evaluation_id,
            "rows": self.rows,
            "score": self.score,
            "specialist": self.specialist.to_dict() if self.specialist is not None else None,
            "general": self.general.to_dict() if self.general is not None else None,
            "difference": self.difference,
            "difference_ci": list(self.difference_ci) if self.difference_ci else None,
            "p_value": self.p_value,
            "requests": self.requests,
            "traffic_share": self.traffic_share,
            "cascade_rate": self.cascade_rate,
            "sla": dict(self.sla),
            "open_alerts": self.open_alerts,
            "note": self.note,
        }


@dataclass(frozen=True)
class DomainBoard:
    """A domain's rows and its weighted score and quality vs general (:data:`FORMULA`)."""

    name: str
    rows: list[LeaderboardRow]
    score: float | None
    quality_vs_general: float | None
    requests: int
    traffic_share: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "score": self.score,
            "quality_vs_general": self.quality_vs_general,
            "requests": self.requests,
            "traffic_share": self.traffic_share,
            "tasks": [row.to_dict() for row in self.rows],
        }


@dataclass(frozen=True)
class Leaderboard:
    """Every domain's board and the portfolio's score, over the traffic since ``since``.

    >>> leaderboard().to_dict()["portfolio"]["score"]
    0.88
    """

    since: datetime | None
    domains: list[DomainBoard]
    score: float | None
    quality_vs_general: float | None
    requests: int
    formula: str = field(default=FORMULA)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"since", "formula", "domains": [...], "portfolio": {...}}``."""
        return {
            "since": self.since.isoformat() if self.since is not None else None,
            "formula": self.formula,
            "domains": [domain.to_dict() for domain in self.domains],
            "portfolio": {
                "score": self.score,
                "quality_vs_general": self.quality_vs_general,
                "requests": self.requests,
                "tasks": sum(len(domain.rows) for domain in self.domains),
            },
        }


def leaderboard(
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    domain: str | None = None,
    since: str | None = None,
    now: datetime | None = None,
) -> Leaderboard:
    """The leaderboard of every task (or of ``domain``'s), traffic counted since ``since``
    (ISO-8601 or a duration back from ``now``, ``30d``; None: all captured traffic).

    Traffic shares are over all tasks, whatever ``domain``; the portfolio score is over the
    tasks listed. An unknown ``domain`` raises :class:`~niche.errors.ValidationError` naming
    the known ones.

        >>> leaderboard(domain="banking", since="30d").domains[0].rows[0].traffic_share
        0.6
    """
    from niche.workflows._context import resolve
    from niche.workflows.traffic import parse_since

    settings, registry = resolve(settings, registry)
    clock = now or datetime.now(UTC)
    start = parse_since(since, clock=lambda: clock)
    specs = [record.spec for record in registry.tasks.all()]
    known = sorted({_domain(spec) for spec in specs}, key=_domain_order)
    if domain is not None and domain not in known:
        raise ValidationError(
            f"no domain {domain!r} (known: {', '.join(known) or 'none, no task yet'})",
            param="domain",
        )
    counts = {spec.name: registry.traffic.count(spec.name, since=start) for spec in specs}
    total = sum(counts.values())
    chosen = [spec for spec in specs if domain is None or _domain(spec) == domain]
    rows = [_row(registry, settings, spec, counts[spec.name], total, start) for spec in chosen]
    boards = []
    for name in sorted({row.domain for row in rows}, key=_domain_order):
        members = [row for row in rows if row.domain == name]
        requests = sum(row.requests for row in members)
        boards.append(
            DomainBoard(
                name=name,
                rows=members,
                score=_weighted(members, lambda row: row.score),
                quality_vs_general=_weighted(members, lambda row: row.difference),
                requests=requests,
                traffic_share=requests / total if total else None,
            )
        )
    return Leaderboard(
        since=start,
        domains=boards,
        score=_weighted(rows, lambda row: row.score),
        quality_vs_general=_weighted(rows, lambda row: row.difference),
        requests=sum(row.requests for row in rows),
    )


def _domain(spec: TaskSpec) -> str:
    return spec.domain or NO_DOMAIN


def _domain_order(name: str) -> tuple[bool, str]:
    return (name == NO_DOMAIN, name)


def _weighted(
    rows: Iterable[LeaderboardRow], value: Callable[[LeaderboardRow], float | None]
) -> float | None:
    """``sum(w_i * v_i) / sum(w_i)`` over the rows with a value (:data:`FORMULA`)."""
    scored = [(row, v) for row in rows if (v := value(row)) is not None]
    weights = [row.weight * (row.traffic_share or 0.0) for row, _ in scored]
    if sum(weights) == 0:
        weights = [row.weight for row, _ in scored]
    if sum(weights) == 0:
        return None
    return sum(w * v for w, (_, v) in zip(weights, scored, strict=True)) / sum(weights)


def _row(
    registry: Registry,
    settings: Settings,
    spec: TaskSpec,
    requests: int,
    total: int,
    start: datetime | None,
) -> LeaderboardRow:
    from niche.workflows.monitor_signals import CASCADED_ROUTES

    cascaded = (
        sum(
            n
            for route, n in registry.traffic.routes(spec.name, since=start).items()
            if route in CASCADED_ROUTES
        )
        if requests
        else 0
    )
    base: dict[str, Any] = {
        "task": spec.name,
        "domain": _domain(spec),
        "weight": spec.leaderboard_weight,
        "requests": requests,
        "traffic_share": requests / total if total else None,
        "cascade_rate": cascaded / requests if requests else None,
        "open_alerts": len(registry.monitoring.alerts(spec.name, state="open")),
        "metric": spec.metric,
    }
    empty: dict[str, Any] = {
        "evaluation_id": None,
        "rows": None,
        "specialist": None,
        "general": None,
        "difference": None,
        "difference_ci": None,
        "p_value": None,
        "sla": {},
    }
    champion = registry.promotions.get(spec.name, "champion")
    if champion is None:
        return LeaderboardRow(**base, **empty, champion=None, note="no champion")
    tested = [
        e for e in registry.models.evaluations(spec.name, champion.version) if e.split == "test"
    ]
    if not tested:
        return LeaderboardRow(
            **base,
            **empty,
            champion=champion.version,
            note=f"champion v{champion.version} has no test evaluation",
        )
    evaluation = tested[-1]
    mine = _side(evaluation, spec, settings, general=False)
    theirs = _side(evaluation, spec, settings, general=True) if evaluation.general else None
    comparison = evaluation.comparison or {}
    paired = comparison.get("paired_test") or {}
    boot = paired.get("bootstrap") or {}
    p_value = paired.get("p_value")
    if spec.metric != "accuracy":
        # The paired bootstrap on the task's metric, stored with the evaluation since tasks
        # name their metric; an older evaluation (or one on another metric) has none.
        stored = (
            comparison.get("paired_metric") if comparison.get("metric") == spec.metric else None
        )
        boot = stored or {}
        p_value = boot.get("p_value")
    difference = boot.get("diff")
    if difference is None and theirs is not None and theirs.quality is not None:
        difference = (mine.quality or 0.0) - theirs.quality
    ci = (boot["ci_low"], boot["ci_high"]) if "ci_low" in boot and "ci_high" in boot else None
    return LeaderboardRow(
        **base,
        champion=champion.version,
        evaluation_id=evaluation.id,
        rows=evaluation.metrics.get("n"),
        specialist=mine,
        general=theirs,
        difference=difference,
        difference_ci=ci,
        p_value=p_value,
        sla=_sla(spec, mine, ci),
    )


def _side(
    evaluation: EvaluationRecord, spec: TaskSpec, settings: Settings, *, general: bool
) -> Side:
    from niche.evaluation.cost import Prices

    figures = (evaluation.general if general else evaluation.metrics) or {}
    prices = Prices(
        cpu_hour_usd=settings.get("NICHE_CPU_HOUR_USD"),
        input_per_1m_tokens_usd=spec.general.price_input_per_1m_tokens_usd,
        output_per_1m_tokens_usd=spec.general.price_output_per_1m_tokens_usd,
    )
    cost = evaluation.cost_per_1m_usd(prices, general=general)
    usage = (evaluation.general_usage if general else evaluation.usage) or {}
    if usage.get("rows"):
        watts = float(settings.get("NICHE_CPU_WATTS_PER_CORE"))
        wh = float(usage.get("compute_s") or 0.0) / usage["rows"] * watts / _SECONDS_PER_HOUR
    else:
        wh = figures.get("wh_per_query")
    ci = figures.get("accuracy_ci")
    quality_ci = figures.get(f"{spec.metric}_ci")
    return Side(
        accuracy=figures.get("accuracy"),
        accuracy_ci=(ci[0], ci[1]) if ci else None,
        quality=figures.get(spec.metric),
        quality_ci=(quality_ci[0], quality_ci[1]) if quality_ci else None,
        latency_p95_ms=figures.get("latency_p95_ms"),
        cost_per_1m_usd=cost if cost is not None else figures.get("cost_per_1m_usd"),
        wh_per_query=wh,
    )


def _sla(spec: TaskSpec, mine: Side, difference_ci: tuple[float, float] | None) -> dict[str, str]:
    sla = spec.sla
    cost_1k = mine.cost_per_1m_usd / 1000 if mine.cost_per_1m_usd is not None else None
    checks: list[tuple[str, float | None, float | None, bool]] = [
        ("latency_p95_ms", sla.latency_p95_ms, mine.latency_p95_ms, False),
        ("min_quality", sla.min_quality, mine.quality, True),
        (
            "min_quality_vs_general",
            sla.min_quality_vs_general,
            difference_ci[0] if difference_ci else None,
            True,
        ),
        ("max_cost_per_1k_usd", sla.max_cost_per_1k_usd, cost_1k, False),
    ]
    status = {}
    for name, bound, value, floor in checks:
        if bound is None or value is None:
            status[name] = UNCHECKED
        else:
            status[name] = MET if (value >= bound if floor else value <= bound) else NOT_MET
    return status
