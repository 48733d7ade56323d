"""Prometheus metrics of the gateway, per task and route.

``task`` is empty for pass-through requests (their model names are the client's to choose,
and would make the label set unbounded). The cascade rate is
``niche_cascaded_total / niche_requests_total`` per task. With ``niche serve --workers N``
the workers share ``PROMETHEUS_MULTIPROC_DIR`` (set by ``serve``), and ``/metrics`` on any
of them reports the sum over all.

The latest monitoring check of each task (``niche monitor``, the loop) is read off the event
loop at every portfolio refresh (:class:`MonitoringGauges`) and shown as
``niche_monitor_statistic``, ``niche_monitor_p_value`` and ``niche_monitor_alarm`` per task
and signal, and ``niche_monitor_checked_timestamp_seconds`` per task.

    >>> metrics = GatewayMetrics()
    >>> metrics.observe("banking77", "specialist", 200, 0.004)
    >>> metrics.render()[:6]
    b'# HELP'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from niche.registry.records import DriftReportRecord

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "MonitoringGauges"]

log = logging.getLogger("niche.gateway")

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    """The gateway's counters and histograms in their own collector registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        r = self.registry
        self.requests = Counter(
            "niche_requests", "Requests answered.", ["task", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "niche_request_duration_seconds",
            "Time to answer a request.",
            ["task", "route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.cascaded = Counter(
            "niche_cascaded", "Task requests the general model was asked for.", ["task"], registry=r
        )
        self.invalid = Counter(
            "niche_general_invalid",
            "General-model answers that map to no label of the task.",
            ["task"],
            registry=r,
        )
        self.tokens = Counter(
            "niche_tokens",
            "Tokens sent to and received from the general model.",
            ["task", "direction"],
            registry=r,
        )
        self.cost = Counter(
            "niche_cost_usd", "Cost of answering, in USD.", ["task", "route"], registry=r
        )
        self.shadow = Counter(
            "niche_shadow",
            "Shadow comparisons of specialist and general answers.",
            ["task", "outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            "niche_batch_size",
            "Texts per micro-batch of a specialist.",
            ["task"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.load_failures = Counter(
            "niche_model_load_failures",
            "Attempts to load a version an alias names that failed (retried every refresh).",
            ["task", "alias"],
            registry=r,
        )
        # Gauges are summed over worker processes ("livesum"), or their maximum is taken.
        self.inflight = Gauge(
            "niche_inflight_requests",
            "Requests being answered.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.capture_pending = Gauge(
            "niche_capture_pending",
            "Traffic records waiting to be written.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.capture_dropped = Gauge(
            "niche_capture_dropped",
            "Traffic records dropped (buffer full or redaction failed).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.dead_letters = Counter(
            "niche_capture_dead_letters",
            "Traffic records (and key spend) written to the dead-letter file, by reason.",
            ["reason"],
            registry=r,
        )
        self.cleaned = Counter(
            "niche_capture_cleaned",
            "Traffic records stored cleaned: NULs removed, strings or the input clipped.",
            registry=r,
        )
        self.circuit_open = Gauge(
            "niche_upstream_circuit_open",
            "1 when an upstream's circuit breaker is open.",
            ["upstream"],
            registry=r,
            multiprocess_mode="max",
        )
        # Every worker reads the same checks from the registry: any one's value is the value.
        self.monitor_statistic = Gauge(
            "niche_monitor_statistic",
            "The latest monitoring check's statistic, per task and signal.",
            ["task", "signal"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.monitor_p_value = Gauge(
            "niche_monitor_p_value",
            "The latest monitoring check's p-value, per task and signal (tests only).",
            ["task", "signal"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.monitor_alarm = Gauge(
            "niche_monitor_alarm",
            "1 when the latest monitoring check's signal alarms, else 0.",
            ["task", "signal"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.monitor_checked = Gauge(
            "niche_monitor_checked_timestamp_seconds",
            "When the task's latest monitoring check ran (seconds since the epoch).",
            ["task"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self._monitored: dict[str, set[str]] = {}

    def observe(self, task: str | None, route: str, status: int, seconds: float) -> None:
        key = (task or "", route, status)
        children = self._children.get(key)
        if children is None:
            # labels() validates and locks on every call: look each series up once.
            children = (
                self.requests.labels(key[0], route, str(status)),
                self.latency.labels(key[0], route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_dead_letters(self, reason: str, count: int) -> None:
        """Count ``count`` dead letters written for ``reason`` (the capture writer's hook)."""
        self.dead_letters.labels(reason).inc(count)

    def set_state(
        self, *, capture_pending: int, capture_dropped: int, circuits: Iterable[tuple[str, str]]
    ) -> None:
        """Set the gauges from the state they describe: ``circuits`` is (upstream, breaker
        state) pairs. Set, not computed at scrape time, so worker processes can share them."""
        self.capture_pending.set(capture_pending)
        self.capture_dropped.set(capture_dropped)
        for name, state in circuits:
            self.circuit_open.labels(name).set(float(state == "open"))

    def set_monitoring(self, latest: Mapping[str, DriftReportRecord]) -> None:
        """Show ``latest`` (each task's newest check, as ``registry.monitoring.latest_all()``
        gives it); series of tasks and signals no longer in it are removed."""
        seen: dict[str, set[str]] = {}
        for task, report in latest.items():
            self.monitor_checked.labels(task).set(report.at.timestamp())
            names = seen[task] = set()
            for signal in report.signals:
                name = str(signal.get("name"))
                names.add(name)
                for gauge, value in (
                    (self.monitor_statistic, signal.get("statistic")),
                    (self.monitor_p_value, signal.get("p_value")),
                ):
                    if isinstance(value, int | float) and math.isfinite(value):
                        gauge.labels(task, name).set(float(value))
                    else:
                        _remove(gauge, task, name)
                self.monitor_alarm.labels(task, name).set(float(bool(signal.get("alarm"))))
        for task, names in self._monitored.items():
            for name in names - seen.get(task, set()):
                for gauge in (self.monitor_statistic, self.monitor_p_value, self.monitor_alarm):
                    _remove(gauge, task, name)
            if task not in seen:
                _remove(self.monitor_checked, task)
        self._monitored = seen

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set
        gauge.remove(*labels)


class MonitoringGauges:
    """Sets the monitoring gauges from ``read`` (``registry.monitoring.latest_all``), called
    on a thread at each :meth:`tick` so the event loop never waits on the database.

    A failed read keeps the last values (logged once per outage): serving never depends on
    it. One read runs at a time; a tick during a slow read is skipped.

        >>> gauges = MonitoringGauges(registry.monitoring.latest_all, metrics)
        >>> await gauges.refresh() # at start-up
        >>> gauges.tick()          # the portfolio refresher's on_tick, on the event loop
        >>> await gauges.aclose()  # at shutdown
    """

    def __init__(
        self, read: Callable[[], Mapping[str, DriftReportRecord]], metrics: GatewayMetrics
    ) -> None:
        self.read = read
        self.metrics = metrics
        self.failing = False
        self._running: asyncio.Task[None] | None = None

    def tick(self) -> None:
        """Start a read in the background unless one is running (call on the event loop)."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self.refresh())

    async def refresh(self) -> None:
        """Read the latest checks (on a thread) and set the gauges; a failure is logged."""
        try:
            latest = await asyncio.to_thread(self.read)
            self.metrics.set_monitoring(latest)
        except Exception as exc:  # a registry outage must not touch serving
            (log.debug if self.failing else log.warning)(
                "gateway: reading the latest monitoring checks failed; /metrics keeps the "
                "last ones: %s",
                exc,
            )
            self.failing = True
        else:
            self.failing = False

    async def aclose(self) -> None:
        """Wait for (or cancel) a read in flight."""
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
            self._running = None
