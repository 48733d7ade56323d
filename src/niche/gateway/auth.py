"""API keys at the gateway: Bearer secrets checked against the registry, cached briefly.

Secrets are hashed before they are looked up or cached, and never logged. A verified key is
remembered for ``ttl_s`` (a revocation or a new budget takes effect within that time). With
no key created at all, the gateway is in local mode: requests from loopback need no key.

    >>> keys = KeyCache(registry, ttl_s=2.0)
    >>> record = await keys.authenticate(b"Bearer nk-...", client_host="10.0.0.7")
    >>> guard = Guard(keys, pending_spend=capture.pending_spend)
    >>> record = await guard.check(request, admin=True)
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from niche.errors import AuthenticationError, BudgetExceededError, PermissionDeniedError

if TYPE_CHECKING:
    from niche.gateway.asgi import Request
    from niche.registry.store import KeyRecord, Registry

__all__ = ["LOOPBACK_HOSTS", "Guard", "KeyCache"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_MAX_CACHED = 10_000


def is_loopback(host: str | None) -> bool:
    return host is not None and (host in LOOPBACK_HOSTS or host.startswith("127."))


class KeyCache:
    """Verifies Bearer secrets through ``registry``; remembers answers for ``ttl_s``."""

    def __init__(
        self, registry: Registry, *, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self.clock = clock
        self._verified: dict[str, tuple[float, KeyRecord | None]] = {}
        self._any_keys: tuple[float, bool] | None = None

    async def any_keys(self) -> bool:
        """Whether any usable key exists (otherwise the gateway runs in local mode)."""
        now = self.clock()
        if self._any_keys is None or now - self._any_keys[0] >= self.ttl_s:
            keys = await asyncio.to_thread(self.registry.keys.all)
            self._any_keys = (now, any(not key.revoked for key in keys))
        return self._any_keys[1]

    async def authenticate(
        self, authorization: bytes | None, *, client_host: str | None
    ) -> KeyRecord | None:
        """The key sent as ``Authorization: Bearer``; None in local mode from loopback.

        Raises :class:`AuthenticationError` for a missing, malformed, unknown or revoked key.
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
        now = self.clock()
        cached = self._verified.get(digest)
        if cached is None or now - cached[0] >= self.ttl_s:
            record = await asyncio.to_thread(self.registry.keys.verify, secret)
            if len(self._verified) >= _MAX_CACHED:
                self._verified.clear()
            cached = (now, record)
            self._verified[digest] = cached
        if cached[1] is None:
            if not await self.any_keys() and is_loopback(client_host):
                return None  # local mode: a dummy key (the OpenAI SDK needs one) is fine
            raise AuthenticationError("invalid API key (unknown or revoked)")
        return cached[1]


class Guard:
    """What every route checks first: the request's key, its scope and its budget.

    ``pending_spend(key_id)`` is spend not yet written to the registry (the capture
    writer's), so a key cannot overspend between two flushes.
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
