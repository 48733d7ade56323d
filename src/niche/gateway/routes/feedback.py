"""``POST /v1/feedback``: the true label of a request the gateway answered, sent later.

The body names the request by the id its client got (a chat completion's ``id``, a
prediction's ``request_id``): ``{"request_id": "chatcmpl-…", "label": "card_arrival"}``, or
up to :data:`FEEDBACK_MAX_ITEMS` of them as ``{"feedback": [{…}, …]}``. An inference key may
label the requests made with it (an admin key, and local mode, any). All or nothing, as
``registry.traffic.attach_labels`` does it: 200 ``{"attached": n}``; 404 naming an unknown
request id; 400 naming a bad field, or a label outside its task's label set (with the labels);
503 while the registry cannot be reached. Feedback is counted in the metrics (route
``feedback``), never recorded as traffic.

    >>> routes = FeedbackRoutes(guard=guard, registry=registry, metrics=metrics,
    ...                         capture=capture)
    >>> table = RouteTable(routes.routes())
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

import orjson

from niche.errors import NicheError, NotFoundError, RequestError
from niche.gateway.asgi import Params, Request, Send, respond
from niche.gateway.protocol import only_fields
from niche.gateway.routing import Route

if TYPE_CHECKING:
    from niche.gateway.auth import Guard
    from niche.gateway.capture import CaptureWriter
    from niche.gateway.metrics import GatewayMetrics
    from niche.registry.store import KeyRecord, Registry

__all__ = ["FEEDBACK_CONCURRENCY", "FEEDBACK_MAX_ITEMS", "FeedbackRoutes"]

FEEDBACK_MAX_ITEMS: Final = 1_000
"""Labels one ``POST /v1/feedback`` may carry (the store takes up to 10,000 per call)."""
FEEDBACK_CONCURRENCY: Final = 4
"""Feedback calls written at once per gateway process; others wait their turn (each is one
registry transaction on a thread: a burst must not take every thread or database connection
the answers need)."""

_FIELDS: Final = frozenset({"request_id", "label"})


class _UnknownRequestError(RequestError):
    """A request id no captured request has: 404, code ``request_not_found``."""

    http_status = 404


class FeedbackRoutes:
    """The handler of ``POST /v1/feedback`` (see the module)."""

    def __init__(
        self,
        *,
        guard: Guard,
        registry: Registry,
        metrics: GatewayMetrics,
        capture: CaptureWriter,
        concurrency: int = FEEDBACK_CONCURRENCY,
        max_items: int = FEEDBACK_MAX_ITEMS,
    ) -> None:
        self.guard = guard
        self.registry = registry
        self.metrics = metrics
        self.capture = capture
        self.max_items = max_items
        self._slots = asyncio.Semaphore(concurrency)

    def routes(self) -> list[Route]:
        return [Route("/v1/feedback", self.feedback, ("POST",))]

    async def feedback(self, request: Request, send: Send, params: Params) -> None:
        key = await self.guard.check(request)
        try:
            items = _parse(await request.json(), self.max_items)
            attached = await self._attach(items, key)
        except NicheError as exc:
            self._observe(request, exc.http_status)
            raise
        self._observe(request, 200)
        await respond(send, 200, orjson.dumps({"attached": attached}))

    def _observe(self, request: Request, status: int) -> None:
        self.metrics.observe(None, "feedback", status, time.perf_counter() - request.started)

    async def _attach(self, items: list[tuple[str, str]], key: KeyRecord | None) -> int:
        """The labels attached (a registry transaction on a thread, a few at a time)."""
        # An inference key labels only its own requests: ids are unique, not secret.
        key_id = key.id if key is not None and key.scope != "admin" else None
        actor = f"api:{key.prefix}" if key is not None else "api:local"
        async with self._slots:
            try:
                return await asyncio.to_thread(
                    self.registry.traffic.attach_labels, items, actor=actor, key_id=key_id
                )
            except NotFoundError as exc:
                unknown = exc
            if self.capture.pending:
                # The request may have been answered a moment ago, its record still queued.
                await self.capture.flush()
                try:
                    return await asyncio.to_thread(
                        self.registry.traffic.attach_labels, items, actor=actor, key_id=key_id
                    )
                except NotFoundError as exc:
                    unknown = exc
        raise _UnknownRequestError(
            f"{unknown.message}; a request answered a moment ago may not be stored yet "
            "(retry in a second)",
            param="request_id",
            code="request_not_found",
        ) from unknown


def _parse(data: dict[str, Any], max_items: int) -> list[tuple[str, str]]:
    """The (request_id, label) pairs of a feedback body, or a 400 naming the bad field."""
    if "feedback" not in data:
        only_fields(data, set(_FIELDS))
        return [_item(data, "")]
    only_fields(data, {"feedback"})
    batch = data["feedback"]
    if not isinstance(batch, list) or not 1 <= len(batch) <= max_items:
        raise RequestError(
            f"'feedback' must be an array of 1 to {max_items} objects, each "
            '{"request_id": …, "label": …}',
            param="feedback",
        )
    return [_item(entry, f"feedback[{index}].") for index, entry in enumerate(batch)]


def _item(entry: Any, where: str) -> tuple[str, str]:
    if not isinstance(entry, dict):
        name = where.rstrip(".")
        raise RequestError(f"{name} must be an object with request_id and label", param=name)
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise RequestError(
            f"unknown field(s) {', '.join(where + name for name in unknown)}",
            param=where + unknown[0],
        )
    values = []
    for name, what in (
        ("request_id", "the id the gateway returned with the answer"),
        ("label", "the request's true label, one of its task's labels"),
    ):
        value = entry.get(name)
        if not isinstance(value, str) or not value.strip():
            raise RequestError(
                f"'{where}{name}' must be a non-empty string: {what}", param=where + name
            )
        values.append(value)
    return values[0], values[1]
