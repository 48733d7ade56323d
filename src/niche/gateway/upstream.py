"""The general model behind the gateway: an OpenAI-compatible API, called with aiohttp.

aiohttp, not httpx: httpx's async client was ~12x slower under concurrency here (FACTS.md).
A :class:`CircuitBreaker` per use (pass-through, cascade, shadow) stops calling an upstream
that keeps failing for that use, so requests fall back at once instead of each waiting for a
timeout. The upstream's own answers (a 500 included) are returned as they are. The errors raised name the model, never
its host (they reach clients); the log has the endpoint and the cause.

    >>> upstream = Upstream(spec, timeout_s=10.0, breaker=lambda: CircuitBreaker(5, 30.0))
    >>> reply = await upstream.complete(orjson.dumps(body), use="cascade")
    >>> reply.status, reply.json()["choices"][0]["message"]["content"]
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from niche.errors import CircuitOpenError, UpstreamError, UpstreamTimeoutError
from niche.registry.tasks import GeneralModelSpec

if TYPE_CHECKING:
    import aiohttp

__all__ = ["USES", "CircuitBreaker", "Upstream", "UpstreamReply"]

log = logging.getLogger("niche.gateway")


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures → one trial after ``reset_s``.

    A success closes it; a failed trial opens it again for another ``reset_s``. The trial
    always ends: a call that ends in neither success nor failure (cancelled, or refused
    before it reached the endpoint) calls :meth:`abandon`, and a trial that has held the
    slot for ``reset_s`` without ending loses it, so the next call may try.

        >>> trial = breaker.before("vendor-model")  # raises CircuitOpenError while open
        >>> try: ...; breaker.success()
        ... finally: breaker.abandon(trial)  # a no-op once success or failure was called
    """

    def __init__(
        self, failures: int, reset_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_at: float | None = None  # when the running trial started
        self._trials = 0  # trials started: tells this trial from an older, abandoned one

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._trial_at is not None or self.clock() - self._opened_at >= self.reset_s:
            return "half-open"
        return "open"

    def before(self, name: str) -> int:
        """Raise :class:`CircuitOpenError` when the circuit is open; let one trial through.

        Returns the trial's number (0: not a trial) for :meth:`abandon`.
        """
        if self._opened_at is None:
            return 0
        now = self.clock()
        if self._trial_at is not None and now - self._trial_at >= self.reset_s:
            self._trial_at = None  # a trial that never ended: its slot is free again
        waited = now - self._opened_at
        if waited >= self.reset_s and self._trial_at is None:
            self._trial_at = now
            self._trials += 1
            return self._trials
        retry_after_s = self.reset_s - waited if self._trial_at is None else 1.0
        raise CircuitOpenError(
            f"general model {name}: circuit open after {self._consecutive} consecutive "
            f"failures; next trial in {max(0.0, retry_after_s):.0f} s",
            retry_after_s=max(1.0, retry_after_s),
        )

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._trial_at = None

    def failure(self) -> None:
        self._consecutive += 1
        if self._trial_at is not None or self._consecutive >= self.failures:
            self._opened_at = self.clock()
        self._trial_at = None

    def abandon(self, trial: int) -> None:
        """Free trial number ``trial``'s slot if it is still running (cancelled, or ended
        before calling): the circuit stays open and the next call makes a new trial."""
        if trial and trial == self._trials and self._trial_at is not None:
            self._trial_at = None


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
USES = ("passthrough", "cascade", "shadow")
"""What an upstream is called for; each use has its own breaker, so failing shadow calls
never make pass-through answer 503."""


class Upstream:
    """One OpenAI-compatible endpoint; ``complete`` and ``stream`` post chat completions.

    ``breaker()`` builds one :class:`CircuitBreaker` per use (:data:`USES`). Answers of any
    status come back as they are (a 5xx also counts against the use's breaker); only
    connection failures and timeouts raise.
    """

    def __init__(
        self,
        spec: GeneralModelSpec,
        *,
        timeout_s: float,
        breaker: Callable[[], CircuitBreaker],
        environ: Mapping[str, str] | None = None,
        max_connections: int = 256,
    ) -> None:
        if spec.kind != "openai" or not spec.base_url:
            raise ValueError("Upstream needs an 'openai' general model with a base_url")
        self.spec = spec
        self.timeout_s = timeout_s
        self.breakers = {use: breaker() for use in USES}
        self.max_connections = max_connections
        self.base_url = spec.base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.name = f"{spec.model} at {spec.base_url}"  # for the log and the metrics
        self.model = spec.model or "?"  # for errors, which reach clients
        # The format "auto" stepped down to after this endpoint refused one (None: none yet).
        self.accepted_format: str | None = None
        self._environ = os.environ if environ is None else environ
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def __repr__(self) -> str:
        return f"Upstream({self.name!r})"

    @property
    def state(self) -> str:
        """The worst state of its breakers: ``open``, ``half-open`` or ``closed``."""
        states = {breaker.state for breaker in self.breakers.values()}
        for state in ("open", "half-open"):
            if state in states:
                return state
        return "closed"

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

    def _failed(
        self, breaker: CircuitBreaker, exc: BaseException, timeout_s: float
    ) -> UpstreamError:
        breaker.failure()
        log.warning("general model %s: %s: %s", self.name, type(exc).__name__, exc)
        if isinstance(exc, asyncio.TimeoutError):
            return UpstreamTimeoutError(
                f"general model {self.model} did not answer within {timeout_s:g} s"
            )
        return UpstreamError(f"general model {self.model} failed: {type(exc).__name__}")

    def _answered(self, breaker: CircuitBreaker, status: int) -> None:
        if status >= 500:
            log.warning("general model %s answered HTTP %d", self.name, status)
            breaker.failure()
        else:
            breaker.success()

    async def complete(
        self, body: bytes, *, timeout_s: float | None = None, use: str = "passthrough"
    ) -> UpstreamReply:
        """POST ``body`` and read the whole answer, of any status (a 5xx counts against
        ``use``'s breaker). Timeouts and connection errors count against it and raise
        :class:`UpstreamError`; an open circuit raises :class:`CircuitOpenError`."""
        import aiohttp

        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        headers = self._headers()  # before the breaker: a missing key is no trial
        breaker = self.breakers[use]
        trial = breaker.before(self.model)
        try:
            timeout = self._timeouts.get(timeout_s)
            if timeout is None:
                timeout = self._timeouts[timeout_s] = aiohttp.ClientTimeout(total=timeout_s)
            try:
                async with self._client().post(
                    self.url, data=body, headers=headers, timeout=timeout
                ) as response:
                    payload = await response.read()
                    status = response.status
                    content_type = response.headers.get("content-type", "application/json")
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise self._failed(breaker, exc, timeout_s) from exc
            self._answered(breaker, status)
            return UpstreamReply(status, payload, content_type)
        finally:  # cancelled, or failed in neither way: the trial must still end
            breaker.abandon(trial)

    async def stream(
        self,
        body: bytes,
        *,
        timeout_s: float | None = None,
        method: str = "POST",
        path: str = "/chat/completions",
        query: bytes = b"",
        content_type: str | None = None,
        use: str = "passthrough",
    ) -> tuple[int, str, AsyncGenerator[bytes, None]]:
        """Send ``body`` and relay the answer as it arrives: status, content type, chunks.

        By default a chat completion is POSTed; ``method``, ``path`` (below the base URL),
        ``query`` and ``content_type`` relay any other request of the API (embeddings, …).
        ``timeout_s`` bounds the connection and each wait for the next chunk, not the stream.
        Closing the chunks (``aclose``) before their end closes the upstream connection:
        a client that left must not keep the general model generating.
        """
        import aiohttp

        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        headers = self._headers()
        if content_type is not None:
            headers = {**headers, "content-type": content_type}
        url = self.base_url + path + (f"?{query.decode('latin-1')}" if query else "")
        breaker = self.breakers[use]
        trial = breaker.before(self.model)
        try:
            try:
                response = await self._client().request(
                    method,
                    url,
                    data=body or None,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=timeout_s, sock_read=timeout_s
                    ),
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise self._failed(breaker, exc, timeout_s) from exc
            self._answered(breaker, response.status)
        finally:
            breaker.abandon(trial)

        async def chunks() -> AsyncGenerator[bytes, None]:
            finished = False
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
                finished = True
            finally:
                if finished:
                    response.release()
                else:  # closed early: drop the connection rather than drain an endless body
                    response.close()

        return response.status, response.headers.get("content-type", "text/event-stream"), chunks()
