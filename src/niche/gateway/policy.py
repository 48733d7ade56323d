"""The cascade policy: how one task input is answered. Plain code, no HTTP.

Pick a version (the challenger for a canary share of requests, else the champion) and draw
whether the request is *sampled* (a share of every task's requests, ``serving.shadow_fraction``,
drawn first, whatever the specialist's confidence). Ask the version's
:class:`~niche.gateway.handles.SpecialistHandle`, and keep the answer when its confidence
reaches the task's cascade threshold (a sampled one is then sent to the general model too, in
the background: a shadow call). Otherwise ask the general model; when it fails, times out,
has its circuit open or names no label, the specialist's answer stands
(``specialist-fallback``); when the specialist failed, the general model answers
(``general-fallback``). What an answer cost is :func:`niche.evaluation.cost_usd` of the
specialist's usage at ``prices`` (its share of its batch's CPU seconds, measured as
evaluation measures them: see :mod:`~niche.gateway.batching`), plus the general model's tokens
(priced by :class:`~niche.gateway.general.GeneralClient`). Cascade and shadow calls each have
their own circuit breaker, apart from pass-through's.

Sampled requests are a uniform random sample of a task's traffic with the general model's
label (shadowed when the specialist was sure, cascaded when not): what the monitor's agreement
estimate and distillation read, so the teacher-labelled rows are not only the hard cases.

    >>> policy = CascadePolicy(general, metrics, canary_fraction=0.0, shadow_fraction=0.05,
    ...                        prices=Prices(cpu_hour_usd=0.05), rng=random.Random(7))
    >>> answer = await policy.answer(portfolio.get("banking77"), "where is my card?")
    >>> answer.route, answer.label
    ('specialist', 'card_arrival')
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from niche.errors import (
    CircuitOpenError,
    SpecialistTimeoutError,
    UpstreamError,
    UpstreamTimeoutError,
)
from niche.evaluation import Prices, cost_usd
from niche.gateway.general import GeneralReply
from niche.gateway.metrics import GatewayMetrics

if TYPE_CHECKING:
    from niche.gateway.handles import SpecialistHandle
    from niche.gateway.portfolio import TaskState

__all__ = ["CascadePolicy", "GeneralModel", "RandomSource", "TaskAnswer"]

log = logging.getLogger("niche.gateway")


class GeneralModel(Protocol):
    """What the policy needs of the general model (:class:`~niche.gateway.general.GeneralClient`)."""

    async def ask(self, state: TaskState, text: str, *, use: str = "cascade") -> GeneralReply:
        """Label ``text``; ``use`` (``cascade`` or ``shadow``) picks the circuit breaker."""
        ...


class RandomSource(Protocol):
    """``random() -> float`` in [0, 1): :class:`random.Random`, or a scripted one in tests."""

    def random(self) -> float: ...


@dataclass
class TaskAnswer:
    """How one task input was answered; becomes headers, the ``niche`` field and a record.

    ``sampled``: drawn for the random teacher sample (see the module); ``text``: the input
    the specialist classified; ``request_id``: the id the client gets (set by the route).
    """

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
    sampled: bool = False
    text: str | None = None
    request_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float = 0.0
    compute_s: float | None = None
    shadow: asyncio.Task[None] | None = field(default=None, repr=False)

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
            "request_id": self.request_id,
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


def _fallback_reason(exc: BaseException) -> str:
    if isinstance(exc, UpstreamTimeoutError):
        return "timeout"
    if isinstance(exc, CircuitOpenError):
        return "circuit-open"
    return "upstream-error"


class CascadePolicy:
    """Answers task inputs with the specialists and the general model (see the module).

    ``canary_fraction`` and ``shadow_fraction`` (the sampled share) apply to tasks that do not
    set their own; ``prices`` price a specialist's usage (``NICHE_CPU_HOUR_USD``); ``rng``
    decides canaries, then samples, in that order (inject a seeded or scripted one in tests);
    ``specialist_timeout_s`` bounds each specialist answer
    (``NICHE_GATEWAY_SPECIALIST_TIMEOUT_S``: past it, the input cascades, ``fallback_reason``
    ``specialist-timeout``).
    """

    def __init__(
        self,
        general: GeneralModel,
        metrics: GatewayMetrics,
        *,
        canary_fraction: float,
        shadow_fraction: float,
        prices: Prices,
        rng: RandomSource | None = None,
        specialist_timeout_s: float | None = None,
    ) -> None:
        self.general = general
        self.metrics = metrics
        self.canary_fraction = canary_fraction
        self.shadow_fraction = shadow_fraction
        self.prices = prices
        self.rng: RandomSource = rng if rng is not None else random.Random()
        self.specialist_timeout_s = specialist_timeout_s
        self._background: set[asyncio.Task[None]] = set()

    def pick(self, state: TaskState) -> SpecialistHandle | None:
        """The handle to ask: the challenger for a canary share, else the champion."""
        challenger = state.challenger
        if challenger is not None:
            fraction = state.spec.serving.canary_fraction
            fraction = self.canary_fraction if fraction is None else fraction
            if fraction > 0 and self.rng.random() < fraction:
                return challenger
        return state.champion

    async def answer(self, state: TaskState, text: str) -> TaskAnswer:
        """Answer ``text`` for ``state``'s task: specialist, cascade, or fallback.

        Raises only when neither model could answer (the specialist failed or is missing,
        and the general model failed or named no label).
        """
        task = state.spec.name
        handle = self.pick(state)
        answer = TaskAnswer(task=task, label="", route="general", text=text)
        # Drawn before the confidence is known, for every request: an unbiased sample.
        fraction = state.spec.serving.shadow_fraction
        fraction = self.shadow_fraction if fraction is None else fraction
        answer.sampled = fraction > 0 and self.rng.random() < fraction
        specialist_ok = False
        if handle is not None:
            answer.alias, answer.model_version = handle.alias, handle.version
            try:
                # Bounded: a hung or overloaded specialist makes the input cascade.
                async with asyncio.timeout(self.specialist_timeout_s):
                    (predicted,) = await handle.predict([text])
            except Exception as exc:
                timed_out = isinstance(exc, TimeoutError | SpecialistTimeoutError)
                log.error(
                    "task %s: specialist v%d failed: %s",
                    task,
                    handle.version,
                    str(exc) or f"no answer within {self.specialist_timeout_s} s",
                )
                answer.fallback_reason = "specialist-timeout" if timed_out else "specialist-error"
            else:
                specialist_ok = True
                answer.label = answer.specialist_label = predicted.label
                answer.confidence = predicted.confidence
                answer.cost_usd = cost_usd(predicted.usage, self.prices)
                answer.compute_s = predicted.usage.compute_s
                self.metrics.batch_size.labels(task).observe(predicted.batch_size)
                if predicted.confidence >= state.spec.cascade_threshold:
                    answer.route = "specialist"
                    if answer.sampled:
                        answer.shadow = self._spawn(self._shadow(state, text, answer))
                    return answer
        else:
            answer.fallback_reason = "no-champion"
        self.metrics.cascaded.labels(task).inc()
        try:
            general = await self.general.ask(state, text, use="cascade")
        except Exception as exc:  # the general model is a dependency: any failure falls back
            if not specialist_ok:
                raise
            if not isinstance(exc, UpstreamError):
                log.error("task %s: the general model failed: %s", task, exc)
            answer.route = "specialist-fallback"
            answer.fallback_reason = _fallback_reason(exc)
            return answer
        self._take_general(answer, general)
        answer.cost_usd += general.cost_usd
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
        answer.route = "general" if specialist_ok or handle is None else "general-fallback"
        return answer

    def _take_general(self, answer: TaskAnswer, general: GeneralReply) -> None:
        answer.general_answer, answer.general_label = general.answer, general.label
        answer.input_tokens, answer.output_tokens = general.input_tokens, general.output_tokens
        if general.input_tokens:
            self.metrics.tokens.labels(answer.task, "input").inc(general.input_tokens)
        if general.output_tokens:
            self.metrics.tokens.labels(answer.task, "output").inc(general.output_tokens)

    async def _shadow(self, state: TaskState, text: str, answer: TaskAnswer) -> None:
        """Ask the general model too, after answering; record whether the two agree."""
        try:
            general = await self.general.ask(state, text, use="shadow")
        except Exception as exc:
            self.metrics.shadow.labels(answer.task, "error").inc()
            log.info("task %s: shadow call failed: %s", answer.task, exc)
            return
        # As the answer's record will show it (its tokens are not counted as cascade tokens).
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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    @property
    def pending(self) -> int:
        """Shadow calls still running."""
        return len(self._background)

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the shadow calls still running."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout_s)
