"""The OpenAI-compatible surface: ``POST /v1/chat/completions``, ``GET /v1/models``, and the
relay of every other ``/v1/`` route (and of unknown models) to the general model.

A chat completion whose ``model`` is a task is answered by the cascade; any other model
passes through to the general model as it is, streamed chunk by chunk when asked.

    >>> surface = OpenAIRoutes(guard=guard, portfolio=portfolio, policy=policy,
    ...                        general=general, traffic=traffic, config=config, budgets=budgets)
    >>> table = RouteTable(surface.routes(), fallback=surface.fallback())
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson

from niche.errors import NicheError, NotFoundError, RequestError
from niche.gateway.asgi import Params, Request, Send, relay, respond
from niche.gateway.general import StreamUsage, estimate_tokens
from niche.gateway.protocol import (
    chat_completion,
    completion_chunks,
    last_user_text,
    new_completion_id,
    new_request_id,
    parse_chat_request,
)
from niche.gateway.routing import Fallback, Route
from niche.specialists.prompting import reply_content, reply_usage

if TYPE_CHECKING:
    from niche.gateway.auth import Guard
    from niche.gateway.budget import Budgets
    from niche.gateway.config import GatewayConfig
    from niche.gateway.general import GeneralClient
    from niche.gateway.policy import CascadePolicy
    from niche.gateway.portfolio import Portfolio
    from niche.gateway.traffic import TrafficRecorder
    from niche.gateway.upstream import Upstream
    from niche.registry.store import KeyRecord

__all__ = ["OpenAIRoutes", "forward_path"]

_PASSTHROUGH = (b"x-niche-route", b"passthrough")


class OpenAIRoutes:
    """The handlers of the OpenAI-compatible routes."""

    def __init__(
        self,
        *,
        guard: Guard,
        portfolio: Portfolio,
        policy: CascadePolicy,
        general: GeneralClient,
        traffic: TrafficRecorder,
        config: GatewayConfig,
        budgets: Budgets,
    ) -> None:
        self.guard = guard
        self.portfolio = portfolio
        self.policy = policy
        self.general = general
        self.traffic = traffic
        self.config = config
        self.budgets = budgets

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat, ("POST",)),
            Route("/v1/models", self.models, ("GET",)),
        ]

    def fallback(self) -> Fallback | None:
        """The relay of the general model's other routes (embeddings, …); None without one."""
        if self.general.default is None:
            return None
        return Fallback(accepts=_forwardable, handler=self.forward)

    async def chat(self, request: Request, send: Send, params: Params) -> None:
        key = await self.guard.check(request)
        body = await request.body()
        data = parse_chat_request(body)
        async with self.budgets.hold(key, lambda: self._worst_case(body, data)):
            await self._chat(request, send, body, data, key)

    def _worst_case(self, body: bytes, data: dict[str, Any]) -> float:
        state = self.portfolio.get(data["model"])
        if state is None:
            return self.budgets.passthrough_worst_case(body, data)
        try:
            text = last_user_text(data["messages"])
        except RequestError:
            return 0.0  # refused before anything runs
        return self.budgets.task_worst_case(state, [text])

    async def _chat(
        self, request: Request, send: Send, body: bytes, data: dict[str, Any], key: KeyRecord | None
    ) -> None:
        model = data["model"]
        state = self.portfolio.get(model)
        text: str | None = None
        try:
            if state is None:
                await self._passthrough(request, send, body, data, key)
                return
            text = last_user_text(data["messages"])
            answer = await self.policy.answer(state, text)
        except NicheError as exc:
            # A failed request is traffic too (the monitor counts errors per task).
            self.traffic.record(
                state=state,
                model=model,
                route="error",
                input=data["messages"],
                status=exc.http_status,
                started=request.started,
                key=key,
                text=text,
            )
            raise
        # The id the client gets is the record's: feedback names the request by it.
        completion_id = answer.request_id = new_completion_id()
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
        self.traffic.record(
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
            await respond(send, 200, completion_chunks(completion), headers, b"text/event-stream")
        else:
            await respond(send, 200, orjson.dumps(completion), headers)

    async def _passthrough(
        self,
        request: Request,
        send: Send,
        body: bytes,
        data: dict[str, Any],
        key: KeyRecord | None,
    ) -> None:
        model = data["model"]
        upstream = self.general.default
        if upstream is None:
            raise NotFoundError(
                f"model {model!r} is not a task of this gateway (tasks: "
                f"{self.portfolio.names()}), and no general model is configured to pass it "
                "through to (NICHE_GENERAL_BASE_URL)"
            )
        request_id = new_request_id("req-")
        if data.get("stream"):
            await self._passthrough_stream(request, send, body, data, key, request_id, upstream)
            return
        # The upstream's own answer, whatever its status (a 500 with its body included).
        reply = await upstream.complete(body)
        await respond(
            send,
            reply.status,
            reply.body,
            [(b"x-request-id", request_id.encode()), _PASSTHROUGH],
            reply.content_type.encode("latin-1"),
        )
        try:
            parsed = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            parsed = None
        text = reply_content(parsed)
        self._record_passthrough(
            request, data, key, request_id, reply.status, text, *reply_usage(parsed)
        )

    async def _passthrough_stream(
        self,
        request: Request,
        send: Send,
        body: bytes,
        data: dict[str, Any],
        key: KeyRecord | None,
        request_id: str,
        upstream: Upstream,
    ) -> None:
        options = data.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        if not asked:
            # Ask for the stream's usage to count its tokens; the client does not see it.
            extra = options if isinstance(options, dict) else {}
            body = orjson.dumps({**data, "stream_options": {**extra, "include_usage": True}})
        status, content_type, chunks = await upstream.stream(body)
        watched = StreamUsage(chunks, strip=not asked and status < 400)
        status, _ = await relay(
            send,
            status,
            content_type,
            watched.chunks(),
            [
                (b"cache-control", b"no-cache"),
                (b"x-request-id", request_id.encode()),
                _PASSTHROUGH,
            ],
            what=f"pass-through stream of {data['model']}",
            receive=request.receive,
        )
        text, input_tokens, output_tokens = watched.result()
        self._record_passthrough(
            request, data, key, request_id, status, text, input_tokens, output_tokens
        )

    async def forward(self, request: Request, send: Send, params: Params) -> None:
        """Relay a request for another route of the general model's API, as it is.

        Only a path that cannot leave the upstream's base URL is relayed (see
        :func:`forward_path`); any other is refused with a 400 before anything is sent.
        """
        path = forward_path(request.path)
        key = await self.guard.check(request)
        upstream = self.general.default
        if upstream is None:  # pragma: no cover - routed here only with an upstream
            raise NotFoundError(f"no route {request.method} {request.path}")
        body = await request.body()
        content_type = request.headers.get(b"content-type")
        request_id = new_request_id("req-")
        status, reply_type, chunks = await upstream.stream(
            body,
            method=request.method,
            path=path,
            query=request.query,
            content_type=content_type.decode("latin-1") if content_type else None,
        )
        status, _ = await relay(
            send,
            status,
            reply_type,
            chunks,
            [(b"x-request-id", request_id.encode()), _PASSTHROUGH],
            what=f"pass-through of {request.method} {request.path}",
            receive=request.receive,
        )
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        model = data.get("model") if isinstance(data, dict) else None
        self.traffic.record(
            state=None,
            model=model if isinstance(model, str) and model else request.path,
            route="passthrough",
            input={"path": request.path, "body": data},
            status=status,
            started=request.started,
            key=key,
            request_id=request_id,
        )

    def _record_passthrough(
        self,
        request: Request,
        data: dict[str, Any],
        key: KeyRecord | None,
        request_id: str,
        status: int,
        text: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        if input_tokens is None and output_tokens is None and (status < 400 or text):
            # The upstream reported no usage: estimate it, so the request still costs.
            input_tokens = estimate_tokens(_message_texts(data["messages"]))
            output_tokens = estimate_tokens((text,)) if text else 0
        self.traffic.record(
            state=None,
            model=data["model"],
            route="passthrough",
            input=data["messages"],
            status=status,
            started=request.started,
            key=key,
            general_answer=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self.general.passthrough_cost(input_tokens, output_tokens),
            request_id=request_id,
        )

    async def models(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request)
        data = [
            {
                "id": state.spec.name,
                "object": "model",
                "created": int(state.created_at.timestamp()),
                "owned_by": "niche",
                "niche": state.served(),
            }
            for state in sorted(self.portfolio.tasks(), key=lambda s: s.spec.name)
        ]
        if self.config.general is not None and self.config.general.model:
            data.append(
                {
                    "id": self.config.general.model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "upstream",
                }
            )
        await respond(send, 200, orjson.dumps({"object": "list", "data": data}))


def _message_texts(messages: list[Any]) -> list[str]:
    """The text of every message (string contents and text parts), for a token estimate."""
    texts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return texts


def _forwardable(path: str) -> bool:
    """Other paths of the OpenAI API are relayed; the native and admin ones never are."""
    return path.startswith("/v1/") and not path.startswith(("/v1/admin/", "/v1/tasks/"))


# The characters of a path segment (RFC 3986 pchar) less "%": the ASGI path is already
# decoded once, so a "%" left in it is a second encoding, which the upstream (or the HTTP
# client on the way) would decode into who knows what ("%2e%2e" into "..").
_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]+")


def forward_path(path: str) -> str:
    """The part of ``path`` below ``/v1`` to relay: ``/v1/embeddings`` → ``/embeddings``.

    Refused (:class:`RequestError`, 400, before any upstream call): a path that could reach
    outside the upstream's base path or be read differently there — a ``.`` or ``..``
    segment (in any encoding: the server decoded it once already), an empty segment (a
    trailing slash aside), a backslash, a ``%`` (a second encoding) or any character
    outside RFC 3986's path characters. An allow-list of OpenAI routes would refuse the
    vendor routes and ids a client may use; these rules refuse only what can escape.

        >>> forward_path("/v1/models/gpt-4o")
        '/models/gpt-4o'
    """
    below = path[len("/v1") :]
    segments = below.split("/")[1:]
    if len(segments) > 1 and segments[-1] == "":  # a trailing slash leaves nothing
        segments.pop()
    if not all(_SEGMENT.fullmatch(segment) and segment not in (".", "..") for segment in segments):
        raise RequestError(
            f"the path {path!r} is not relayed to the general model: a relayed path is "
            "/v1/ and plain segments (letters, digits, -._~ and the like), with no '.' or "
            "'..' segment, empty segment, backslash or percent-encoding",
            code="invalid_path",
        )
    return below
