"""ASGI plumbing: the request as the routes see it, sending an answer, relaying a stream, and
the one place an error becomes a response.

No framework: the hot path is a dict lookup, an object with ``__slots__`` and two ``send``
calls.

    >>> request = Request(scope, receive, max_body=1 << 20, body_timeout_s=10.0)
    >>> data = await request.json()
    >>> await respond(send, 200, orjson.dumps({"ok": True}))
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from niche.errors import (
    DatabaseError,
    NicheError,
    PayloadTooLargeError,
    RequestError,
    RequestTimeoutError,
)
from niche.gateway.protocol import error_response, parse_json_object

__all__ = [
    "JSON",
    "Handler",
    "Params",
    "Receive",
    "Request",
    "Scope",
    "Send",
    "relay",
    "respond",
    "run_lifespan",
    "send_error",
]

log = logging.getLogger("niche.gateway")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Params = Mapping[str, str]
"""The path parameters of a route pattern: ``{"task": "banking77"}``."""

JSON = b"application/json"


class Request:
    """The parts of an ASGI HTTP request the routes need; the body is read on demand."""

    __slots__ = (
        "_body",
        "body_timeout_s",
        "client",
        "headers",
        "max_body",
        "method",
        "path",
        "query",
        "receive",
        "scheme",
        "started",
    )

    def __init__(
        self, scope: Scope, receive: Receive, max_body: int, body_timeout_s: float | None = None
    ) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.scheme: str = scope.get("scheme", "http")
        self.query: bytes = scope.get("query_string", b"")
        self.headers: dict[bytes, bytes] = dict(scope.get("headers") or ())
        client = scope.get("client")
        self.client: str | None = client[0] if client else None
        self.receive = receive
        self.max_body = max_body
        self.body_timeout_s = body_timeout_s
        self.started = time.perf_counter()
        self._body: bytes | None = None

    async def body(self) -> bytes:
        """The whole body: :class:`PayloadTooLargeError` (413) past ``max_body`` bytes,
        :class:`RequestTimeoutError` (408) when it is not all sent within ``body_timeout_s``."""
        if self._body is not None:
            return self._body
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLargeError(
                f"request body of {int(declared)} bytes exceeds the limit of {self.max_body} "
                "(NICHE_GATEWAY_MAX_BODY_BYTES)"
            )
        if self.body_timeout_s is None:
            self._body = await self._read()
            return self._body
        # A timer that cancels this task, not asyncio.timeout(): the same deadline at a third
        # of the cost (asyncio.timeout was ~8 % of pass-through's event-loop time).
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always called from a task
            raise RuntimeError("Request.body must be awaited in a task")
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(self.body_timeout_s, expire)
        try:
            self._body = await self._read()
        except asyncio.CancelledError:
            if not expired or task.uncancel() > 0:
                raise  # cancelled by someone else (too)
            raise RequestTimeoutError(
                f"the request body was not sent within {self.body_timeout_s:g} s "
                "(NICHE_GATEWAY_BODY_TIMEOUT_S)"
            ) from None
        finally:
            timer.cancel()
        return self._body

    async def _read(self) -> bytes:
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
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def json(self) -> dict[str, Any]:
        """The body as a JSON object, or a 400 naming what is wrong."""
        return parse_json_object(await self.body())


Handler = Callable[[Request, Send, Params], Awaitable[None]]
"""A route: ``async def handler(request, send, params) -> None``."""


async def respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = JSON,
) -> None:
    """Send a whole answer: ``status``, ``content_type``, ``headers`` and ``body``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def relay(
    send: Send,
    status: int,
    content_type: str,
    chunks: AsyncIterator[bytes],
    headers: list[tuple[bytes, bytes]],
    *,
    what: str,
    keep: bool = False,
    receive: Receive | None = None,
) -> tuple[int, bytes]:
    """Relay an upstream answer chunk by chunk, each as it comes.

    With ``receive`` (the request's, its body already read), a client that goes away ends
    the relay at once, whatever the upstream is doing. ``chunks`` is closed (``aclose``)
    however the relay ends, so the upstream's response is released, not left streaming.
    Returns its status (502 if the upstream broke mid-way, 499 if the client left) and,
    with ``keep``, its bytes.
    """
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode("latin-1")), *headers],
        }
    )
    received: list[bytes] = []
    relaying = asyncio.current_task()
    left = False
    streaming = True

    async def watch(receive: Receive) -> None:
        nonlocal left
        while (await receive())["type"] != "http.disconnect":
            pass
        # Only while chunks are awaited: after the loop, the relay ends by itself.
        if streaming and relaying is not None:
            left = True
            relaying.cancel()

    watcher = asyncio.ensure_future(watch(receive)) if receive is not None else None
    try:
        async for chunk in chunks:
            if keep:
                received.append(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except asyncio.CancelledError:
        if not left:
            raise
        if relaying is not None:
            relaying.uncancel()
        log.info("%s: the client went away", what)
        status = 499
    except Exception as exc:  # the upstream broke mid-way: end the response, record it
        log.warning("%s broke: %s", what, exc)
        status = 502
    finally:
        streaming = False
        if watcher is not None:
            watcher.cancel()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"type": "http.response.body", "body": b""})
    return status, b"".join(received)


async def run_lifespan(
    receive: Receive,
    send: Send,
    *,
    startup: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
) -> None:
    """The ASGI lifespan protocol: ``startup`` at start (a failure is reported to the
    server, which then exits), ``shutdown`` when the server stops."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:
                log.exception("gateway start-up failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_error(send: Send, exc: NicheError) -> None:
    """Answer ``exc`` as an OpenAI-style error with its ``http_status``.

    The one place an error reaches a client; :func:`~niche.gateway.protocol.error_response`
    keeps hosts and database URLs out of what it says.
    """
    if isinstance(exc, DatabaseError):  # the client is not told which database: the log is
        log.error("gateway: %s", exc.message)
    status, body, headers = error_response(exc)
    if isinstance(exc, RequestTimeoutError):  # the rest of a stalled body is not waited for
        headers.append((b"connection", b"close"))
    try:
        await respond(send, status, body, headers)
    except (RuntimeError, OSError) as send_failed:
        # The response had started (a stream broke) or the client left: nothing to send.
        log.info("gateway: could not send the error %r: %s", exc.message, send_failed)
