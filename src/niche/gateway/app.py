"""The gateway: one raw ASGI app serving the portfolio behind an OpenAI-compatible API.

Routes: ``POST /v1/chat/completions`` and ``GET /v1/models`` (OpenAI-compatible),
``POST /v1/tasks/{task}/predict`` (batch, structured), ``GET /healthz``, ``GET /readyz``,
``GET /metrics`` (Prometheus), ``GET /openapi.json``, and admin routes under ``/v1/admin/``
for tasks, aliases and keys. No framework on the hot path: routing is a dict lookup.

    >>> app = Gateway(Settings())            # what `niche serve` runs on uvicorn
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from niche.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ConfigurationError,
    MethodNotAllowedError,
    NicheError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RequestError,
    UpstreamError,
    UpstreamTimeoutError,
)
from niche.gateway.auth import KeyCache
from niche.gateway.capture import CaptureWriter
from niche.gateway.cascade import map_answer, render_prompt
from niche.gateway.config import GatewayConfig, load_redactor
from niche.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from niche.gateway.metrics import GatewayMetrics
from niche.gateway.openapi import openapi_document
from niche.gateway.portfolio import Deployed, Portfolio, TaskState
from niche.gateway.protocol import (
    chat_completion,
    completion_chunks,
    error_response,
    last_user_text,
    new_completion_id,
    new_request_id,
    parse_chat_request,
    parse_json_object,
)
from niche.gateway.upstream import CircuitBreaker, Upstream
from niche.registry.store import Registry, TrafficRecord
from niche.registry.tasks import GeneralModelSpec
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.encoders.base import Encoder
    from niche.registry.store import KeyRecord, ModelVersionRecord
    from niche.specialists.base import Predictor

__all__ = ["Gateway", "TaskAnswer", "create_app"]

log = logging.getLogger("niche.gateway")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = b"application/json"
MAX_PREDICT_INPUTS = 256
SHUTDOWN_GRACE_S = 30.0


@dataclass
class TaskAnswer:
    """How one task input was answered; becomes headers, the ``niche`` field and a record."""

    task: str
    label: str
    route: str
    confidence: float | None = None
    alias: str | None = None
    model_version: int | None = None
    specialist_label: str | None = None
    general_answer: str | None = None
    general_label: str | None = None
    fallback_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float = 0.0
    shadow: asyncio.Task[Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "label": self.label,
            "route": self.route,
            "confidence": self.confidence,
            "alias": self.alias,
            "model_version": self.model_version,
            "general_label": self.general_label,
            "fallback_reason": self.fallback_reason,
        }

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-niche-task", self.task.encode()), (b"x-niche-route", self.route.encode())]
        if self.confidence is not None:
            headers.append((b"x-niche-confidence", f"{self.confidence:.4f}".encode()))
        if self.model_version is not None:
            headers.append((b"x-niche-model-version", str(self.model_version).encode()))
        if self.alias is not None:
            headers.append((b"x-niche-alias", self.alias.encode()))
        if self.fallback_reason is not None:
            headers.append((b"x-niche-fallback-reason", self.fallback_reason.encode()))
        return headers


@dataclass
class GeneralReply:
    answer: str
    label: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float = 0.0


class Request:
    """The parts of an ASGI HTTP request the routes need; the body is read on demand."""

    __slots__ = (
        "_body",
        "client",
        "headers",
        "max_body",
        "method",
        "path",
        "query",
        "receive",
        "started",
    )

    def __init__(self, scope: Scope, receive: Receive, max_body: int) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        self.headers: dict[bytes, bytes] = dict(scope.get("headers") or ())
        client = scope.get("client")
        self.client: str | None = client[0] if client else None
        self.receive = receive
        self.max_body = max_body
        self.started = time.perf_counter()
        self._body: bytes | None = None

    async def body(self) -> bytes:
        if self._body is not None:
            return self._body
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLargeError(
                f"request body of {int(declared)} bytes exceeds the limit of {self.max_body} "
                "(NICHE_GATEWAY_MAX_BODY_BYTES)"
            )
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise RequestError("the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLargeError(
                    f"request body exceeds the limit of {self.max_body} bytes "
                    "(NICHE_GATEWAY_MAX_BODY_BYTES)"
                )
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        self._body = parts[0] if len(parts) == 1 else b"".join(parts)
        return self._body

    async def json(self) -> dict[str, Any]:
        return parse_json_object(await self.body())


async def _send(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = JSON,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _relay(
    send: Send,
    status: int,
    content_type: str,
    chunks: AsyncIterator[bytes],
    headers: list[tuple[bytes, bytes]],
    *,
    what: str,
    keep: bool = False,
) -> tuple[int, bytes]:
    """Relay an upstream answer chunk by chunk; return its status (502 if it broke mid-way)
    and, with ``keep``, its bytes."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                *headers,
                (b"x-niche-route", b"passthrough"),
            ],
        }
    )
    received: list[bytes] = []
    try:
        async for chunk in chunks:
            if keep:
                received.append(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except Exception as exc:  # the upstream broke mid-way: end the response, record it
        log.warning("%s broke: %s", what, exc)
        status = 502
    await send({"type": "http.response.body", "body": b""})
    return status, b"".join(received)


def _usage(reply: Any) -> tuple[int | None, int | None]:
    usage = reply.get("usage") if isinstance(reply, dict) else None
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


def _content(reply: Any) -> str | None:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _price(spec: GeneralModelSpec, input_tokens: int | None, output_tokens: int | None) -> float:
    return (
        (input_tokens or 0) * spec.price_input_per_1m_tokens_usd
        + (output_tokens or 0) * spec.price_output_per_1m_tokens_usd
    ) / 1e6


class Gateway:
    """The ASGI app. Build it with settings (and, in tests, a registry or encoder)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: Registry | None = None,
        config: GatewayConfig | None = None,
        encoder: Encoder | None = None,
        loader: Callable[[ModelVersionRecord], Predictor] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or Settings()
        self.config = config or GatewayConfig.from_settings(self.settings)
        if registry is None:
            registry = Registry(settings=self.settings)
        self.registry = registry
        self.clock = clock
        self.rng = rng or random.Random()
        self.metrics = GatewayMetrics()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="niche-model")
        self.portfolio = Portfolio(
            registry,
            self.settings,
            self.config,
            executor=self.executor,
            encoder=encoder,
            loader=loader,
        )
        self.keys = KeyCache(registry, ttl_s=self.config.refresh_s, clock=clock)
        self.capture = CaptureWriter(
            registry, flush_s=self.config.capture_flush_s, redact=load_redactor(self.config.redact)
        )
        self._upstreams: dict[tuple[Any, ...], Upstream] = {}
        self.upstream = self._upstream(self.config.general) if self.config.general else None
        self._inflight = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self.started = False
        self._routes: dict[tuple[str, str], Callable[[Request, Send], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("GET", "/v1/models"): self._models,
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/openapi.json"): self._openapi,
            ("GET", "/v1/admin/tasks"): self._admin_tasks,
            ("GET", "/v1/admin/keys"): self._admin_keys,
            ("POST", "/v1/admin/keys"): self._admin_create_key,
        }
        self._paths = {path for _, path in self._routes}

    def __repr__(self) -> str:
        return f"Gateway(registry={self.registry!r}, upstream={self.upstream!r})"

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Start the capture writer, load the portfolio, and keep it in step with the registry."""
        if self.started:
            return
        self.started = True
        self.capture.start()
        try:
            await self.portfolio.refresh()
        except Exception as exc:  # the refresher retries; /readyz says why meanwhile
            self.portfolio.last_error = str(exc)
            log.error("gateway: cannot read the registry yet: %s", exc)
        self._refresher = asyncio.create_task(self._refresh_loop(), name="niche-refresh")

    def _update_gauges(self) -> None:
        """Set the gauges from the state they describe (set, not computed at scrape time,
        so that worker processes can share them)."""
        self.metrics.capture_pending.set(self.capture.pending)
        self.metrics.capture_dropped.set(self.capture.dropped)
        for upstream in self._upstreams.values():
            state = upstream.breaker.state
            self.metrics.circuit_open.labels(upstream.name).set(float(state == "open"))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_s)
            self._update_gauges()
            try:
                await self.portfolio.refresh()
            except Exception as exc:
                self.portfolio.last_error = str(exc)
                log.warning("gateway: refreshing from the registry failed: %s", exc)

    async def shutdown(self) -> None:
        """Finish background work (shadow calls), flush every traffic record, close clients."""
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        if self._background:
            await asyncio.wait(set(self._background), timeout=SHUTDOWN_GRACE_S)
        await self.capture.aclose()
        for upstream in self._upstreams.values():
            await upstream.close()
        await self.portfolio.aclose()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.started = False
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # drop this worker's live gauges

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, self.config.max_body_bytes)
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            handler = self._dynamic_route(request)
        if handler is None and self._forwardable(request.path):
            handler = self._forward
        limited = request.path.startswith("/v1/")
        try:
            if handler is None:
                if request.path in self._paths:
                    raise MethodNotAllowedError(
                        f"method {request.method} is not allowed on {request.path}",
                        code="method_not_allowed",
                    )
                raise NotFoundError(f"no route {request.method} {request.path}")
            if limited and self._inflight >= self.config.max_concurrency:
                self.metrics.observe(None, "rejected", 429, 0.0)
                raise OverloadedError(
                    f"the gateway is serving {self._inflight} requests, its limit "
                    "(NICHE_GATEWAY_MAX_CONCURRENCY); retry shortly",
                    retry_after_s=1,
                )
        except NicheError as exc:
            await self._error(send, exc)
            return
        if not limited:
            await handler(request, send)
            return
        self._inflight += 1
        self.metrics.inflight.inc()
        try:
            await handler(request, send)
        except NicheError as exc:
            await self._error(send, exc)
        except Exception:
            log.exception("gateway: unexpected error on %s %s", request.method, request.path)
            await self._error(
                send, NicheError("internal error in the gateway; see its log for details")
            )
        finally:
            self._inflight -= 1
            self.metrics.inflight.dec()

    def _known(self) -> str:
        return ", ".join(sorted(s.spec.name for s in self.portfolio.tasks())) or "none"

    def _forwardable(self, path: str) -> bool:
        """Other paths of the OpenAI API (embeddings, …) are relayed to the general model."""
        return (
            self.upstream is not None
            and path.startswith("/v1/")
            and path not in self._paths
            and not path.startswith(("/v1/admin/", "/v1/tasks/"))
        )

    def _dynamic_route(self, request: Request) -> Callable[[Request, Send], Awaitable[None]] | None:
        parts = request.path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["v1", "tasks"] and parts[3] == "predict":
            return self._predict if request.method == "POST" else None
        if len(parts) >= 4 and parts[:3] == ["v1", "admin", "tasks"]:
            if len(parts) == 4 and request.method == "GET":
                return self._admin_task
            if len(parts) == 5 and parts[4] == "aliases" and request.method == "GET":
                return self._admin_aliases
            if len(parts) == 6 and parts[4] == "aliases" and request.method == "PUT":
                return self._admin_set_alias
        if len(parts) == 4 and parts[:3] == ["v1", "admin", "keys"] and request.method == "DELETE":
            return self._admin_revoke_key
        return None

    async def _error(self, send: Send, exc: NicheError) -> None:
        status, body, headers = error_response(exc)
        try:
            await _send(send, status, body, headers)
        except (RuntimeError, OSError) as send_failed:
            # The response had started (a stream broke) or the client left: nothing to send.
            log.info("gateway: could not send the error %r: %s", exc.message, send_failed)

    # -- auth ------------------------------------------------------------------------------

    async def _authenticate(self, request: Request, *, admin: bool = False) -> KeyRecord | None:
        key = await self.keys.authenticate(
            request.headers.get(b"authorization"), client_host=request.client
        )
        if key is None:
            return None
        if admin and key.scope != "admin":
            raise PermissionDeniedError(
                f"key {key.prefix}… has scope {key.scope!r}; this route needs an 'admin' key"
            )
        if key.budget_usd is not None:
            spent = key.spent_usd + self.capture.pending_spend(key.id)
            if spent >= key.budget_usd:
                raise BudgetExceededError(
                    f"key {key.prefix}… has spent its budget (${spent:.4f} of "
                    f"${key.budget_usd:.4f}); raise it or use another key",
                    key_id=key.id,
                )
        return key

    # -- general models --------------------------------------------------------------------

    def _upstream(self, spec: GeneralModelSpec) -> Upstream:
        ident = (spec.base_url, spec.model, spec.api_key_env)
        upstream = self._upstreams.get(ident)
        if upstream is None:
            upstream = Upstream(
                spec,
                timeout_s=self.config.timeout_s,
                breaker=CircuitBreaker(
                    self.config.breaker_failures, self.config.breaker_reset_s, clock=self.clock
                ),
                max_connections=max(16, self.config.max_concurrency),
            )
            self._upstreams[ident] = upstream
        return upstream

    def _general_spec(self, state: TaskState) -> GeneralModelSpec | None:
        if state.spec.general.kind == "openai":
            return state.spec.general
        return self.config.general

    async def _ask_general(self, state: TaskState, text: str) -> GeneralReply:
        spec = self._general_spec(state)
        labels = state.labels
        if spec is None:
            predicted = await self.portfolio.zero_shot(state).submit(text)
            return GeneralReply(answer=predicted.label, label=predicted.label)
        timeout_s = state.spec.serving.timeout_s or self.config.timeout_s
        prompt = render_prompt(spec.prompt_template, text, labels)
        body = orjson.dumps(
            {
                "model": spec.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0,
            }
        )
        upstream = self._upstream(spec)
        # Its total timeout raises UpstreamTimeoutError (and counts against the breaker).
        reply = await upstream.complete(body, timeout_s=timeout_s)
        if reply.status >= 400:
            raise UpstreamError(
                f"general model {upstream.name} refused the request: HTTP {reply.status}",
                status=reply.status,
            )
        data = reply.json()
        answer = _content(data)
        input_tokens, output_tokens = _usage(data)
        return GeneralReply(
            answer=answer or "",
            label=map_answer(answer, labels),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=_price(spec, input_tokens, output_tokens),
        )

    # -- the cascade -----------------------------------------------------------------------

    def _pick(self, state: TaskState) -> Deployed | None:
        challenger = state.challenger
        if challenger is not None:
            fraction = state.spec.serving.canary_fraction
            fraction = self.config.canary_fraction if fraction is None else fraction
            if fraction > 0 and self.rng.random() < fraction:
                return challenger
        return state.champion

    async def answer(self, state: TaskState, text: str) -> TaskAnswer:
        """Answer ``text`` for ``state``'s task: specialist, cascade, or fallback."""
        task = state.spec.name
        deployed = self._pick(state)
        answer = TaskAnswer(task=task, label="", route="general")
        specialist_ok = False
        if deployed is not None:
            answer.alias, answer.model_version = deployed.alias, deployed.version
            try:
                predicted = await deployed.batcher.submit(text)
            except Exception as exc:
                log.error("task %s: specialist v%d failed: %s", task, deployed.version, exc)
                answer.fallback_reason = "specialist-error"
            else:
                specialist_ok = True
                answer.label = answer.specialist_label = predicted.label
                answer.confidence = predicted.confidence
                answer.cost_usd = predicted.compute_s * self.config.cpu_hour_usd / 3600.0
                self.metrics.batch_size.labels(task).observe(predicted.batch_size)
                if predicted.confidence >= state.spec.cascade_threshold:
                    answer.route = "specialist"
                    self._maybe_shadow(state, text, answer)
                    return answer
        else:
            answer.fallback_reason = "no-champion"
        self.metrics.cascaded.labels(task).inc()
        try:
            general = await self._ask_general(state, text)
        except Exception as exc:  # the general model is a dependency: any failure falls back
            if not specialist_ok:
                raise
            if not isinstance(exc, UpstreamError):
                log.error("task %s: the general model failed: %s", task, exc)
            answer.route = "specialist-fallback"
            answer.fallback_reason = (
                "timeout"
                if isinstance(exc, UpstreamTimeoutError)
                else "circuit-open"
                if isinstance(exc, CircuitOpenError)
                else "upstream-error"
            )
            return answer
        answer.general_answer, answer.general_label = general.answer, general.label
        answer.input_tokens, answer.output_tokens = general.input_tokens, general.output_tokens
        answer.cost_usd += general.cost_usd
        if general.input_tokens:
            self.metrics.tokens.labels(task, "input").inc(general.input_tokens)
        if general.output_tokens:
            self.metrics.tokens.labels(task, "output").inc(general.output_tokens)
        if general.label is None:
            self.metrics.invalid.labels(task).inc()
            if not specialist_ok:
                raise UpstreamError(
                    f"task {task}: the specialist failed and the general model's answer "
                    f"{general.answer[:80]!r} names no label of the task"
                )
            answer.route = "specialist-fallback"
            answer.fallback_reason = "invalid-answer"
            return answer
        answer.label = general.label
        answer.route = "general" if specialist_ok or deployed is None else "general-fallback"
        return answer

    def _maybe_shadow(self, state: TaskState, text: str, answer: TaskAnswer) -> None:
        fraction = state.spec.serving.shadow_fraction
        fraction = self.config.shadow_fraction if fraction is None else fraction
        if fraction <= 0 or self.rng.random() >= fraction:
            return

        async def shadow() -> None:
            try:
                general = await self._ask_general(state, text)
            except Exception as exc:
                self.metrics.shadow.labels(answer.task, "error").inc()
                log.info("task %s: shadow call failed: %s", answer.task, exc)
                return
            answer.general_answer, answer.general_label = general.answer, general.label
            answer.input_tokens, answer.output_tokens = general.input_tokens, general.output_tokens
            outcome = (
                "invalid"
                if general.label is None
                else "agree"
                if general.label == answer.specialist_label
                else "disagree"
            )
            self.metrics.shadow.labels(answer.task, outcome).inc()

        answer.shadow = self._spawn(shadow())

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- capture ---------------------------------------------------------------------------

    def _capture_enabled(self, state: TaskState | None) -> bool:
        return self.config.capture and (state is None or state.spec.serving.capture)

    def _record(
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
    ) -> None:
        """Count the request in the metrics and queue its traffic record and spend."""
        seconds = time.perf_counter() - started
        task = state.spec.name if state is not None else None
        self.metrics.observe(task, route, status, seconds)
        if answer is not None:
            cost_usd = answer.cost_usd
        if cost_usd:
            self.metrics.cost.labels(task or "", route).inc(cost_usd)
        spend = (key.id, cost_usd) if key is not None and cost_usd > 0 else None
        if not self._capture_enabled(state):
            if spend is not None:
                self.capture.submit(None, spend=spend)
            return

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
            )

        # ``build`` runs in the capture writer's thread, off the request path.
        if answer is not None and answer.shadow is not None:
            # Queued once the shadow call is done, with the general model's answer.
            answer.shadow.add_done_callback(lambda _: self.capture.submit(build, spend=spend))
        else:
            self.capture.submit(build, spend=spend)

    # -- OpenAI-compatible routes ----------------------------------------------------------

    async def _chat(self, request: Request, send: Send) -> None:
        key = await self._authenticate(request)
        body = await request.body()
        data = parse_chat_request(body)
        model = data["model"]
        state = self.portfolio.get(model)
        try:
            if state is None:
                await self._passthrough(request, send, body, data, key)
                return
            text = last_user_text(data["messages"])
            answer = await self.answer(state, text)
        except NicheError as exc:
            # A failed request is traffic too (the monitor counts errors per task).
            self._record(
                state=state,
                model=model,
                route="error",
                input=data["messages"],
                status=exc.http_status,
                started=request.started,
                key=key,
            )
            raise
        completion_id = new_completion_id()
        completion = chat_completion(
            completion_id=completion_id,
            model=model,
            content=answer.label,
            usage={
                "prompt_tokens": answer.input_tokens or 0,
                "completion_tokens": answer.output_tokens or 0,
                "total_tokens": (answer.input_tokens or 0) + (answer.output_tokens or 0),
            },
            niche=answer.to_dict(),
        )
        headers = [(b"x-request-id", completion_id.encode()), *answer.headers()]
        self._record(
            state=state,
            model=model,
            route=answer.route,
            input=data["messages"],
            status=200,
            started=request.started,
            key=key,
            answer=answer,
        )
        if data.get("stream"):
            await _send(send, 200, completion_chunks(completion), headers, b"text/event-stream")
        else:
            await _send(send, 200, orjson.dumps(completion), headers)

    async def _passthrough(
        self,
        request: Request,
        send: Send,
        body: bytes,
        data: dict[str, Any],
        key: KeyRecord | None,
    ) -> None:
        model = data["model"]
        if self.upstream is None:
            raise NotFoundError(
                f"model {model!r} is not a task of this gateway (tasks: {self._known()}), and no "
                "general model is configured to pass it through to (NICHE_GENERAL_BASE_URL)"
            )
        upstream = self.upstream
        request_id = new_request_id("req-").encode()
        if data.get("stream"):
            await self._passthrough_stream(request, send, body, data, key, request_id, upstream)
            return
        reply = await upstream.complete(body)
        await _send(
            send,
            reply.status,
            reply.body,
            [(b"x-request-id", request_id), (b"x-niche-route", b"passthrough")],
            reply.content_type.encode("latin-1"),
        )
        try:
            parsed = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            parsed = None
        self._record_passthrough(
            request, data, key, upstream, reply.status, _content(parsed), *_usage(parsed)
        )

    async def _passthrough_stream(
        self,
        request: Request,
        send: Send,
        body: bytes,
        data: dict[str, Any],
        key: KeyRecord | None,
        request_id: bytes,
        upstream: Upstream,
    ) -> None:
        status, content_type, chunks = await upstream.stream(body)
        status, received = await _relay(
            send,
            status,
            content_type,
            chunks,
            [(b"cache-control", b"no-cache"), (b"x-request-id", request_id)],
            keep=True,
            what=f"pass-through stream of {data['model']}",
        )
        content, input_tokens, output_tokens = _read_sse(received)
        self._record_passthrough(
            request, data, key, upstream, status, content, input_tokens, output_tokens
        )

    async def _forward(self, request: Request, send: Send) -> None:
        """Relay a request for another route of the general model's API, as it is."""
        key = await self._authenticate(request)
        upstream = self.upstream
        if upstream is None:  # pragma: no cover - routed here only with an upstream
            raise NotFoundError(f"no route {request.method} {request.path}")
        body = await request.body()
        content_type = request.headers.get(b"content-type")
        status, reply_type, chunks = await upstream.stream(
            body,
            method=request.method,
            path=request.path[len("/v1") :],
            query=request.query,
            content_type=content_type.decode("latin-1") if content_type else None,
        )
        status, _ = await _relay(
            send,
            status,
            reply_type,
            chunks,
            [],
            what=f"pass-through of {request.method} {request.path}",
        )
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        model = data.get("model") if isinstance(data, dict) else None
        self._record(
            state=None,
            model=model if isinstance(model, str) and model else request.path,
            route="passthrough",
            input={"path": request.path, "body": data},
            status=status,
            started=request.started,
            key=key,
        )

    def _record_passthrough(
        self,
        request: Request,
        data: dict[str, Any],
        key: KeyRecord | None,
        upstream: Upstream,
        status: int,
        content: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        self._record(
            state=None,
            model=data["model"],
            route="passthrough",
            input=data["messages"],
            status=status,
            started=request.started,
            key=key,
            general_answer=content,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=_price(upstream.spec, input_tokens, output_tokens),
        )

    async def _models(self, request: Request, send: Send) -> None:
        await self._authenticate(request)
        data = []
        for state in sorted(self.portfolio.tasks(), key=lambda s: s.spec.name):
            data.append(
                {
                    "id": state.spec.name,
                    "object": "model",
                    "created": int(state.created_at.timestamp()),
                    "owned_by": "niche",
                    "niche": {
                        alias: deployed.version for alias, deployed in state.deployed.items()
                    },
                }
            )
        if self.config.general is not None and self.config.general.model:
            data.append(
                {
                    "id": self.config.general.model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "upstream",
                }
            )
        await _send(send, 200, orjson.dumps({"object": "list", "data": data}))

    # -- native routes ---------------------------------------------------------------------

    async def _predict(self, request: Request, send: Send) -> None:
        key = await self._authenticate(request)
        task = request.path.strip("/").split("/")[2]
        state = self.portfolio.get(task)
        if state is None:
            raise NotFoundError(f"no task {task!r} (tasks: {self._known()})")
        data = await request.json()
        _only(data, {"inputs"})
        inputs = data.get("inputs")
        if (
            not isinstance(inputs, list)
            or not 1 <= len(inputs) <= MAX_PREDICT_INPUTS
            or not all(isinstance(x, str) and x.strip() for x in inputs)
        ):
            raise RequestError(
                f"'inputs' must be an array of 1 to {MAX_PREDICT_INPUTS} non-empty strings",
                param="inputs",
            )
        answers = await asyncio.gather(*(self.answer(state, text) for text in inputs))
        for text, answer in zip(inputs, answers, strict=True):
            self._record(
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
        await _send(send, 200, orjson.dumps(payload))

    async def _healthz(self, request: Request, send: Send) -> None:
        await _send(send, 200, b'{"status":"ok"}')

    async def _readyz(self, request: Request, send: Send) -> None:
        if not self.portfolio.loaded:
            reason = self.portfolio.last_error or "loading the portfolio"
            body = orjson.dumps({"status": "not ready", "reason": reason})
            await _send(send, 503, body, [(b"retry-after", b"1")])
            return
        tasks = {
            s.spec.name: {alias: d.version for alias, d in s.deployed.items()}
            for s in self.portfolio.tasks()
        }
        await _send(send, 200, orjson.dumps({"status": "ready", "tasks": tasks}))

    async def _metrics(self, request: Request, send: Send) -> None:
        self._update_gauges()
        await _send(send, 200, self.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    async def _openapi(self, request: Request, send: Send) -> None:
        await _send(send, 200, orjson.dumps(openapi_document()))

    # -- admin routes ----------------------------------------------------------------------

    async def _admin_call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except ConfigurationError as exc:  # raised by the request's values, not by the server
            raise RequestError(str(exc)) from exc

    def _task_view(self, record: Any) -> dict[str, Any]:
        state = self.portfolio.get(record.name)
        served = {a: d.version for a, d in state.deployed.items()} if state else {}
        return {**record.to_dict(), "serving": served}

    async def _admin_tasks(self, request: Request, send: Send) -> None:
        await self._authenticate(request, admin=True)
        records = await self._admin_call(self.registry.list_tasks)
        await _send(send, 200, orjson.dumps([self._task_view(r) for r in records]))

    async def _admin_task(self, request: Request, send: Send) -> None:
        await self._authenticate(request, admin=True)
        name = request.path.strip("/").split("/")[3]
        record = await self._admin_call(self.registry.get_task, name)
        aliases = await self._admin_call(self.registry.list_aliases, name)
        await _send(send, 200, orjson.dumps({**self._task_view(record), "aliases": aliases}))

    async def _admin_aliases(self, request: Request, send: Send) -> None:
        await self._authenticate(request, admin=True)
        name = request.path.strip("/").split("/")[3]
        aliases = await self._admin_call(self.registry.list_aliases, name)
        history = await self._admin_call(self.registry.alias_history, name)
        payload = {"task": name, "aliases": aliases, "history": [e.to_dict() for e in history]}
        await _send(send, 200, orjson.dumps(payload))

    async def _admin_set_alias(self, request: Request, send: Send) -> None:
        key = await self._authenticate(request, admin=True)
        _, _, _, name, _, alias = request.path.strip("/").split("/")
        data = await request.json()
        _only(data, {"version", "reason", "expected_current", "force"})
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RequestError("'version' must be a positive integer", param="version")
        reason = data.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise RequestError("'reason' must say why the alias moves", param="reason")
        force = data.get("force", False)
        if not isinstance(force, bool):
            raise RequestError("'force' must be true or false", param="force")
        expected = data.get("expected_current", _MISSING)
        if (
            expected is not _MISSING
            and expected is not None
            and (isinstance(expected, bool) or not isinstance(expected, int))
        ):
            raise RequestError(
                "'expected_current' must be a version number or null", param="expected_current"
            )
        if alias == "champion" and not force:
            decisions = await self._admin_call(self.registry.gate_decisions, name)
            if not any(d.passed and d.version == version and d.alias == alias for d in decisions):
                raise RequestError(
                    f"task {name} v{version} has no passed gate for champion; run "
                    "`niche promote` (which gates it), or send force: true with a reason",
                    param="version",
                    code="gate_required",
                )
        actor = f"api:{key.prefix}" if key is not None else "api:local"
        kwargs: dict[str, Any] = {"actor": actor, "reason": reason}
        if expected is not _MISSING:
            kwargs["expected_current"] = expected
        event = await self._admin_call(self.registry.set_alias, name, alias, version, **kwargs)
        await self.portfolio.refresh()
        await _send(send, 200, orjson.dumps(event.to_dict()))

    async def _admin_keys(self, request: Request, send: Send) -> None:
        await self._authenticate(request, admin=True)
        records = await self._admin_call(self.registry.list_keys)
        await _send(send, 200, orjson.dumps([r.to_dict() for r in records]))

    async def _admin_create_key(self, request: Request, send: Send) -> None:
        await self._authenticate(request, admin=True)
        data = await request.json()
        _only(data, {"scope", "budget_usd", "name"})
        budget = data.get("budget_usd")
        if budget is not None and (
            isinstance(budget, bool)
            or not isinstance(budget, int | float)
            or not math.isfinite(budget)
            or budget < 0
        ):
            raise RequestError("'budget_usd' must be a non-negative number", param="budget_usd")
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise RequestError("'name' must be a string", param="name")
        scope = data.get("scope", "inference")
        if not isinstance(scope, str):
            raise RequestError("'scope' must be 'inference' or 'admin'", param="scope")
        record, secret = await self._admin_call(
            self.registry.create_key, scope=scope, budget_usd=budget, name=name
        )
        await _send(send, 201, orjson.dumps({"key": record.to_dict(), "secret": secret}))

    async def _admin_revoke_key(self, request: Request, send: Send) -> None:
        await self._authenticate(request, admin=True)
        ref = request.path.strip("/").split("/")[3]
        record = await self._admin_call(self.registry.revoke_key, ref)
        await _send(send, 200, orjson.dumps(record.to_dict()))


_MISSING: Any = object()


def _only(data: dict[str, Any], allowed: set[str]) -> None:
    """Refuse fields a native route does not know (a misspelt field must not be ignored)."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}", param=unknown[0])


def _read_sse(stream: bytes) -> tuple[str | None, int | None, int | None]:
    """The content and token usage carried by an SSE chat-completion stream."""
    parts: list[str] = []
    input_tokens = output_tokens = None
    for line in stream.split(b"\n"):
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            continue
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(chunk, dict):
            continue
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                parts.append(delta["content"])
        if chunk.get("usage"):
            input_tokens, output_tokens = _usage(chunk)
    return ("".join(parts) if parts else None), input_tokens, output_tokens


def create_app() -> Gateway:
    """The factory uvicorn's workers call (``niche serve --workers N``)."""
    return Gateway(Settings())
