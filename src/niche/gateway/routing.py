"""The route table: patterns with path parameters → handlers, and the dispatcher in front of it.

Static patterns (``/v1/chat/completions``) are one dict lookup; patterns with parameters
(``/v1/tasks/{task}/predict``) are compiled to one regular expression each and tried in
order; a handler gets the parameters, already split out of the path.

    >>> table = RouteTable([
    ...     Route("/v1/chat/completions", chat, ("POST",)),
    ...     Route("/v1/tasks/{task}/predict", predict, ("POST",)),
    ... ])
    >>> handler, params = table.match("POST", "/v1/tasks/banking77/predict")
    >>> params
    {'task': 'banking77'}

A static path asked with another method answers 405; anything else no pattern matches is
offered to the table's ``fallback`` (the pass-through relay), or answers 404.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from niche.errors import MethodNotAllowedError, NicheError, NotFoundError, OverloadedError
from niche.gateway.asgi import Handler, Params, Receive, Request, Scope, Send, send_error
from niche.gateway.metrics import GatewayMetrics
from niche.gateway.protocol import INTERNAL_ERROR

__all__ = ["Dispatcher", "Fallback", "Match", "Route", "RouteTable"]

log = logging.getLogger("niche.gateway")

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NO_PARAMS: Params = {}


@dataclass(frozen=True)
class Route:
    """``pattern`` (``{name}`` matches one path segment) served by ``handler`` for ``methods``."""

    pattern: str
    handler: Handler
    methods: tuple[str, ...] = ("GET",)


@dataclass(frozen=True)
class Fallback:
    """Where requests no route matches go when ``accepts(path)`` (e.g. the pass-through)."""

    accepts: Callable[[str], bool]
    handler: Handler


class Match(NamedTuple):
    """The handler of a request and the parameters its pattern read from the path."""

    handler: Handler
    params: Params


def _compile(pattern: str) -> re.Pattern[str]:
    # Slashes around the path are not significant for these routes (`/v1/tasks/x/predict/`).
    pattern = pattern.strip("/")
    regex, position = ["/*"], 0
    for found in _PARAM.finditer(pattern):
        regex.append(re.escape(pattern[position : found.start()]))
        regex.append(f"(?P<{found.group(1)}>[^/]+)")
        position = found.end()
    regex.append(re.escape(pattern[position:]))
    regex.append("/*")
    return re.compile("".join(regex))


class RouteTable:
    """Every route of the gateway, compiled for lookup."""

    def __init__(self, routes: Iterable[Route], *, fallback: Fallback | None = None) -> None:
        self.fallback = fallback
        self._static: dict[str, dict[str, Handler]] = {}
        by_pattern: dict[str, dict[str, Handler]] = {}
        for route in routes:
            target = self._static if _PARAM.search(route.pattern) is None else by_pattern
            handlers = target.setdefault(route.pattern, {})
            for method in route.methods:
                if method in handlers:
                    raise ValueError(f"two routes for {method} {route.pattern}")
                handlers[method] = route.handler
        self._dynamic = [(_compile(p), handlers) for p, handlers in by_pattern.items()]

    def match(self, method: str, path: str) -> Match:
        """The handler for ``method path``.

        Raises :class:`MethodNotAllowedError` (405) for a static path and another method, and
        :class:`NotFoundError` (404) when nothing matches; a pattern with parameters asked
        with another method is no route (404), as it always was here.
        """
        handlers = self._static.get(path)
        if handlers is not None:
            handler = handlers.get(method)
            if handler is not None:
                return Match(handler, _NO_PARAMS)
        for regex, by_method in self._dynamic:
            if method in by_method:
                found = regex.fullmatch(path)
                if found is not None:
                    return Match(by_method[method], found.groupdict())
        if handlers is not None:
            raise MethodNotAllowedError(
                f"method {method} is not allowed on {path}", code="method_not_allowed"
            )
        if self.fallback is not None and self.fallback.accepts(path):
            return Match(self.fallback.handler, _NO_PARAMS)
        raise NotFoundError(f"no route {method} {path}")


class Dispatcher:
    """Turns an ASGI HTTP request into a handler call: route lookup, the concurrency limit
    on ``/v1/`` routes, and the error boundary (every :class:`NicheError` answered with its
    status; anything else a 500 that says no more than to read the log).

    A ``/v1/`` request takes one of ``max_concurrency`` slots only once its whole body is
    read (within ``body_timeout_s``, else 408): clients that send their bodies slowly, or
    stall, hold no slot, and cannot shut out the others.

        >>> http = Dispatcher(table, max_body_bytes=1 << 20, max_concurrency=256,
        ...                   metrics=metrics, body_timeout_s=10.0)
    """

    def __init__(
        self,
        table: RouteTable,
        *,
        max_body_bytes: int,
        max_concurrency: int,
        metrics: GatewayMetrics,
        body_timeout_s: float | None = None,
    ) -> None:
        self.table = table
        self.max_body_bytes = max_body_bytes
        self.max_concurrency = max_concurrency
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, self.max_body_bytes, self.body_timeout_s)
        limited = request.path.startswith("/v1/")
        try:
            handler, params = self.table.match(request.method, request.path)
            if limited:
                await request.body()  # before the slot: a slow body must not hold one
                if self.inflight >= self.max_concurrency:
                    self.metrics.observe(None, "rejected", 429, 0.0)
                    raise OverloadedError(
                        f"the gateway is serving {self.inflight} requests, its limit "
                        "(NICHE_GATEWAY_MAX_CONCURRENCY); retry shortly",
                        retry_after_s=1,
                    )
        except NicheError as exc:
            await send_error(send, exc)
            return
        if not limited:
            await handler(request, send, params)
            return
        self.inflight += 1
        self.metrics.inflight.inc()
        try:
            await handler(request, send, params)
        except NicheError as exc:
            await send_error(send, exc)
        except Exception:
            log.exception("gateway: unexpected error on %s %s", request.method, request.path)
            await send_error(send, NicheError(INTERNAL_ERROR))
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()
