"""The general model as the cascade sees it: ask a task's question, read the answer's label,
its token usage and its price; and the token count of a pass-through stream.

A task's own ``openai`` general model, else the gateway's (``NICHE_GENERAL_*``), is called
through :class:`~niche.gateway.upstream.Upstream` (aiohttp, one circuit breaker per endpoint
and use); with neither, the built-in offline zero-shot model answers. Every call is bounded
(``max_tokens``, ``stop``) and asks for the label as a JSON enum where the endpoint takes one
(``response_format``; ``auto`` steps down once per endpoint when it is refused).

    >>> general = GeneralClient(config, zero_shot=portfolio.zero_shot)
    >>> reply = await general.ask(state, "where is my card?")
    >>> reply.label, reply.input_tokens, reply.cost_usd
    ('card_arrival', 41, 4.1e-05)

What a reply cost is :func:`niche.evaluation.cost_usd` of its token usage at the model's
prices (:func:`prices`): the same pure function that prices a specialist's compute.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from niche.errors import UpstreamError
from niche.evaluation import Prices, cost_usd
from niche.gateway.config import GatewayConfig
from niche.gateway.upstream import CircuitBreaker, Upstream
from niche.registry.tasks import GeneralModelSpec
from niche.specialists.base import Usage
from niche.specialists.prompting import (
    chat_request,
    first_format,
    map_answer,
    next_format,
    render_prompt,
    reply_content,
    reply_usage,
)

if TYPE_CHECKING:
    from niche.gateway.batching import MicroBatcher
    from niche.gateway.portfolio import TaskState

__all__ = [
    "GeneralClient",
    "GeneralReply",
    "StreamUsage",
    "estimate_tokens",
    "prices",
    "read_sse",
    "token_cost",
]

log = logging.getLogger("niche.gateway")

# A refusal of the response format (OpenAI and vLLM say 400, llama.cpp's server 422).


@dataclass(frozen=True)
class GeneralReply:
    """The general model's answer to one task input: its text, the label it names (None:
    none or several), its token usage and what it cost."""

    answer: str
    label: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float = 0.0


def prices(spec: GeneralModelSpec) -> Prices:
    """What ``spec`` charges per 1M input and output tokens (its compute is the vendor's).

    >>> prices(spec).input_per_1m_tokens_usd
    1.0
    """
    return Prices(
        input_per_1m_tokens_usd=spec.price_input_per_1m_tokens_usd,
        output_per_1m_tokens_usd=spec.price_output_per_1m_tokens_usd,
    )


def token_cost(at: Prices, input_tokens: int | None, output_tokens: int | None) -> float:
    """:func:`~niche.evaluation.cost_usd` of the tokens a reply reports, at ``at``, in USD.

    No tokens reported, or a free model, cost 0.0 without building a ``Usage``: pass-through
    requests (the hot path) of an unpriced model allocate nothing for it.

        >>> token_cost(Prices(input_per_1m_tokens_usd=1.0), 12, 3)
        1.2e-05
    """
    if (input_tokens is None and output_tokens is None) or (
        not at.input_per_1m_tokens_usd and not at.output_per_1m_tokens_usd
    ):
        return 0.0
    return cost_usd(Usage(input_tokens=input_tokens, output_tokens=output_tokens), at)


def estimate_tokens(texts: Iterable[str]) -> int:
    """Tokens in ``texts`` by OpenAI's rule of thumb, 4 characters a token (rounded up).

    For an upstream that reports no usage: no tokenizer of the vendor's model is available
    offline (tiktoken fetches its encodings), and the estimate is within tens of percent
    for English text, which is what a budget needs.

        >>> estimate_tokens(["hello there"])
        3
    """
    return math.ceil(sum(len(text) for text in texts) / 4)


def read_sse(stream: bytes) -> tuple[str | None, int | None, int | None]:
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
            input_tokens, output_tokens = reply_usage(chunk)
    return ("".join(parts) if parts else None), input_tokens, output_tokens


def _usage_only(event: bytes) -> bool:
    """Whether an SSE event is the usage chunk ``include_usage`` adds (no choices)."""
    for line in event.splitlines():
        line = line.strip()
        if line.startswith(b"data:") and b'"usage"' in line:
            try:
                chunk = orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                return False
            return (
                isinstance(chunk, dict)
                and isinstance(chunk.get("usage"), dict)
                and not chunk.get("choices")
            )
    return False


class StreamUsage:
    """A pass-through stream as it is relayed: what it said and the tokens it used.

    ``strip``: the client did not ask for usage (``stream_options.include_usage``) but the
    gateway did, to count the stream's tokens; the usage chunk the upstream then adds (the
    last before ``[DONE]``, with no choices, as the OpenAI API documents) is dropped from
    what the client gets, and so is the ``"usage":null`` the API then adds to every other
    chunk (compact JSON, as OpenAI sends it). Without ``strip`` chunks are relayed exactly
    as they come.

        >>> watched = StreamUsage(chunks, strip=True)
        >>> await relay(send, 200, "text/event-stream", watched.chunks(), [], what="…")
        >>> watched.result()
        ('hello from the vendor', 12, 3)
    """

    def __init__(self, chunks: AsyncIterator[bytes], *, strip: bool) -> None:
        self._source = chunks
        self.strip = strip
        self._received: list[bytes] = []

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The chunks for the client; closing it closes the upstream's."""
        source = self._source
        pending = b""
        try:
            async for chunk in source:
                self._received.append(chunk)
                if not self.strip:
                    yield chunk
                    continue
                # Whole events only, so the usage chunk can be recognised and dropped.
                pending += chunk.replace(b"\r\n", b"\n")
                end = pending.rfind(b"\n\n")
                if end < 0:
                    continue
                ready, pending = pending[: end + 2], pending[end + 2 :]
                if b'"usage"' in ready:
                    events = ready.split(b"\n\n")
                    ready = b"".join(e + b"\n\n" for e in events if e and not _usage_only(e))
                    # The null usage every other chunk then carries. A quote inside a JSON
                    # string is escaped, so these bytes can only be the field itself.
                    ready = ready.replace(b',"usage":null', b"").replace(b'"usage":null,', b"")
                if ready:
                    yield ready
            if pending:
                yield pending
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    def result(self) -> tuple[str | None, int | None, int | None]:
        """The stream's content and its input and output tokens (None: not reported)."""
        return read_sse(b"".join(self._received))


class GeneralClient:
    """Every general model the gateway calls, one :class:`Upstream` per endpoint.

    ``default`` is the gateway's own (``NICHE_GENERAL_*``; None when unset): unknown models
    pass through to it. ``zero_shot(state)`` gives a task's offline model.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        zero_shot: Callable[[TaskState], MicroBatcher],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.zero_shot = zero_shot
        self.clock = clock
        self._upstreams: dict[tuple[Any, ...], Upstream] = {}
        self.default = self.upstream(config.general) if config.general else None
        self.default_prices = prices(config.general) if config.general else Prices()

    def __repr__(self) -> str:
        return f"GeneralClient(default={self.default!r})"

    def _breaker(self) -> CircuitBreaker:
        return CircuitBreaker(
            self.config.breaker_failures, self.config.breaker_reset_s, clock=self.clock
        )

    def upstream(self, spec: GeneralModelSpec) -> Upstream:
        """The client of ``spec``'s endpoint (one per base URL, model and key variable)."""
        ident = (spec.base_url, spec.model, spec.api_key_env)
        upstream = self._upstreams.get(ident)
        if upstream is None:
            upstream = Upstream(
                spec,
                timeout_s=self.config.timeout_s,
                breaker=self._breaker,
                max_connections=max(16, self.config.max_concurrency),
            )
            self._upstreams[ident] = upstream
        return upstream

    def upstreams(self) -> list[Upstream]:
        return list(self._upstreams.values())

    def spec_for(self, state: TaskState) -> GeneralModelSpec | None:
        """The task's own ``openai`` general model, else the gateway's (None: zero-shot)."""
        if state.spec.general.kind == "openai":
            return state.spec.general
        return self.config.general

    async def ask(self, state: TaskState, text: str, *, use: str = "cascade") -> GeneralReply:
        """Ask the task's general model to label ``text``, for ``use`` (``cascade`` or
        ``shadow``: each has its own circuit breaker).

        Raises :class:`UpstreamError` (or its timeout and open-circuit kinds) when the model
        fails or refuses.
        """
        spec = self.spec_for(state)
        labels = state.labels
        if spec is None:
            predicted = await self.zero_shot(state).submit(text)
            return GeneralReply(answer=predicted.label, label=predicted.label)
        timeout_s = state.spec.serving.timeout_s or self.config.timeout_s
        prompt = render_prompt(spec.prompt_template, text, labels)
        upstream = self.upstream(spec)
        auto = spec.response_format == "auto"
        # Under "auto", where this endpoint was left after its last refusal.
        kind = (auto and upstream.accepted_format) or first_format(spec.response_format)
        while True:
            body = chat_request(
                spec.model or "",
                prompt,
                labels,
                max_tokens=spec.max_tokens,
                stop=spec.stop,
                response_format=kind,
            )
            # Its total timeout raises UpstreamTimeoutError (and counts against the breaker).
            reply = await upstream.complete(orjson.dumps(body), timeout_s=timeout_s, use=use)
            fallback = next_format(spec.response_format, kind, reply.status)
            if fallback is not None:
                log.warning(
                    "general model %s refused response_format %s (HTTP %d): asking with %s "
                    "from now on (set general.response_format to choose)",
                    upstream.name,
                    kind,
                    reply.status,
                    fallback,
                )
                kind = upstream.accepted_format = fallback
                continue
            break
        if reply.status >= 400:
            raise UpstreamError(
                f"general model {spec.model} answered HTTP {reply.status}",
                status=reply.status,
            )
        data = reply.json()
        answer = reply_content(data)
        input_tokens, output_tokens = reply_usage(data)
        return GeneralReply(
            answer=answer or "",
            label=map_answer(answer, labels),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=token_cost(prices(spec), input_tokens, output_tokens),
        )

    def passthrough_cost(self, input_tokens: int | None, output_tokens: int | None) -> float:
        """What a request passed through to ``default`` cost, from the tokens it reports."""
        return token_cost(self.default_prices, input_tokens, output_tokens)

    async def aclose(self) -> None:
        for upstream in self._upstreams.values():
            await upstream.close()
