"""``niche demo portfolio`` (what ``make demo`` runs): a portfolio of specialists, each built
the way ``niche quickstart`` builds one, then a little real traffic and one monitoring check
per task, so that the leaderboard, the cost of ownership and the report have something to show.

    >>> result = build_portfolio(on_step=print)
    >>> [(task.task, task.domain, task.champion) for task in result.tasks]
    [('banking77', 'banking', 1), ('assistant.banking', 'banking', 1), ...]

In the settings' registry (``NICHE_HOME``), for each :class:`PortfolioTask`:

1. curate → train → evaluate against the task's general model (the built-in zero-shot model
   unless the task names another) → gate → champion (:func:`~niche.workflows.quickstart`),
   the task tagged with its domain. A task that already has a champion is reused as it is
   (``retrain=True`` runs the quickstart again: the same data gives the same model, byte for
   byte, so its version stays champion);
2. a gateway (``niche serve`` in a subprocess on a free port, as ``niche demo loop`` runs one)
   in front of every task, and each task's share of the traffic (texts of its champion's
   held-out test split, gold labels posted back as feedback for a share of them) replayed
   through it: the leaderboard's traffic shares and cascade rates come from what it captured;
3. one stored monitoring check per task (drift, agreement with the general model, SLA): the
   points of the report's timelines. Every re-run adds one more.

The gateway runs as its own process: this module talks to it over HTTP
(:mod:`niche.workflows.replay`) and imports nothing of :mod:`niche.gateway`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from niche.errors import NotFoundError, ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.workflows._context import resolve
from niche.workflows.data import DataSpec
from niche.workflows.demo import DemoStep

if TYPE_CHECKING:
    from niche.data import DatasetVersion, Rows
    from niche.registry import ModelVersionRecord, Registry
    from niche.workflows.quickstart import QuickstartResult

__all__ = [
    "DEFAULT_PORTFOLIO",
    "DEMO_GENERAL_PRICES",
    "FEEDBACK_SHARE",
    "BuiltTask",
    "PortfolioResult",
    "PortfolioTask",
    "build_portfolio",
]


@dataclass(frozen=True)
class PortfolioTask:
    """One task of the portfolio: its ``name``, its ``domain`` tag, where its labelled rows
    come from (``data``), and how many requests of the demo's traffic it gets.

        >>> PortfolioTask("assistant.travel", "travel", DataSpec(dataset="clinc150/travel"), 100)
    """

    name: str
    domain: str
    data: DataSpec
    requests: int = 100

    @property
    def source(self) -> str:
        """The catalog dataset's name or the file's path."""
        return self.data.dataset or str(self.data.data)


DEFAULT_PORTFOLIO: tuple[PortfolioTask, ...] = (
    PortfolioTask("banking77", "banking", DataSpec(dataset="banking77"), 200),
    PortfolioTask("assistant.banking", "banking", DataSpec(dataset="clinc150/banking"), 120),
    PortfolioTask("sms_spam", "messaging", DataSpec(dataset="sms_spam"), 150),
    PortfolioTask("assistant.travel", "travel", DataSpec(dataset="clinc150/travel"), 100),
)
"""What ``make demo`` builds: BANKING77's support intents and CLINC150's banking assistant
queries (two tasks of one domain), SMS spam, and CLINC150's travel queries; each task gets a
different share of the traffic (200, 120, 150 and 100 requests)."""

DEMO_GENERAL_PRICES = (2.5, 10.0)
"""USD per 1M input and output tokens the demo prices its tasks' general model at: the list
price of a hosted frontier model (GPT-4o's in 2025). The built-in zero-shot model answers in
its place and costs nothing, so unpriced the cost of ownership could only say "keep general".
A task with a priced or an ``openai`` general model keeps its own."""

FEEDBACK_SHARE = 0.2
"""The share of the replayed requests whose gold label is posted back as feedback."""

# The demo's gateway: a share of the traffic shadowed by the general model (the agreement the
# monitor measures), quick capture flushes (feedback finds its record), a quick reload.
_GATEWAY_SETTINGS = {
    "NICHE_GATEWAY_SHADOW_FRACTION": "0.2",
    "NICHE_GATEWAY_CAPTURE_FLUSH_MS": "100",
    "NICHE_GATEWAY_REFRESH_S": "0.5",
}


@dataclass
class BuiltTask:
    """What the demo did for one task: ``built`` is ``trained`` or ``reused`` (it had a
    champion already); ``gate`` says what the champion gate decided (``promoted``,
    ``already champion``, ``refused: <checks>``, or ``reused``); ``traffic`` and ``monitor``
    summarise its replay and its monitoring check."""

    task: str
    domain: str
    source: str
    built: str
    champion: int | None
    gate: str
    accuracy: float | None
    general_accuracy: float | None
    traffic: dict[str, Any] = field(default_factory=dict)
    monitor: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "domain": self.domain,
            "source": self.source,
            "built": self.built,
            "champion": self.champion,
            "gate": self.gate,
            "accuracy": self.accuracy,
            "general_accuracy": self.general_accuracy,
            "traffic": self.traffic,
            "monitor": self.monitor,
            "timings_s": self.timings_s,
        }


@dataclass(frozen=True)
class PortfolioResult:
    """Every task the demo built, where its gateway ran, and how long each phase took
    (``timings_s``: ``build``, ``gateway``, ``traffic``, ``monitor``)."""

    home: str
    url: str
    tasks: list[BuiltTask]
    timings_s: dict[str, float]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "url": self.url,
            "tasks": [task.to_dict() for task in self.tasks],
            "timings_s": self.timings_s,
            "seconds": round(self.seconds, 1),
        }


def build_portfolio(
    settings: Settings | None = None,
    *,
    portfolio: Sequence[PortfolioTask] = DEFAULT_PORTFOLIO,
    retrain: bool = False,
    general_prices: tuple[float, float] | None = DEMO_GENERAL_PRICES,
    feedback_share: float = FEEDBACK_SHARE,
    seed: int | None = None,
    on_step: Callable[[DemoStep], None] | None = None,
    progress: Progress = NO_PROGRESS,
) -> PortfolioResult:
    """Build ``portfolio`` in the settings' registry, replay its traffic through a gateway and
    check each task once (see the module); ``on_step`` is called with each step as it ends.

    ``general_prices`` (USD per 1M input, output tokens; None: leave them) price the general
    model of each task whose general model is the unpriced zero-shot one (see
    :data:`DEMO_GENERAL_PRICES`).

    Bad input (no task, a task listed twice, a share or a request count out of range) is a
    :class:`~niche.errors.ValidationError` before any work.

    >>> build_portfolio(portfolio=DEFAULT_PORTFOLIO[:2], retrain=True).tasks[0].built
    'trained'
    """
    _check(portfolio, feedback_share, general_prices)
    settings, registry = resolve(settings, None)
    seed = settings.get("NICHE_SEED") if seed is None else seed
    started = time.monotonic()
    timings: dict[str, float] = {}

    def step(name: str, title: str, **numbers: Any) -> None:
        if on_step is not None:
            on_step(DemoStep(name, title, numbers))

    with registry:
        clock = time.perf_counter()
        built = []
        for number, item in enumerate(portfolio, 1):
            where = f"[{number}/{len(portfolio)}] {item.name} ({item.source}, domain {item.domain})"
            with progress.task(where, total=None):
                task, rows = _build(
                    item, settings, registry, retrain, general_prices, seed, progress
                )
            built.append((task, rows))
            step("task", _task_line(task), **task.to_dict())
        timings["build"] = round(time.perf_counter() - clock, 3)
        url, traffic_s, gateway_s = _serve_traffic(
            built, settings, portfolio, feedback_share, seed, progress, step
        )
        timings["gateway"] = round(gateway_s, 3)
        timings["traffic"] = round(traffic_s, 3)
        clock = time.perf_counter()
        tasks = [_check_once(task, settings, registry, seed, progress, step) for task, _ in built]
        timings["monitor"] = round(time.perf_counter() - clock, 3)
    return PortfolioResult(
        home=str(settings.home.resolve()),
        url=url,
        tasks=tasks,
        timings_s=timings,
        seconds=time.monotonic() - started,
    )


# -- the steps ------------------------------------------------------------------------------


def _check(
    portfolio: Sequence[PortfolioTask],
    feedback_share: float,
    general_prices: tuple[float, float] | None,
) -> None:
    if not portfolio:
        raise ValidationError("the portfolio needs at least one task", param="portfolio")
    names = [item.name for item in portfolio]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValidationError(
            f"the portfolio lists {', '.join(twice)} more than once", param="portfolio"
        )
    for item in portfolio:
        if item.requests < 1:
            raise ValidationError(
                f"task {item.name}: requests must be at least 1, got {item.requests}",
                param="portfolio",
            )
    if not 0 <= feedback_share <= 1:
        raise ValidationError(
            f"feedback share must be in [0, 1], got {feedback_share}", param="feedback_share"
        )
    if general_prices is not None and (
        len(general_prices) != 2 or not all(price >= 0 for price in general_prices)
    ):
        raise ValidationError(
            "general prices are two USD amounts per 1M tokens (input, output), not negative; "
            f"got {general_prices!r}",
            param="general_prices",
        )


def _build(
    item: PortfolioTask,
    settings: Settings,
    registry: Registry,
    retrain: bool,
    prices: tuple[float, float] | None,
    seed: int,
    progress: Progress,
) -> tuple[BuiltTask, Rows]:
    """The task's champion (trained by the quickstart, or the one it has) and the rows its
    traffic is drawn from (the champion's held-out test split)."""
    from niche.workflows.quickstart import quickstart

    champion = None if retrain else _champion(registry, item.name)
    if champion is not None:
        _tag(registry, item, prices)
        accuracy, general = _stored_accuracy(registry, champion)
        task = BuiltTask(
            task=item.name,
            domain=_domain(registry, item),
            source=item.source,
            built="reused",
            champion=champion.version,
            gate="reused",
            accuracy=accuracy,
            general_accuracy=general,
        )
        return task, _test_rows(_dataset(registry, settings, champion))
    result = quickstart(
        item.data,
        settings,
        task=item.name,
        domain=item.domain,
        seed=seed,
        registry=registry,
        progress=progress,
    )
    _tag(registry, item, prices)
    evaluation = result.evaluation.to_dict()
    champion = _champion(registry, item.name)
    task = BuiltTask(
        task=item.name,
        domain=_domain(registry, item),
        source=item.source,
        built="trained",
        champion=champion.version if champion is not None else None,
        gate=_gate(result),
        accuracy=evaluation["specialist"].get("accuracy"),
        general_accuracy=evaluation["general"].get("accuracy"),
        timings_s=dict(result.timings_s),
    )
    return task, _test_rows(result.version)


def _serve_traffic(
    built: list[tuple[BuiltTask, Rows]],
    settings: Settings,
    portfolio: Sequence[PortfolioTask],
    feedback_share: float,
    seed: int,
    progress: Progress,
    step: Callable[..., None],
) -> tuple[str, float, float]:
    """Replay each task's share through one gateway; its URL, the seconds the replays took
    and the seconds the gateway took to start (and to serve every champion)."""
    from niche.workflows.demo import serve_subprocess
    from niche.workflows.gateway_client import wait_until_served
    from niche.workflows.replay import replay_rows

    environ = _gateway_environ(settings)
    home = settings.home.resolve()
    clock = time.perf_counter()
    with ExitStack() as stack:
        with progress.task("starting the gateway (niche serve)", total=None):
            url = stack.enter_context(serve_subprocess(environ, home))
            for task, _ in built:
                if task.champion is not None:
                    wait_until_served(url, task.task, task.champion, timeout_s=60.0)
        gateway_s = time.perf_counter() - clock
        step("gateway", f"gateway at {url} (log: {home / 'gateway.log'})", url=url)
        clock = time.perf_counter()
        requests = {item.name: item.requests for item in portfolio}
        for task, rows in built:
            result = replay_rows(
                rows,
                task=task.task,
                url=url,
                settings=settings,
                limit=requests[task.task],
                feedback_share=feedback_share,
                seed=seed,
                progress=progress,
            )
            numbers = {
                "sent": result.sent,
                "answered": result.answered,
                "agreement": result.agreement,
                "errors": result.errors,
                "routes": result.routes,
                "feedback": result.feedback_attached,
            }
            task.traffic.update(numbers)
            step("traffic", f"{task.task}: {_traffic_line(numbers)}", task=task.task, **numbers)
        traffic_s = time.perf_counter() - clock
    return url, traffic_s, gateway_s


def _check_once(
    task: BuiltTask,
    settings: Settings,
    registry: Registry,
    seed: int,
    progress: Progress,
    step: Callable[..., None],
) -> BuiltTask:
    """One stored monitoring check of the task's champion (none: nothing to watch)."""
    from niche.workflows.monitor import monitor

    if task.champion is None:
        return task
    clock = time.perf_counter()
    [report] = monitor(task.task, settings, registry=registry, seed=seed, progress=progress)
    alarms = [signal.name for signal in report.signals if signal.alarm]
    rows = report.window.get("rows")
    task.monitor.update(
        {
            "report_id": report.report_id,
            "rows": rows,
            "signals": [signal.name for signal in report.signals],
            "alarms": alarms,
        }
    )
    task.timings_s["monitor"] = round(time.perf_counter() - clock, 3)
    step(
        "monitor",
        f"{task.task}: monitoring check #{report.report_id} over {rows} records: "
        + (f"ALARM on {', '.join(alarms)}" if alarms else "no alarm")
        + f" ({len(report.signals)} signals)",
        task=task.task,
        **task.monitor,
    )
    return task


# -- the pieces ------------------------------------------------------------------------------


def _champion(registry: Registry, task: str) -> ModelVersionRecord | None:
    try:
        return registry.models.get(task, "champion")
    except NotFoundError:
        return None


def _tag(registry: Registry, item: PortfolioTask, prices: tuple[float, float] | None) -> None:
    """Tag a task that has no domain yet (one made by an earlier quickstart) with the
    portfolio's, and price its general model when it is the unpriced zero-shot one; a domain
    or prices the user gave it stay."""
    spec = registry.tasks.get(item.name).spec
    changes: dict[str, Any] = {}
    if spec.domain is None:
        changes["domain"] = item.domain
    general = spec.general
    unpriced = not (general.price_input_per_1m_tokens_usd or general.price_output_per_1m_tokens_usd)
    if prices is not None and general.kind == "zero-shot" and unpriced:
        changes["general"] = {
            "price_input_per_1m_tokens_usd": float(prices[0]),
            "price_output_per_1m_tokens_usd": float(prices[1]),
        }
    if changes:
        registry.tasks.update(item.name, **changes)


def _domain(registry: Registry, item: PortfolioTask) -> str:
    return registry.tasks.get(item.name).spec.domain or item.domain


def _stored_accuracy(
    registry: Registry, champion: ModelVersionRecord
) -> tuple[float | None, float | None]:
    """The champion's and the general model's accuracy in its latest evaluation."""
    evaluations = registry.models.evaluations(champion.task, champion.version)
    if not evaluations:
        return None, None
    latest = evaluations[-1]
    return (latest.metrics or {}).get("accuracy"), (latest.general or {}).get("accuracy")


def _dataset(registry: Registry, settings: Settings, champion: ModelVersionRecord) -> Any:
    from niche.workflows.data import open_dataset

    return open_dataset(champion.dataset_fingerprint, settings, registry=registry)


def _test_rows(version: DatasetVersion) -> Rows:
    # Held-out rows: the champion has not seen them, as it has not seen real traffic.
    test = version.splits.get("test")
    return test if test is not None and len(test) else version.splits["train"]


def _gate(result: QuickstartResult) -> str:
    promotion = result.promotion
    if promotion.already:
        return "already champion"
    if promotion.moved:
        return "promoted"
    failed = [check.name for check in promotion.decision.failed]
    return "refused: " + (", ".join(failed) or "no check passed")


def _gateway_environ(settings: Settings) -> dict[str, str]:
    """The gateway's environment: the caller's, its NICHE_* settings those of ``settings``
    (so it opens the same registry), plus :data:`_GATEWAY_SETTINGS`."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NICHE_")}
    for row in settings.table():
        if row["source"] != "default" and row["value"] is not None:
            environ[row["name"]] = str(row["value"])
    environ.update(_GATEWAY_SETTINGS)
    environ["NICHE_HOME"] = str(settings.home.resolve())
    environ["NICHE_CACHE_DIR"] = str(settings.cache_dir.resolve())
    datasets = settings.datasets_dir
    if datasets is not None:
        environ["NICHE_DATASETS"] = str(Path(datasets).resolve())
    environ.setdefault("HF_HUB_OFFLINE", "1")
    environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return environ


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _task_line(task: BuiltTask) -> str:
    champion = f"champion v{task.champion}" if task.champion is not None else "no champion"
    timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in task.timings_s.items())
    return (
        f"{task.task} (domain {task.domain}, {task.source}): {task.built}, {champion} "
        f"({task.gate}); accuracy {_pct(task.accuracy)} vs general {_pct(task.general_accuracy)}"
        + (f"; {timings}" if timings else "")
    )


def _traffic_line(numbers: dict[str, Any]) -> str:
    routes = ", ".join(f"{route} {n}" for route, n in numbers["routes"].items())
    errors = sum(numbers["errors"].values())
    return (
        f"{numbers['sent']} requests; routes: {routes or 'none'}; agreement with gold "
        f"{_pct(numbers['agreement'])}; {errors} error(s); {numbers['feedback']} feedback"
    )
