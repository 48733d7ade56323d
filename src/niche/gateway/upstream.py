"""The general model behind the gateway: an OpenAI-compatible API, called with aiohttp.

aiohttp, not httpx: httpx's async client was ~12x slower under concurrency here (FACTS.md).
A :class:`CircuitBreaker` stops calling an upstream that keeps failing, so requests fall
back at once instead of each waiting for a timeout. The errors raised name the model, never
its host (they reach clients); the log has the endpoint and the cause.

    >>> upstream = Upstream(spec, timeout_s=10.0, breaker=CircuitBreaker(5, 30.0))
    >>> reply = await upstream.complete(orjson.dumps(body))
    >>> reply.status, reply.json()["choices"][0]["message"]["content"]
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from niche.errors import CircuitOpenError, UpstreamError, UpstreamTimeoutError
from niche.registry.tasks import GeneralModelSpec

if TYPE_CHECKING:
    import aiohttp

__all__ = ["CircuitBreaker", "Upstream", "UpstreamReply"]

log = logging.getLogger("niche.gateway")


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures → one trial after ``reset_s``.

    A success closes it; a failed trial opens it again for another ``reset_s``.
    """

    def __init__(
        self, failures: int, reset_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._trial or self.clock() - self._opened_at >= self.reset_s:
            return "half-open"
        return "open"

    def before(self, name: str) -> None:
        """Raise :class:`CircuitOpenError` when the circuit is open; let one trial through."""
        if self._opened_at is None:
            return
        waited = self.clock() - self._opened_at
        if waited >= self.reset_s and not self._trial:
            self._trial = True
            return
        raise CircuitOpenError(
            f"general model {name}: circuit open after {self._consecutive} consecutive "
            f"failures; next trial in {max(0.0, self.reset_s - waited):.0f} s"
        )

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._trial = False

    def failure(self) -> None:
        self._consecutive += 1
        if self._trial or self._consecutive >= self.failures:
            self._opened_at = self.clock()
        self._trial = False


@dataclass(frozen=True)
class UpstreamReply:
    """A finished upstream answer: its status, raw body and content type."""

    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"the general model answered with invalid JSON ({exc})", status=self.status
            ) from None


_PLAIN_HEADERS = {"content-type": "application/json"}


class Upstream:
    """One OpenAI-compatible endpoint; ``complete`` and ``stream`` post chat completions."""

    def __init__(
        self,
        spec: GeneralModelSpec,
        *,
        timeout_s: float,
        breaker: CircuitBreaker,
        environ: Mapping[str, str] | None = None,
        max_connections: int = 256,
    ) -> None:
        if spec.kind != "openai" or not spec.base_url:
            raise ValueError("Upstream needs an 'openai' general model with a base_url")
        self.spec = spec
        self.timeout_s = timeout_s
        self.breaker = breaker
        self.max_connections = max_connections
        self.base_url = spec.base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.name = f"{spec.model} at {spec.base_url}"  # for the log and the metrics
        self.model = spec.model or "?"  # for errors, which reach clients
        self._environ = os.environ if environ is None else environ
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def __repr__(self) -> str:
        return f"Upstream({self.name!r})"

    def _headers(self) -> dict[str, str]:
        if not self.spec.api_key_env:
            return _PLAIN_HEADERS
        # Read at each call, so a rotated key is picked up without a restart.
        key = self._environ.get(self.spec.api_key_env)
        if not key:
            raise UpstreamError(
                f"general model {self.model}: environment variable "
                f"{self.spec.api_key_env} (its API key) is not set"
            )
        return {**_PLAIN_HEADERS, "authorization": f"Bearer {key}"}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.max_connections, ttl_dns_cache=300, keepalive_timeout=30
                ),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _failed(self, exc: BaseException, timeout_s: float) -> UpstreamError:
        self.breaker.failure()
        log.warning("general model %s: %s: %s", self.name, type(exc).__name__, exc)
        if isinstance(exc, asyncio.TimeoutError):
            return UpstreamTimeoutError(
                f"general model {self.model} did not answer within {timeout_s:g} s"
            )
        return UpstreamError(f"general model {self.model} failed: {type(exc).__name__}")

    async def complete(self, body: bytes, *, timeout_s: float | None = None) -> UpstreamReply:
        """POST ``body`` and read the whole answer. 5xx, timeouts and connection errors count
        against the breaker and raise :class:`UpstreamError`; 4xx answers are returned."""
        import aiohttp

        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        self.breaker.before(self.model)
        headers = self._headers()
        try:
            timeout = self._timeouts.get(timeout_s)
            if timeout is None:
                timeout = self._timeouts[timeout_s] = aiohttp.ClientTimeout(total=timeout_s)
            async with self._client().post(
                self.url, data=body, headers=headers, timeout=timeout
            ) as response:
                payload = await response.read()
                status = response.status
                content_type = response.headers.get("content-type", "application/json")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._failed(exc, timeout_s) from exc
        if status >= 500:
            self.breaker.failure()
            raise UpstreamError(
                f"general model {self.model} answered HTTP {status}: {payload[:200]!r}",
                status=status,
            )
        self.breaker.success()
        return UpstreamReply(status, payload, content_type)

    async def stream(
        self,
        body: bytes,
        *,
        timeout_s: float | None = None,
        method: str = "POST",
        path: str = "/chat/completions",
        query: bytes = b"",
        content_type: str | None = None,
    ) -> tuple[int, str, AsyncIterator[bytes]]:
        """Send ``body`` and relay the answer as it arrives: status, content type, chunks.

        By default a chat completion is POSTed; ``method``, ``path`` (below the base URL),
        ``query`` and ``content_type`` relay any other request of the API (embeddings, …).
        ``timeout_s`` bounds the connection and each wait for the next chunk, not the stream.
        """
        import aiohttp

        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        self.breaker.before(self.model)
        headers = self._headers()
        if content_type is not None:
            headers = {**headers, "content-type": content_type}
        url = self.base_url + path + (f"?{query.decode('latin-1')}" if query else "")
        try:
            context = self._client().request(
                method,
                url,
                data=body or None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=timeout_s, sock_read=timeout_s
                ),
            )
            response = await context.__aenter__()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._failed(exc, timeout_s) from exc
        if response.status >= 500:
            payload = await response.read()
            await context.__aexit__(None, None, None)
            self.breaker.failure()
            raise UpstreamError(
                f"general model {self.model} answered HTTP {response.status}: {payload[:200]!r}",
                status=response.status,
            )
        self.breaker.success()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                await context.__aexit__(None, None, None)

        return response.status, response.headers.get("content-type", "text/event-stream"), chunks()
