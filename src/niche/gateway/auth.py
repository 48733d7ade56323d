"""API keys at the gateway: Bearer secrets checked against the registry, cached briefly.

Secrets are hashed before they are looked up or cached, and never logged. A verified key is
remembered for ``ttl_s`` (a revocation or a new budget takes effect within that time). With
no key created at all, the gateway is in local mode: requests from loopback need no key.

While the registry database cannot be reached, a key's last good verdict (and whether any
key exists) is used for up to ``stale_s`` after it was last confirmed, so a database blip
fails no request a loaded specialist can answer. A key never verified before cannot be
verified then: the request gets 503 with ``Retry-After``. During an outage the database is
asked again at most once per ``ttl_s`` per key; other requests use the stale verdict at once,
as they do while any lookup is running.

    >>> keys = KeyCache(registry, ttl_s=2.0, stale_s=300.0)
    >>> record = await keys.authenticate(b"Bearer nk-...", client_host="10.0.0.7")
    >>> guard = Guard(keys, pending_spend=capture.pending_spend)
    >>> record = await guard.check(request, admin=True)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from niche.errors import (
    AuthenticationError,
    BudgetExceededError,
    DatabaseError,
    PermissionDeniedError,
)

if TYPE_CHECKING:
    from niche.gateway.asgi import Request
    from niche.registry.store import KeyRecord, Registry

__all__ = ["LOOPBACK_HOSTS", "Guard", "KeyCache"]

log = logging.getLogger("niche.gateway")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_MAX_CACHED = 10_000

T = TypeVar("T")


def is_loopback(host: str | None) -> bool:
    return host is not None and (host in LOOPBACK_HOSTS or host.startswith("127."))


@dataclass
class _Verdict(Generic[T]):
    """An answer of the registry: ``confirmed_at`` when it last said so, ``checked_at`` when
    it was last asked (the same, unless the database could not be reached since)."""

    value: T
    confirmed_at: float
    checked_at: float


class KeyCache:
    """Verifies Bearer secrets through ``registry``; remembers answers for ``ttl_s``, and
    uses them for ``stale_s`` more while the registry database cannot be reached."""

    def __init__(
        self,
        registry: Registry,
        *,
        ttl_s: float,
        stale_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self.clock = clock
        self._verified: dict[str, _Verdict[KeyRecord | None]] = {}
        self._any_keys: _Verdict[bool] | None = None
        # One registry lookup at a time per key (and for any_keys): a burst of requests with
        # an expired verdict waits for one answer instead of sending one query each.
        self._lookups: dict[str, asyncio.Future[object]] = {}
        self.stale_answers = 0

    async def _lookup(
        self, ident: str, cached: _Verdict[T] | None, query: Callable[[], Awaitable[T]]
    ) -> _Verdict[T]:
        """A fresh verdict: one registry query per ``ident`` at a time. While it runs, other
        callers get the verdict it replaces (a database that hangs holds up one request per
        key and ``ttl_s``, not all of them), or wait for it when there is none."""
        running = cast("asyncio.Future[_Verdict[T]] | None", self._lookups.get(ident))
        if (
            running is not None
            and cached is not None
            and self.clock() - cached.confirmed_at <= self.stale_s
        ):
            return cached
        if running is None:
            # A task of its own: a caller that goes away does not cancel the others' answer.
            running = asyncio.ensure_future(self._ask(cached, query, self.clock()))
            self._lookups[ident] = cast("asyncio.Future[object]", running)
            running.add_done_callback(lambda done: self._done(ident, done))
        return await asyncio.shield(running)

    def _done(self, ident: str, lookup: asyncio.Future[_Verdict[T]]) -> None:
        self._lookups.pop(ident, None)
        if not lookup.cancelled():
            lookup.exception()  # its callers were told; a caller-less failure is not news

    async def _ask(
        self, cached: _Verdict[T] | None, query: Callable[[], Awaitable[T]], now: float
    ) -> _Verdict[T]:
        try:
            value = await query()
        except DatabaseError as exc:
            if cached is None or now - cached.confirmed_at > self.stale_s:
                raise  # never verified, or too long ago: 503 with Retry-After
            if self.stale_answers == 0 or cached.checked_at == cached.confirmed_at:
                log.warning(
                    "gateway: the registry cannot be reached; using API key verdicts up to "
                    "%.0f s old (NICHE_GATEWAY_KEY_STALE_S): %s",
                    self.stale_s,
                    exc.message,
                )
            self.stale_answers += 1
            cached.checked_at = now  # ask again in ttl_s, not on every request
            return cached
        return _Verdict(value, now, now)

    async def any_keys(self) -> bool:
        """Whether any usable key exists (otherwise the gateway runs in local mode)."""
        cached = self._any_keys
        if cached is None or self.clock() - cached.checked_at >= self.ttl_s:
            cached = self._any_keys = await self._lookup("any", cached, self._query_any_keys)
        return cached.value

    async def _query_any_keys(self) -> bool:
        keys = await asyncio.to_thread(self.registry.keys.all)
        return any(not key.revoked for key in keys)

    async def authenticate(
        self, authorization: bytes | None, *, client_host: str | None
    ) -> KeyRecord | None:
        """The key sent as ``Authorization: Bearer``; None in local mode from loopback.

        Raises :class:`AuthenticationError` for a missing, malformed, unknown or revoked key,
        and :class:`~niche.errors.DatabaseError` (503) when the registry cannot be reached
        and holds no recent enough verdict on this key.
        """
        if not authorization:
            if not await self.any_keys():
                if is_loopback(client_host):
                    return None
                raise AuthenticationError(
                    "no API keys exist, so only 127.0.0.1 may call this gateway without one; "
                    "create one with `niche keys create --scope inference`"
                )
            raise AuthenticationError(
                "missing API key: send 'Authorization: Bearer <key>' (see `niche keys create`)"
            )
        scheme, _, secret = authorization.decode("latin-1").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise AuthenticationError("malformed Authorization header: expected 'Bearer <key>'")
        digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()

        verdict = self._verified.get(digest)
        if verdict is None or self.clock() - verdict.checked_at >= self.ttl_s:

            async def query() -> KeyRecord | None:
                return await asyncio.to_thread(self.registry.keys.verify, secret)

            verdict = await self._lookup(digest, verdict, query)
            if len(self._verified) >= _MAX_CACHED:
                self._verified.clear()
            self._verified[digest] = verdict
        if verdict.value is None:
            if not await self.any_keys() and is_loopback(client_host):
                return None  # local mode: a dummy key (the OpenAI SDK needs one) is fine
            raise AuthenticationError("invalid API key (unknown or revoked)")
        return verdict.value


class Guard:
    """What every route checks first: the request's key, its scope and its budget.

    ``pending_spend(key_id)`` is spend not yet written to the registry (the capture
    writer's), so a key cannot overspend between two flushes. This is the cheap check before
    a request's body is read; a budgeted request then reserves its worst-case cost
    (:class:`~niche.gateway.budget.Budgets`).
    """

    def __init__(self, keys: KeyCache, *, pending_spend: Callable[[int], float]) -> None:
        self.keys = keys
        self.pending_spend = pending_spend

    async def check(self, request: Request, *, admin: bool = False) -> KeyRecord | None:
        """The request's key (None in local mode); raises 401, 403 or 429 (budget spent)."""
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
            spent = key.spent_usd + self.pending_spend(key.id)
            if spent >= key.budget_usd:
                raise BudgetExceededError(
                    f"key {key.prefix}… has spent its budget (${spent:.4f} of "
                    f"${key.budget_usd:.4f}); raise it or use another key",
                    key_id=key.id,
                )
        return key
