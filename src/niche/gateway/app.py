"""The gateway: one raw ASGI app serving the portfolio behind an OpenAI-compatible API.

:class:`Gateway` is the composition root: it builds the portfolio, the general-model
client, the cascade policy, capture, auth, metrics and the route table, and runs the ASGI
lifespan. What each route does lives in ``routes/``; how a task input is answered, in
``policy.py``. No framework on the hot path: routing is a dict lookup.

Pages served beside the API (the dashboard at ``/ui``) are plug-ins: each :data:`PageFactory`
gets the gateway and returns its routes. They live above the gateway (``niche.reports``), so
they are found through the entry-point group ``niche.gateway_pages`` when the gateway is
built, never imported by it.

    >>> app = Gateway(Settings())            # what `niche serve` runs on uvicorn
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from niche.evaluation import Prices
from niche.gateway.asgi import Receive, Scope, Send, run_lifespan
from niche.gateway.auth import Guard, KeyCache
from niche.gateway.budget import Budgets
from niche.gateway.capture import CaptureWriter
from niche.gateway.config import GatewayConfig, load_redactor
from niche.gateway.general import GeneralClient
from niche.gateway.metrics import GatewayMetrics, MonitoringGauges
from niche.gateway.policy import CascadePolicy, RandomSource, TaskAnswer
from niche.gateway.portfolio import Loader, Portfolio
from niche.gateway.routes.admin import AdminRoutes
from niche.gateway.routes.feedback import FeedbackRoutes
from niche.gateway.routes.native import NativeRoutes
from niche.gateway.routes.openai import OpenAIRoutes
from niche.gateway.routing import Dispatcher, Route, RouteTable
from niche.gateway.traffic import TrafficRecorder
from niche.registry.deadletters import DeadLetterFile
from niche.registry.store import Registry
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.encoders.base import Encoder

__all__ = [
    "PAGES_ENTRY_POINT_GROUP",
    "Gateway",
    "PageFactory",
    "TaskAnswer",
    "create_app",
    "installed_pages",
]

log = logging.getLogger("niche.gateway")

SHUTDOWN_GRACE_S = 30.0

PAGES_ENTRY_POINT_GROUP = "niche.gateway_pages"
"""Entry points naming a :data:`PageFactory` (niche's dashboard: ``ui``)."""

PageFactory = Callable[["Gateway"], Iterable[Route]]
"""Pages served beside the API: ``factory(gateway)`` returns their routes."""


def installed_pages() -> list[PageFactory]:
    """Every factory of the ``niche.gateway_pages`` entry points, each target once; one that
    fails to load is logged with its name and left out (the API is served whatever a page
    plug-in does)."""
    factories: list[PageFactory] = []
    seen: set[str] = set()
    for entry_point in metadata.entry_points(group=PAGES_ENTRY_POINT_GROUP):
        # The same plug-in found twice (a stale install beside the live one) is served once.
        if entry_point.value in seen:
            continue
        seen.add(entry_point.value)
        try:
            factories.append(entry_point.load())
        except Exception as exc:  # a broken plug-in must not stop the gateway
            log.error(
                "gateway: the pages plug-in %r (%s) failed to load and is not served: %s",
                entry_point.name,
                entry_point.value,
                exc,
            )
    return factories


class Gateway:
    """The ASGI app. Build it with settings (and, in tests, a registry, encoder, loader,
    random source, clock or wall clock: seconds since the epoch, traffic records' times).

    ``pages``: the page factories to serve (None: every ``niche.gateway_pages`` entry point;
    ``[]``: the API alone)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: Registry | None = None,
        config: GatewayConfig | None = None,
        encoder: Encoder | None = None,
        loader: Loader | None = None,
        rng: RandomSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        pages: Iterable[PageFactory] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.config = config = config or GatewayConfig.from_settings(self.settings)
        self.registry = registry = registry or Registry(settings=self.settings)
        self.metrics = GatewayMetrics()
        self.monitoring = MonitoringGauges(registry.monitoring.latest_all, self.metrics)
        # One thread runs the specialists (onnxruntime uses the cores itself); another loads
        # new versions, so that a slow load never holds up an answer.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="niche-model")
        self.loader_executor = ThreadPoolExecutor(1, thread_name_prefix="niche-loader")
        self.portfolio = Portfolio(
            registry,
            self.settings,
            config,
            executor=self.executor,
            loader_executor=self.loader_executor,
            encoder=encoder,
            loader=loader,
            on_load_failure=lambda task, alias: self.metrics.load_failures.labels(
                task, alias
            ).inc(),
            clock=clock,
        )
        self.general = GeneralClient(config, zero_shot=self.portfolio.zero_shot, clock=clock)
        self.policy = CascadePolicy(
            self.general,
            self.metrics,
            canary_fraction=config.canary_fraction,
            shadow_fraction=config.shadow_fraction,
            prices=Prices(cpu_hour_usd=config.cpu_hour_usd),
            rng=rng,
            specialist_timeout_s=config.specialist_timeout_s,
        )
        retention = self.settings.get("NICHE_TRAFFIC_RETENTION_DAYS")
        self.capture = CaptureWriter(
            registry,
            flush_s=config.capture_flush_s,
            redact=load_redactor(config.redact),
            dead_letters=DeadLetterFile(Path(self.settings.get("NICHE_TRAFFIC_DEAD_LETTER_DIR"))),
            on_dead_letter=self.metrics.count_dead_letters,
            on_cleaned=self.metrics.cleaned.inc,
            max_input_bytes=self.settings.get("NICHE_GATEWAY_CAPTURE_MAX_INPUT_BYTES"),
            retention_s=None if retention is None else retention * 86_400.0,
        )
        self.traffic = TrafficRecorder(
            self.metrics, self.capture, capture=config.capture, clock=wall_clock
        )
        self.guard = guard = Guard(
            KeyCache(registry, ttl_s=config.refresh_s, stale_s=config.key_stale_s, clock=clock),
            pending_spend=self.capture.pending_spend,
        )
        self.budgets = Budgets(registry, general=self.general, config=config, clock=clock)
        openai = OpenAIRoutes(
            guard=guard,
            portfolio=self.portfolio,
            policy=self.policy,
            general=self.general,
            traffic=self.traffic,
            config=config,
            budgets=self.budgets,
        )
        native = NativeRoutes(
            guard=guard,
            portfolio=self.portfolio,
            policy=self.policy,
            traffic=self.traffic,
            metrics=self.metrics,
            update_gauges=self._update_gauges,
            config=config,
            budgets=self.budgets,
        )
        admin = AdminRoutes(guard=guard, registry=registry, portfolio=self.portfolio)
        feedback = FeedbackRoutes(
            guard=guard, registry=registry, metrics=self.metrics, capture=self.capture
        )
        self.routes = RouteTable(
            [
                *openai.routes(),
                *native.routes(),
                *feedback.routes(),
                *admin.routes(),
                *self._pages(installed_pages() if pages is None else pages),
            ],
            fallback=openai.fallback(),
        )
        self.http = Dispatcher(
            self.routes,
            max_body_bytes=config.max_body_bytes,
            max_concurrency=config.max_concurrency,
            metrics=self.metrics,
            body_timeout_s=config.body_timeout_s,
        )
        self.started = False

    def _pages(self, factories: Iterable[PageFactory]) -> list[Route]:
        routes: list[Route] = []
        for factory in factories:
            try:
                routes.extend(factory(self))
            except Exception as exc:  # as for a plug-in that fails to load
                name = getattr(factory, "__qualname__", repr(factory))
                log.error("gateway: the pages %r failed to build and are not served: %s", name, exc)
        return routes

    def __repr__(self) -> str:
        return f"Gateway(registry={self.registry!r}, general={self.general!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await run_lifespan(receive, send, startup=self.startup, shutdown=self.shutdown)

    async def startup(self) -> None:
        """Start the capture writer, load the portfolio, and keep it in step with the registry."""
        if self.started:
            return
        self.started = True
        self.capture.start()
        await self.portfolio.start(self.config.refresh_s, on_tick=self._on_tick)
        await self.monitoring.refresh()

    def _on_tick(self) -> None:
        self._update_gauges()
        self.monitoring.tick()

    def _update_gauges(self) -> None:
        self.metrics.set_state(
            capture_pending=self.capture.pending,
            capture_dropped=self.capture.dropped,
            circuits=[(u.name, u.state) for u in self.general.upstreams()],
        )

    async def shutdown(self) -> None:
        """Finish background work (shadow calls), flush every traffic record, close clients."""
        await self.portfolio.stop()
        await self.monitoring.aclose()
        await self.policy.drain(SHUTDOWN_GRACE_S)
        await self.budgets.aclose()
        await self.capture.aclose()
        await self.general.aclose()
        await self.portfolio.aclose()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.loader_executor.shutdown(wait=False, cancel_futures=True)
        self.started = False
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # drop this worker's live gauges


def create_app() -> Gateway:
    """The factory uvicorn's workers call (``niche serve --workers N``)."""
    return Gateway(Settings())
