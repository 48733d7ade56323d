"""niche's own routes: ``POST /v1/tasks/{task}/predict`` (a batch of inputs, structured
answers, each with its own ``request_id``), ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (Prometheus) and
``GET /openapi.json``.

    >>> native = NativeRoutes(guard=guard, portfolio=portfolio, policy=policy,
    ...                       traffic=traffic, metrics=metrics, update_gauges=gauges,
    ...                       config=config, budgets=budgets)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from niche.errors import NotFoundError, PayloadTooLargeError, RequestError
from niche.gateway.asgi import Params, Request, Send, respond
from niche.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from niche.gateway.openapi import openapi_document
from niche.gateway.protocol import new_request_id, only_fields
from niche.gateway.routing import Route

if TYPE_CHECKING:
    from niche.gateway.auth import Guard
    from niche.gateway.budget import Budgets
    from niche.gateway.config import GatewayConfig
    from niche.gateway.metrics import GatewayMetrics
    from niche.gateway.policy import CascadePolicy, TaskAnswer
    from niche.gateway.portfolio import Portfolio, TaskState
    from niche.gateway.traffic import TrafficRecorder

__all__ = ["NativeRoutes"]


class NativeRoutes:
    """The handlers of the native routes.

    A predict call is bounded by ``config``: at most ``predict_max_inputs`` inputs and
    ``predict_max_chars`` characters, of which ``predict_concurrency`` are answered at once
    (so one call sends at most that many requests to the general model at a time, and holds
    at most that many places in its task's micro-batch queue: other requests interleave).
    """

    def __init__(
        self,
        *,
        guard: Guard,
        portfolio: Portfolio,
        policy: CascadePolicy,
        traffic: TrafficRecorder,
        metrics: GatewayMetrics,
        update_gauges: Callable[[], None],
        config: GatewayConfig,
        budgets: Budgets,
    ) -> None:
        self.guard = guard
        self.portfolio = portfolio
        self.policy = policy
        self.traffic = traffic
        self.metrics = metrics
        self.update_gauges = update_gauges
        self.max_inputs = config.predict_max_inputs
        self.max_chars = config.predict_max_chars
        self.concurrency = config.predict_concurrency
        self.budgets = budgets

    def routes(self) -> list[Route]:
        return [
            Route("/v1/tasks/{task}/predict", self.predict, ("POST",)),
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.scrape),
            Route("/openapi.json", self.openapi),
        ]

    async def predict(self, request: Request, send: Send, params: Params) -> None:
        key = await self.guard.check(request)
        task = params["task"]
        state = self.portfolio.get(task)
        if state is None:
            raise NotFoundError(f"no task {task!r} (tasks: {self.portfolio.names()})")
        data = await request.json()
        only_fields(data, {"inputs"})
        inputs = data.get("inputs")
        if (
            not isinstance(inputs, list)
            or not 1 <= len(inputs) <= self.max_inputs
            or not all(isinstance(x, str) and x.strip() for x in inputs)
        ):
            raise RequestError(
                f"'inputs' must be an array of 1 to {self.max_inputs} non-empty strings "
                "(NICHE_GATEWAY_PREDICT_MAX_INPUTS)",
                param="inputs",
            )
        chars = sum(len(text) for text in inputs)
        if chars > self.max_chars:
            raise PayloadTooLargeError(
                f"'inputs' hold {chars} characters in all, over the limit of {self.max_chars} "
                "per call (NICHE_GATEWAY_PREDICT_MAX_CHARS); split them over several calls",
                param="inputs",
            )
        async with self.budgets.hold(key, lambda: self.budgets.task_worst_case(state, inputs)):
            answers = await self._answer_all(state, inputs)
            for text, answer in zip(inputs, answers, strict=True):
                # Each prediction its own id (its record's), for feedback to name it by.
                answer.request_id = new_request_id("pred-")
                self.traffic.record(
                    state=state,
                    model=task,
                    route=answer.route,
                    input=text,
                    status=200,
                    started=request.started,
                    key=key,
                    answer=answer,
                )
        payload = {"task": task, "predictions": [a.to_dict() for a in answers]}
        await respond(send, 200, orjson.dumps(payload))

    async def _answer_all(self, state: TaskState, inputs: list[str]) -> list[TaskAnswer]:
        """Every input's answer, at most ``concurrency`` of them at once (FIFO, so other
        requests queued for the task meanwhile are served between this call's inputs)."""
        if len(inputs) <= self.concurrency:
            return list(await asyncio.gather(*(self.policy.answer(state, text) for text in inputs)))
        slots = asyncio.Semaphore(self.concurrency)

        async def answer(text: str) -> TaskAnswer:
            async with slots:
                return await self.policy.answer(state, text)

        pending = [asyncio.ensure_future(answer(text)) for text in inputs]
        try:
            return list(await asyncio.gather(*pending))
        finally:  # one input failed, or the client left: the rest are not worth answering
            for future in pending:
                future.cancel()

    async def healthz(self, request: Request, send: Send, params: Params) -> None:
        await respond(send, 200, b'{"status":"ok"}')

    async def readyz(self, request: Request, send: Send, params: Params) -> None:
        """200 ``ready`` or ``degraded`` (serving, with its problems listed), or 503 ``not
        ready``: the rule is :meth:`~niche.gateway.portfolio.Portfolio.health`'s."""
        health = self.portfolio.health()
        if not self.portfolio.loaded:
            body = orjson.dumps({"status": health.status, "reason": health.problems[0]})
            await respond(send, 503, body, [(b"retry-after", b"1")])
            return
        tasks = {s.spec.name: s.served() for s in self.portfolio.tasks()}
        payload: dict[str, object] = {"status": health.status, "tasks": tasks}
        if health.problems:
            payload["problems"] = health.problems
        if health.ready:
            await respond(send, 200, orjson.dumps(payload))
        else:
            await respond(send, 503, orjson.dumps(payload), [(b"retry-after", b"1")])

    async def scrape(self, request: Request, send: Send, params: Params) -> None:
        self.update_gauges()
        await respond(send, 200, self.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    async def openapi(self, request: Request, send: Send, params: Params) -> None:
        await respond(send, 200, orjson.dumps(openapi_document()))
