"""Budgets that hold: a request on a budgeted key reserves its worst-case cost before it runs
and settles its actual cost after.

The reservation is one transaction in the registry database (``registry.keys.reserve``: the
key's row locked, spend plus what requests in flight hold compared with the budget), so
every ``--workers`` process sees the others' requests in flight, and a budget is overshot by
at most the last admitted request's worst case (measured with 50 concurrent requests in
``tests/test_budgets.py``). Settling releases the reservation and adds the actual cost, on
every path: success, an upstream error, a client that went away. A reservation a crashed
worker never settled lapses after ``NICHE_GATEWAY_RESERVATION_TTL_S``.

Worst cases, from what the request says before it runs:

- a task request: per input, the specialist's compute for the task's timeout, plus the task's
  general model (when it is an endpoint) at its prices for the rendered prompt's UTF-8 bytes
  plus :data:`MESSAGE_OVERHEAD_TOKENS` input tokens and its ``max_tokens`` output tokens. A
  byte-level BPE token covers at least one byte, so bytes bound the tokens from above;
- a pass-through chat request: the body's bytes as input tokens, and ``n`` times its
  ``max_completion_tokens`` (else ``max_tokens``, else ``NICHE_GATEWAY_PASSTHROUGH_MAX_TOKENS``)
  output tokens, at the gateway's general model's prices.

While the database cannot be reached, a reservation is made locally: against the key's spend
and holds last seen in the database plus this process's own holds and unwritten spend, with
the same admission rule. Each worker then admits on its own, so an outage can overshoot a
budget by at most what one worker admits per request in flight (bounded, never unlimited),
and only for as long as the key's verdict may be used (``NICHE_GATEWAY_KEY_STALE_S``). Spend
that could not be written is kept and written when the database is back.

Keys without a budget reserve nothing: their spend takes the capture writer's batched path.

    >>> budgets = Budgets(registry, general=general, config=config)
    >>> async with budgets.hold(key, lambda: budgets.task_worst_case(state, [text])):
    ...     answer = await policy.answer(state, text)
    ...     traffic.record(..., key=key, answer=answer)   # charges the hold (see charge())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from niche.errors import BudgetExceededError, DatabaseError
from niche.evaluation import Prices, cost_usd
from niche.gateway.general import prices, token_cost
from niche.registry.stores.keys import Settlement
from niche.specialists.base import Usage
from niche.specialists.prompting import render_prompt

if TYPE_CHECKING:
    from niche.gateway.config import GatewayConfig
    from niche.gateway.general import GeneralClient
    from niche.gateway.portfolio import TaskState
    from niche.registry.store import KeyRecord, Registry

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "Budgets", "Hold", "charge"]

log = logging.getLogger("niche.gateway")

MESSAGE_OVERHEAD_TOKENS = 16
"""Input tokens a chat template adds around one message (role markers, separators): a bound
for the templates of common chat models (OpenAI's adds 3 to 4; Llama 3's and Gemma's ~5)."""

RETRY_S = 1.0

_HOLD: ContextVar[Hold | None] = ContextVar("niche_budget_hold", default=None)
_NO_HOLD: contextlib.nullcontext[None] = contextlib.nullcontext()


@dataclass
class Hold:
    """The worst-case cost one request holds on its key, and what it was charged so far.

    ``reservation_id`` None: held locally (the database was unreachable when it was made).
    """

    key: KeyRecord
    worst_usd: float
    reservation_id: int | None
    charged_usd: float = 0.0


def charge(key: KeyRecord | None, usd: float) -> bool:
    """Charge ``usd`` to the request's hold on ``key``; False when it holds none (the caller
    then counts the spend itself).

    The traffic recorder calls it, so the cost a request's record carries is the cost its
    hold settles, on every route that holds.

        >>> charge(key, answer.cost_usd)
        True
    """
    hold = _HOLD.get()
    if hold is None or key is None or hold.key.id != key.id:
        return False
    hold.charged_usd += usd
    return True


class Budgets:
    """Reserves and settles the budgeted requests of one gateway process (see the module)."""

    def __init__(
        self,
        registry: Registry,
        *,
        general: GeneralClient,
        config: GatewayConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.general = general
        self.config = config
        self.clock = clock
        self._seen: dict[int, float] = {}  # key id → spend + holds, as the database last said
        self._local: defaultdict[int, float] = defaultdict(float)  # holds made offline
        self._unsettled: list[Settlement] = []
        self._down_until = 0.0
        self._flushing = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None
        self.local_holds = 0

    # -- worst cases --------------------------------------------------------------------

    def task_worst_case(self, state: TaskState, texts: Sequence[str]) -> float:
        """The most answering ``texts`` for ``state``'s task can cost, in USD."""
        timeout_s = state.spec.serving.timeout_s or self.config.timeout_s
        compute = cost_usd(
            Usage(compute_s=timeout_s), Prices(cpu_hour_usd=self.config.cpu_hour_usd)
        )
        spec = self.general.spec_for(state)
        total = compute * len(texts)
        if spec is None:  # the offline zero-shot model: compute only
            return total
        at, labels = prices(spec), state.labels
        for text in texts:
            prompt = render_prompt(spec.prompt_template, text, labels)
            input_tokens = len(prompt.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS
            total += token_cost(at, input_tokens, spec.max_tokens)
        return total

    def passthrough_worst_case(self, body: bytes, data: dict[str, Any]) -> float:
        """The most a chat request passed through to the general model can cost, in USD."""
        limit = _count(data.get("max_completion_tokens")) or _count(data.get("max_tokens"))
        choices = _count(data.get("n")) or 1
        output_tokens = (limit or self.config.passthrough_max_tokens) * choices
        return token_cost(self.general.default_prices, len(body), output_tokens)

    # -- holds ---------------------------------------------------------------------------

    def hold(
        self, key: KeyRecord | None, worst: Callable[[], float]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Reserve ``worst()`` on ``key`` for the block, and settle what it charged after.

        A key without a budget (or local mode) holds nothing and computes no worst case (one
        shared no-op context: the hot path allocates nothing for it). Raises
        :class:`~niche.errors.BudgetExceededError` (429) when the key's budget is spent or
        held by its requests in flight.
        """
        if key is None or key.budget_usd is None:
            return _NO_HOLD
        return self._held(key, worst)

    @contextlib.asynccontextmanager
    async def _held(self, key: KeyRecord, worst: Callable[[], float]) -> AsyncIterator[None]:
        hold = await self.reserve(key, worst())
        token = _HOLD.set(hold)
        try:
            yield
        finally:
            _HOLD.reset(token)
            # Its own task, shielded: a request cancelled here still settles.
            settling = asyncio.ensure_future(self.settle(hold))
            await asyncio.shield(settling)

    async def reserve(self, key: KeyRecord, usd: float) -> Hold:
        """Hold ``usd`` of ``key``'s budget (in the database, or locally during an outage)."""
        if self.clock() >= self._down_until and (not self._unsettled or await self.flush()):
            try:
                held = await asyncio.to_thread(
                    self.registry.keys.reserve, key.id, usd, ttl_s=self.config.reservation_ttl_s
                )
            except DatabaseError as exc:
                self._unreachable(exc)
            else:
                self._seen[key.id] = (
                    held.spent_usd + held.reserved_usd - (usd if held.granted else 0)
                )
                if not held.granted:
                    raise _refused(key, held.spent_usd, held.reserved_usd)
                return Hold(key, usd, held.id)
        return self._reserve_locally(key, usd)

    def _reserve_locally(self, key: KeyRecord, usd: float) -> Hold:
        budget = key.budget_usd if key.budget_usd is not None else float("inf")
        committed = self._seen.get(key.id, key.spent_usd) + self._local[key.id]
        committed += sum(s.usd for s in self._unsettled if s.key_id == key.id)
        if committed >= budget:
            raise _refused(key, committed, 0.0)
        self._local[key.id] += usd
        self.local_holds += 1
        return Hold(key, usd, None)

    async def settle(self, hold: Hold) -> None:
        """Release ``hold`` and add what it charged to its key's spend (kept and written
        later when the database cannot be reached)."""
        if hold.reservation_id is None:
            self._local[hold.key.id] -= hold.worst_usd
        settlement = Settlement(hold.key.id, hold.charged_usd, hold.reservation_id)
        if hold.reservation_id is None and settlement.usd <= 0:
            return
        if hold.reservation_id is None or self.clock() < self._down_until:
            self._keep(settlement)
            return
        try:
            await asyncio.to_thread(self.registry.keys.settle, [settlement])
        except DatabaseError as exc:
            self._unreachable(exc)
            self._keep(settlement)
            return
        if hold.key.id in self._seen:
            # Counted twice when a later reservation saw this hold: too high, never too low.
            self._seen[hold.key.id] += settlement.usd

    def _keep(self, settlement: Settlement) -> None:
        self._unsettled.append(settlement)
        if self._retry is None or self._retry.done():
            self._retry = asyncio.ensure_future(self._retry_until_written())

    async def _retry_until_written(self) -> None:
        while self._unsettled:
            await asyncio.sleep(RETRY_S)
            await self.flush()

    async def flush(self) -> bool:
        """Write the settlements kept while the database was unreachable; whether all were."""
        async with self._flushing:
            batch = list(self._unsettled)
            if not batch:
                return True
            try:
                await asyncio.to_thread(self.registry.keys.settle, batch)
            except DatabaseError as exc:
                self._unreachable(exc)
                return False
            del self._unsettled[: len(batch)]  # settlements kept meanwhile stay queued
            for settlement in batch:
                if settlement.key_id in self._seen:  # now in the database's figure
                    self._seen[settlement.key_id] += settlement.usd
            log.warning("gateway: %d budget settlement(s) written after an outage", len(batch))
            return True

    def _unreachable(self, exc: DatabaseError) -> None:
        if self.clock() >= self._down_until:
            log.warning(
                "gateway: budgets are reserved locally while the registry cannot be reached: %s",
                exc.message,
            )
        self._down_until = self.clock() + RETRY_S

    @property
    def unsettled_usd(self) -> float:
        """Spend of this process not yet written to the database."""
        return sum(s.usd for s in self._unsettled)

    async def aclose(self) -> None:
        """Stop retrying, after one last attempt to write what is kept."""
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
            self._retry = None
        self._down_until = 0.0
        if not await self.flush():
            log.error(
                "gateway: $%.6f of budgeted spend could not be written at shutdown",
                self.unsettled_usd,
            )


def _count(value: object) -> int | None:
    """``value`` when it is a positive integer (a token count a client sent), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _refused(key: KeyRecord, spent: float, held: float) -> BudgetExceededError:
    budget = key.budget_usd or 0.0
    if spent >= budget:
        return BudgetExceededError(
            f"key {key.prefix}… has spent its budget (${spent:.4f} of ${budget:.4f}); raise "
            "it or use another key",
            key_id=key.id,
        )
    error = BudgetExceededError(
        f"key {key.prefix}… has spent ${spent:.4f} of its ${budget:.4f} budget and its "
        f"requests in flight hold ${held:.4f}; retry when they finish, or raise the budget",
        key_id=key.id,
    )
    error.retry_after_s = 1.0
    return error
