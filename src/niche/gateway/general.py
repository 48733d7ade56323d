"""The general model as the cascade sees it: ask a task's question, read the answer's label,
its token usage and its price.

A task's own ``openai`` general model, else the gateway's (``NICHE_GENERAL_*``), is called
through :class:`~niche.gateway.upstream.Upstream` (aiohttp, one circuit breaker per
endpoint); with neither, the built-in offline zero-shot model answers.

    >>> general = GeneralClient(config, zero_shot=portfolio.zero_shot)
    >>> reply = await general.ask(state, "where is my card?")
    >>> reply.label, reply.input_tokens, reply.cost_usd
    ('card_arrival', 41, 4.1e-05)

What a reply cost is :func:`niche.evaluation.cost_usd` of its token usage at the model's
prices (:func:`prices`): the same pure function that prices a specialist's compute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from niche.errors import UpstreamError
from niche.evaluation import Prices, cost_usd
from niche.gateway.config import GatewayConfig
from niche.gateway.upstream import CircuitBreaker, Upstream
from niche.registry.tasks import GeneralModelSpec
from niche.specialists.base import Usage
from niche.specialists.prompting import map_answer, render_prompt

if TYPE_CHECKING:
    from niche.gateway.batching import MicroBatcher
    from niche.gateway.portfolio import TaskState

__all__ = [
    "GeneralClient",
    "GeneralReply",
    "content",
    "prices",
    "read_sse",
    "token_cost",
    "usage",
]


@dataclass(frozen=True)
class GeneralReply:
    """The general model's answer to one task input: its text, the label it names (None:
    none or several), its token usage and what it cost."""

    answer: str
    label: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float = 0.0


def usage(reply: Any) -> tuple[int | None, int | None]:
    """The prompt and completion tokens an OpenAI-style ``reply`` reports (None: unknown)."""
    found = reply.get("usage") if isinstance(reply, dict) else None
    if not isinstance(found, dict):
        return None, None
    prompt, completion = found.get("prompt_tokens"), found.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


def content(reply: Any) -> str | None:
    """The first choice's message text of a chat-completion ``reply``."""
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None


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
            input_tokens, output_tokens = usage(chunk)
    return ("".join(parts) if parts else None), input_tokens, output_tokens


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

    def upstream(self, spec: GeneralModelSpec) -> Upstream:
        """The client of ``spec``'s endpoint (one per base URL, model and key variable)."""
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

    def upstreams(self) -> list[Upstream]:
        return list(self._upstreams.values())

    def spec_for(self, state: TaskState) -> GeneralModelSpec | None:
        """The task's own ``openai`` general model, else the gateway's (None: zero-shot)."""
        if state.spec.general.kind == "openai":
            return state.spec.general
        return self.config.general

    async def ask(self, state: TaskState, text: str) -> GeneralReply:
        """Ask the task's general model to label ``text``.

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
        body = orjson.dumps(
            {
                "model": spec.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0,
            }
        )
        upstream = self.upstream(spec)
        # Its total timeout raises UpstreamTimeoutError (and counts against the breaker).
        reply = await upstream.complete(body, timeout_s=timeout_s)
        if reply.status >= 400:
            raise UpstreamError(
                f"general model {spec.model} refused the request: HTTP {reply.status}",
                status=reply.status,
            )
        data = reply.json()
        answer = content(data)
        input_tokens, output_tokens = usage(data)
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
