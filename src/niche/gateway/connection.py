"""The HTTP connection as uvicorn runs it, with a bound on reading a request's headers.

uvicorn bounds the idle time between requests (``timeout_keep_alive``) but not the time a
client takes to send a request's headers: its keep-alive timer is not armed on a new
connection, and is disarmed by the first byte of a request. A client that connects and sends
nothing, or trickles its headers a byte at a time, holds its connection (and a file
descriptor) for as long as it likes; the app is not called until the headers are complete,
so nothing in the app can bound it. :class:`BoundedHttpToolsProtocol` is uvicorn's httptools
protocol with that bound: from connecting (or from the first byte of a later request on a
kept-alive connection), the headers must be complete within ``header_timeout_s``
(``NICHE_GATEWAY_HEADER_TIMEOUT_S``) and within :data:`MAX_HEADER_BYTES`, else the client is
answered 408 (or 431) and the connection closed. The body's bound is the app's
(:meth:`niche.gateway.asgi.Request.body`).

    >>> uvicorn.run(app, http=BoundedHttpToolsProtocol)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEADER_BYTES", "BoundedHttpToolsProtocol"]

log = logging.getLogger("niche.gateway")

MAX_HEADER_BYTES = 65_536
"""Most bytes a request's line and headers may take (nginx allows 4 x 8 KiB by default)."""

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size bound on request headers.

    ``header_timeout_s`` is read from ``NICHE_GATEWAY_HEADER_TIMEOUT_S`` once per process
    unless a subclass sets it (each ``--workers`` process reads its own environment, as its
    app does).
    """

    header_timeout_s: ClassVar[float | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # When the headers being read must be complete (None: not reading headers), and one
        # timer per connection that checks it: re-armed when it fires, not made per request
        # (a timer per request was a measurable share of pass-through's event-loop time).
        self._deadline: float | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        timeout_s = type(self).header_timeout_s
        if timeout_s is None:
            from niche.settings import Settings

            timeout_s = Settings().get("NICHE_GATEWAY_HEADER_TIMEOUT_S")
            type(self).header_timeout_s = timeout_s
        self._head_timeout_s: float = timeout_s

    def _arm(self) -> None:
        if self._deadline is None:
            self._head_bytes = 0
            self._deadline = self.loop.time() + self._head_timeout_s
            if self._watch is None:
                self._watch = self.loop.call_at(self._deadline, self._check)

    def _disarm(self) -> None:
        self._deadline = None  # the watch, if any, finds nothing to do and lapses

    def _check(self) -> None:
        self._watch = None
        deadline = self._deadline
        if deadline is None:
            return
        # The loop may run a timer up to its clock resolution early.
        if self.loop.time() >= deadline - 0.001:
            self._head_expired()
        else:
            self._watch = self.loop.call_at(deadline, self._check)

    def _refuse(self, answer: bytes, why: str) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        log.info("gateway: closing a connection from %s: %s", self.client, why)
        if self.cycle is None or self.cycle.response_complete:  # else a response is under way
            self.transport.write(answer)
        self.transport.close()

    def _head_expired(self) -> None:
        self._refuse(_TIMED_OUT, f"no request headers within {self._head_timeout_s:g} s")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._deadline is not None
        super().data_received(data)
        # Headers incomplete before and after: all of ``data`` belongs to them (a chunk
        # that merely starts a pipelined request is not counted, whatever it carried before).
        if waiting and self._deadline is not None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._refuse(_TOO_LARGE, f"request headers over {MAX_HEADER_BYTES} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
