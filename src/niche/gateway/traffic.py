"""From an answered request to its metrics, its traffic record and its key's spend.

The record is built lazily, in the capture writer's thread: the request path only counts the
request and queues a closure. A request whose answer has a shadow call still running is
queued once the shadow call is done, so its record carries the general model's answer. A
record's time is when its request arrived: the wall clock now, less the request's duration.

    >>> traffic = TrafficRecorder(metrics, capture, capture=True)
    >>> traffic.record(state=state, model="banking77", route=answer.route, input=messages,
    ...                status=200, started=request.started, key=key, answer=answer)

Each record carries the id its client got (``request_id``: feedback names the record by it),
the text the specialist classified apart from the whole input (``text``), and whether the
request was drawn for the random teacher sample (``sampled``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from niche.gateway.budget import charge
from niche.gateway.capture import CaptureWriter
from niche.gateway.metrics import GatewayMetrics
from niche.registry.store import TrafficRecord

if TYPE_CHECKING:
    from niche.gateway.policy import TaskAnswer
    from niche.gateway.portfolio import TaskState
    from niche.registry.store import KeyRecord

__all__ = ["TrafficRecorder"]


class TrafficRecorder:
    """Counts requests in ``metrics`` and queues their records on ``capture``.

    ``capture`` (``NICHE_GATEWAY_CAPTURE``) turns recording off for every task; a task's
    ``serving.capture`` turns it off for that task. Spend is counted either way. ``clock`` is
    the wall clock, in seconds since the epoch (inject one in tests).
    """

    def __init__(
        self,
        metrics: GatewayMetrics,
        writer: CaptureWriter,
        *,
        capture: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.writer = writer
        self.capture = capture
        self.clock = clock

    def enabled(self, state: TaskState | None) -> bool:
        return self.capture and (state is None or state.spec.serving.capture)

    def record(
        self,
        *,
        state: TaskState | None,
        model: str,
        route: str,
        input: Any,
        status: int,
        started: float,
        key: KeyRecord | None,
        answer: TaskAnswer | None = None,
        general_answer: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float = 0.0,
        request_id: str | None = None,
        text: str | None = None,
    ) -> None:
        """Count the request in the metrics and queue its traffic record and spend.

        ``answer`` (a task request) supplies the answer's fields, its ``request_id`` and
        ``text`` included; a pass-through request gives ``general_answer``, its tokens, its
        cost and its ``request_id`` instead; a failed task request, what it has of them.
        """
        seconds = time.perf_counter() - started
        task = state.spec.name if state is not None else None
        self.metrics.observe(task, route, status, seconds)
        if answer is not None:
            cost_usd = answer.cost_usd
        if cost_usd:
            self.metrics.cost.labels(task or "", route).inc(cost_usd)
        spend = None
        # A budgeted request's hold settles its cost; any other spend takes the batched path.
        if key is not None and cost_usd > 0 and not charge(key, cost_usd):
            spend = (key.id, cost_usd)
        if not self.enabled(state):
            if spend is not None:
                self.writer.submit(None, spend=spend)
            return

        arrived = self.clock() - seconds

        def build() -> TrafficRecord:
            a = answer
            return TrafficRecord(
                task=task,
                model=model,
                route=route,
                input=input,
                status=status,
                latency_ms=seconds * 1000.0,
                key_id=key.id if key is not None else None,
                specialist_label=a.specialist_label if a else None,
                specialist_confidence=a.confidence if a else None,
                model_version=a.model_version if a else None,
                alias=a.alias if a else None,
                general_answer=a.general_answer if a else general_answer,
                general_label=a.general_label if a else None,
                shadow=bool(a and a.shadow is not None),
                input_tokens=a.input_tokens if a else input_tokens,
                output_tokens=a.output_tokens if a else output_tokens,
                cost_usd=a.cost_usd if a else cost_usd,
                compute_s=a.compute_s if a else None,
                request_id=a.request_id if a else request_id,
                text=a.text if a else text,
                sampled=bool(a and a.sampled),
                at=datetime.fromtimestamp(arrived, UTC),
            )

        if answer is not None and answer.shadow is not None:
            answer.shadow.add_done_callback(lambda _: self.writer.submit(build, spend=spend))
        else:
            self.writer.submit(build, spend=spend)
