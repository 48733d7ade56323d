"""Prometheus metrics of the gateway, per task and route.

``task`` is empty for pass-through requests (their model names are the client's to choose,
and would make the label set unbounded). The cascade rate is
``niche_cascaded_total / niche_requests_total`` per task. With ``niche serve --workers N``
the workers share ``PROMETHEUS_MULTIPROC_DIR`` (set by ``serve``), and ``/metrics`` on any
of them reports the sum over all.

    >>> metrics = GatewayMetrics()
    >>> metrics.observe("banking77", "specialist", 200, 0.004)
    >>> metrics.render()[:6]
    b'# HELP'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

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

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
