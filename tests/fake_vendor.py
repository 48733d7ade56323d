"""A test double of a vendor's OpenAI-compatible API (the only thing the gateway tests fake).

It runs a real HTTP server (aiohttp) on 127.0.0.1 in a thread, answers chat completions with
``answer(prompt)``, streams SSE when asked, and can be made to fail, or to hold its answers
until the test releases them (instead of sleeping: the test decides when the vendor answers).

    with FakeVendorAPI(answer=lambda prompt: "spam") as vendor:
        vendor.hold()                  # chat completions wait from now on
        ...                            # send a request through the gateway
        vendor.wait_for_requests(1)    # the vendor has it (and has not answered)
        vendor.release()               # now it answers
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from tests.threaded_server import ThreadedServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeVendorAPI(ThreadedServer):
    """``base_url`` is ``http://127.0.0.1:<port>/v1``; ``requests`` holds the bodies received."""

    what = "the fake vendor API"

    def __init__(self, answer: Callable[[str], str] = lambda prompt: "spam") -> None:
        super().__init__()
        self.answer = answer
        self.delay_s = 0.0
        self.fail_status: int | None = None
        self.requests: list[dict[str, Any]] = []
        self.authorization: list[str | None] = []
        self.answered = 0  # chat completions answered (after any hold)
        self._arrived = threading.Condition()
        self._gate: asyncio.Event | None = None  # set: answer; None: not holding
        self._stream_gate: asyncio.Event | None = None
        self.chunks_sent = 0  # SSE chunks written, over all streams

    def __enter__(self) -> FakeVendorAPI:
        super().__enter__()
        return self

    def hold(self) -> None:
        """Make chat completions wait until :meth:`release` (those arriving from now on)."""

        async def new_gate() -> None:
            self._gate = asyncio.Event()

        asyncio.run_coroutine_threadsafe(new_gate(), self._loop).result(10)

    def hold_stream(self) -> None:
        """Make streams pause after their first chunk until :meth:`release`."""

        async def new_gate() -> None:
            self._stream_gate = asyncio.Event()

        asyncio.run_coroutine_threadsafe(new_gate(), self._loop).result(10)

    def release(self) -> None:
        """Let every held chat completion (and stream) go on, and new ones not wait."""
        for gate in (self._gate, self._stream_gate):
            if gate is not None:
                self._loop.call_soon_threadsafe(gate.set)

    def wait_for_requests(self, count: int, timeout_s: float = 30.0) -> None:
        """Block until the vendor has received ``count`` requests in all."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, timeout_s):
                raise AssertionError(
                    f"the fake vendor received {len(self.requests)} request(s), not {count}"
                )

    def _received(self, body: dict[str, Any]) -> None:
        with self._arrived:
            self.requests.append(body)
            self._arrived.notify_all()

    async def _stop(self) -> None:
        self.release()  # a held request must not keep the server from stopping
        await super()._stop()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._received(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.5, -0.5, float(len(t))]}
                    for i, t in enumerate(inputs)
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.authorization.append(request.headers.get("Authorization"))
        self._received(body)
        gate = self._gate
        if gate is not None:
            await gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.answered += 1
        if self.fail_status is not None:
            return web.json_response(
                {"error": {"message": "vendor failure", "type": "server_error"}},
                status=self.fail_status,
            )
        prompt = str(body["messages"][-1].get("content"))
        content = self.answer(prompt)
        created = int(time.time())
        base = {"id": "chatcmpl-fake", "created": created, "model": body["model"]}
        usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        if not body.get("stream"):
            return web.json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        words = content.split(" ")
        for i, word in enumerate(words):
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": word if i == 0 else " " + word},
                        "finish_reason": None,
                    }
                ],
            }
            # Counted before it is written: a client may read the chunk before this
            # coroutine resumes after the write.
            self.chunks_sent += 1
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if i == 0 and self._stream_gate is not None:
                await self._stream_gate.wait()
            await asyncio.sleep(0.01)
        final = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
        await response.write(b"data: " + orjson.dumps(final) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
