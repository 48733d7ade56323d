"""The web dashboard ``niche serve`` serves at ``/ui``: the routes, their auth and caching.

A page plug-in of the gateway (entry point ``niche.gateway_pages``: ``ui``), so the gateway
never imports it: :func:`pages` gets the built gateway and returns the routes.

    GET  /ui                          the portfolio overview
    GET  /ui/tasks/{task}             a task's page (404 for an unknown task)
    GET  /ui/login, POST /ui/login    the login form; ``key=<admin key>`` (form-encoded)
    POST /ui/logout                   clears the session cookie
    GET  /ui/data/overview.json       the JSON the overview is built from
    GET  /ui/data/tasks/{task}.json   the JSON a task page is built from
    GET  /ui/static/dashboard.js|css  the script that refreshes the numbers, the styles

Auth: with no API key at all, loopback clients need no login (the gateway's local mode).
Otherwise a page without a valid session answers 303 to ``/ui/login`` and a JSON route 401
(a JSON route also takes ``Authorization: Bearer <admin key>``). Logging in with an admin key
sets the cookie ``niche_session``: a token signed by the registry
(:meth:`~niche.registry.stores.keys.KeyStore.open_session`), never the key, ``HttpOnly;
SameSite=Strict; Path=/ui`` (and ``Secure`` over https), for ``NICHE_UI_SESSION_S``.

The figures (:mod:`niche.reports.portfolio_view`) are computed on a thread, at most once per
``NICHE_UI_REFRESH_S`` however many pages poll them; a registry that cannot be reached is a
503 page naming no host. Every answer carries a strict Content-Security-Policy (no inline
script or style: matplotlib's SVG is rewritten to presentation attributes), ``nosniff``,
``no-store`` and ``no-referrer``.

    >>> app = Gateway(settings, pages=[pages])
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import orjson

from niche.errors import (
    AuthenticationError,
    ConfigurationError,
    NicheError,
    PermissionDeniedError,
)
from niche.gateway.asgi import Handler, Params, Request, Send, respond
from niche.gateway.auth import is_loopback
from niche.gateway.protocol import INTERNAL_ERROR, client_message, error_response
from niche.gateway.routing import Route
from niche.reports import dashboard_html, portfolio_view

if TYPE_CHECKING:
    from niche.gateway.app import Gateway
    from niche.registry.store import KeyRecord

__all__ = ["COOKIE", "CSP", "SECURITY_HEADERS", "Dashboard", "pages"]

log = logging.getLogger("niche.gateway")

COOKIE: Final = "niche_session"
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CSP.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
"""Headers of every ``/ui`` answer."""

HTML: Final = b"text/html; charset=utf-8"
_STATIC: Final = {
    "dashboard.js": b"text/javascript; charset=utf-8",
    "dashboard.css": b"text/css; charset=utf-8",
}
_MAX_CACHED = 1_000
_PLOTS = threading.Lock()  # pyplot's state is global: one figure at a time


def pages(gateway: Gateway) -> list[Route]:
    """The dashboard's routes on ``gateway`` (the ``niche.gateway_pages`` entry point)."""
    return Dashboard(gateway).routes()


class _LoginRequired(Exception):
    """No valid session (pages: 303 to the login form; JSON: 401)."""


class Dashboard:
    """The handlers of ``/ui``, over the gateway's settings, registry and key checks."""

    def __init__(self, gateway: Gateway, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = gateway.settings
        self.registry = gateway.registry
        self.guard = gateway.guard
        self.refresh_s = float(self.settings.get("NICHE_UI_REFRESH_S"))
        self.session_s = int(self.settings.get("NICHE_UI_SESSION_S"))
        self.since = self.settings.get("NICHE_UI_SINCE")
        self.clock = clock
        self._cache: dict[str, tuple[float, Any]] = {}
        self._running: dict[str, asyncio.Future[Any]] = {}
        self._files: dict[str, bytes] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/ui", self._page(self.overview)),
            Route("/ui/", self._page(self.overview)),
            Route("/ui/tasks/{task}", self._page(self.task)),
            Route("/ui/data/overview.json", self._json(self.overview_json)),
            Route("/ui/data/tasks/{task}.json", self._json(self.task_json)),
            Route("/ui/login", self._page(self.login_form)),
            Route("/ui/login", self._page(self.login), ("POST",)),
            Route("/ui/logout", self._page(self.logout), ("POST",)),
            Route("/ui/static/{name}", self._page(self.static)),
        ]

    # -- answers and the error boundary (routes outside /v1/ get none from the dispatcher) --

    @staticmethod
    async def _send(
        send: Send,
        status: int,
        body: bytes,
        content_type: bytes = HTML,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await respond(send, status, body, [*SECURITY_HEADERS, *(headers or [])], content_type)

    async def _redirect(
        self, send: Send, location: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await self._send(
            send, 303, b"", headers=[(b"location", location.encode()), *(headers or [])]
        )

    def _page(self, handler: Handler) -> Handler:
        async def page(request: Request, send: Send, params: Params) -> None:
            try:
                await handler(request, send, params)
            except _LoginRequired:
                await self._redirect(send, "/ui/login")
            except Exception as exc:
                status, message, headers = self._failure(request, exc)
                body = dashboard_html.error_page(status, message).encode()
                await self._send(send, status, body, headers=headers)

        return page

    def _json(self, handler: Handler) -> Handler:
        async def answer(request: Request, send: Send, params: Params) -> None:
            try:
                await handler(request, send, params)
            except _LoginRequired:
                error = AuthenticationError("log in at /ui/login, or send an admin key")
                status, body, headers = error_response(error)
                await self._send(send, status, body, b"application/json", headers)
            except Exception as exc:
                self._failure(request, exc)  # logs what the client is not told
                known = exc if isinstance(exc, NicheError) else NicheError(INTERNAL_ERROR)
                status, body, headers = error_response(known)
                await self._send(send, status, body, b"application/json", headers)

        return answer

    @staticmethod
    def _failure(request: Request, exc: Exception) -> tuple[int, str, list[tuple[bytes, bytes]]]:
        """The status, client-fit message and headers for ``exc`` (logged when unexpected)."""
        if not isinstance(exc, NicheError):
            log.exception("dashboard: unexpected error on %s %s", request.method, request.path)
            return 500, client_message(exc), []
        status, _, headers = error_response(exc)
        message = client_message(exc)
        if status >= 500:  # the client is not told which database: the log is
            log.error("dashboard: %s %s: %s", request.method, request.path, exc.message)
        return status, message, headers

    # -- auth -------------------------------------------------------------------------------

    async def _local(self, request: Request) -> bool:
        """Local mode: no API key exists and the client is on loopback."""
        return is_loopback(request.client) and not await self.guard.keys.any_keys()

    async def _viewer(self, request: Request) -> KeyRecord | None:
        """The admin key of the request's session (or Bearer header); None in local mode.
        Raises :class:`_LoginRequired` without one."""
        if request.headers.get(b"authorization"):
            return await self.guard.check(request, admin=True)
        if await self._local(request):
            return None
        token = _cookie(request, COOKIE)
        if token:
            key = await asyncio.to_thread(self.registry.keys.session, token)
            if key is not None:
                return key
        raise _LoginRequired

    def _cookie(self, request: Request, token: str, max_age: int) -> tuple[bytes, bytes]:
        secure = request.scheme == "https" or (
            request.headers.get(b"x-forwarded-proto", b"").split(b",")[0].strip() == b"https"
        )
        value = f"{COOKIE}={token}; Max-Age={max_age}; Path=/ui; HttpOnly; SameSite=Strict" + (
            "; Secure" if secure else ""
        )
        return (b"set-cookie", value.encode("ascii"))

    async def login_form(self, request: Request, send: Send, params: Params) -> None:
        if await self._local(request):
            await self._redirect(send, "/ui")
            return
        message = None
        if not await self.guard.keys.any_keys():
            message = (
                "no API key exists yet, so only 127.0.0.1 may open the dashboard without one; "
                "create an admin key with `niche keys create --scope admin`"
            )
        await self._send(send, 200, dashboard_html.login_page(message=message).encode())

    async def login(self, request: Request, send: Send, params: Params) -> None:
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        secret = (form.get("key") or [""])[0].strip()
        try:
            _, token = await asyncio.to_thread(
                self.registry.keys.open_session, secret, self.session_s
            )
        except AuthenticationError:
            message = "that key is unknown or revoked: log in with an admin API key"
        except PermissionDeniedError:
            message = (
                "that key has the 'inference' scope: the dashboard needs an admin key "
                "(niche keys create --scope admin)"
            )
        else:
            cookie = self._cookie(request, token, self.session_s)
            await self._redirect(send, "/ui", [cookie])
            return
        await self._send(send, 401, dashboard_html.login_page(message=message).encode())

    async def logout(self, request: Request, send: Send, params: Params) -> None:
        await self._redirect(send, "/ui/login", [self._cookie(request, "", 0)])

    # -- the figures, cached ----------------------------------------------------------------

    async def _cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` on a thread, its value kept ``refresh_s``; callers meanwhile share
        one computation."""
        hit = self._cache.get(key)
        if hit is not None and self.clock() - hit[0] < self.refresh_s:
            return hit[1]
        running = self._running.get(key)
        if running is None:
            started = self.clock()
            running = asyncio.ensure_future(asyncio.to_thread(compute))
            self._running[key] = running

            def done(future: asyncio.Future[Any]) -> None:
                self._running.pop(key, None)
                if future.cancelled() or future.exception() is not None:
                    return  # its callers were told; nothing is cached
                if len(self._cache) >= _MAX_CACHED:
                    self._cache.clear()
                self._cache[key] = (started, future.result())

            running.add_done_callback(done)
        return await asyncio.shield(running)

    async def _overview(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._cached(
            "overview",
            lambda: portfolio_view.overview(
                self.settings, registry=self.registry, since=self.since
            ),
        )
        return data

    async def _task(self, task: str) -> dict[str, Any]:
        board = (await self._overview())["leaderboard"]
        data: dict[str, Any] = await self._cached(
            f"task:{task}", lambda: portfolio_view.task_view(self.registry, task, board=board)
        )
        return data

    # -- the pages --------------------------------------------------------------------------

    async def overview(self, request: Request, send: Send, params: Params) -> None:
        key = await self._viewer(request)
        data = await self._overview()
        page = dashboard_html.overview_page(data, refresh_s=self.refresh_s, logout=key is not None)
        await self._send(send, 200, page.encode())

    async def task(self, request: Request, send: Send, params: Params) -> None:
        key = await self._viewer(request)
        data = await self._task(params["task"])
        svg, note = await self._timeline(data)
        page = dashboard_html.task_page(
            data, refresh_s=self.refresh_s, timeline_svg=svg, plot_note=note, logout=key is not None
        )
        await self._send(send, 200, page.encode())

    async def _timeline(self, data: dict[str, Any]) -> tuple[str | None, str | None]:
        if not data["timeline"]:
            return None, None

        def draw() -> tuple[str | None, str | None]:
            from niche.reports import plots

            with _PLOTS:
                try:
                    plt = plots.pyplot()
                except ConfigurationError as exc:
                    return None, f"{exc.message}; the figures are in the table below"
                figure = plots.timeline_figure(plt, data["task"], data["timeline"])
                if figure is None:
                    return None, None
                title = f"drift and agreement of {data['task']}"
                return dashboard_html.strict_svg(plots.inline_svg(plt, figure, title)), None

        drawn: tuple[str | None, str | None] = await self._cached(f"plot:{data['task']}", draw)
        return drawn

    async def overview_json(self, request: Request, send: Send, params: Params) -> None:
        await self._viewer(request)
        data = await self._overview()
        await self._send(send, 200, orjson.dumps(data), b"application/json")

    async def task_json(self, request: Request, send: Send, params: Params) -> None:
        await self._viewer(request)
        data = await self._task(params["task"])
        await self._send(send, 200, orjson.dumps(data), b"application/json")

    async def static(self, request: Request, send: Send, params: Params) -> None:
        name = params["name"]
        content_type = _STATIC.get(name)
        if content_type is None:
            body = dashboard_html.error_page(404, f"no file {name!r}").encode()
            await self._send(send, 404, body)
            return
        if name not in self._files:
            self._files[name] = (resources.files("niche.reports") / "static" / name).read_bytes()
        await self._send(send, 200, self._files[name], content_type)


def _cookie(request: Request, name: str) -> str | None:
    header = request.headers.get(b"cookie")
    if not header:
        return None
    for part in header.decode("latin-1").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip().strip('"') or None
    return None
