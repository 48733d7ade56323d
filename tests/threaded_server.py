"""The plumbing of the tests' fake HTTP servers: an aiohttp app on its own thread and event
loop, on a free loopback port, started and stopped as a context manager.

    >>> class Fake(ThreadedServer):
    ...     def add_routes(self, app: web.Application) -> None:
    ...         app.router.add_post("/v1/chat/completions", self._chat)
    >>> with Fake() as fake:
    ...     fake.base_url  # http://127.0.0.1:<port>/v1
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """Subclasses add their routes (:meth:`add_routes`) and may extend :meth:`_stop`."""

    what = "the fake server"
    shutdown_timeout_s = 60.0  # aiohttp's default

    def __init__(self) -> None:
        self.port = 0  # bound at start: the kernel picks a free port
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.what} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=self.shutdown_timeout_s)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._ready.set()
        self._loop.run_forever()
