"""A test double of a general model that never stops generating unless told to: a real aiohttp
server on 127.0.0.1 (in a thread) speaking the OpenAI chat-completions API the way a small
local model behind llama.cpp's server does.

- Without ``max_tokens`` it generates forever: a plain request hangs until the client gives
  up; a streamed one streams tokens without end.
- With ``max_tokens`` it generates that many tokens (an echo of the prompt, as a base model
  does) and stops; with a constraining ``response_format`` it answers ``{"label": …}``.
- ``refuse_json_schema``: it refuses ``json_schema`` with 422, as llama.cpp's server does,
  and honours ``{"type": "json_object", "schema": …}``.
- Usage is reported on a stream only when asked (``stream_options.include_usage``), after
  the last choice chunk in a chunk with no choices (every other chunk then carries
  ``"usage":null``), as the OpenAI API documents.
- ``fail(status)`` answers every chat completion (or those ``failing(body)`` picks) with
  ``status`` and an OpenAI-style error body.

    with NeverEndingGeneralModel(label="spam") as general:
        ...
        general.wait_closed()   # a stream's client (the gateway) closed the connection
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from tests.threaded_server import ThreadedServer

ERROR_BODY = {"error": {"message": "the model crashed", "type": "server_error", "code": "boom"}}


class NeverEndingGeneralModel(ThreadedServer):
    """``base_url`` is ``http://127.0.0.1:<port>/v1``; ``requests`` holds the bodies received."""

    what = "the fake general model"
    shutdown_timeout_s = 0.5

    def __init__(self, *, label: str = "spam", refuse_json_schema: bool = False) -> None:
        super().__init__()
        self.label = label
        self.refuse_json_schema = refuse_json_schema
        self.fail_status: int | None = None
        self.failing: Callable[[dict[str, Any]], bool] = lambda body: True
        self.report_usage = True  # False: never (streams report it only when asked)
        self.requests: list[dict[str, Any]] = []
        self.streams_closed = 0  # streams whose client closed the connection mid-way
        self._closed = threading.Event()

    def __enter__(self) -> NeverEndingGeneralModel:
        super().__enter__()
        return self

    def fail(self, status: int, when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.fail_status = status
        self.failing = when or (lambda body: True)

    def wait_closed(self, timeout_s: float = 10.0) -> bool:
        """Whether a stream's client closed its connection (waiting up to ``timeout_s``)."""
        return self._closed.wait(timeout_s)

    async def _stop(self) -> None:
        # Answers still generating (no max_tokens) end here, not with the loop.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.25, 0.75]}],
                "model": body["model"],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )

    def _answer(self, body: dict[str, Any], prompt: str) -> str:
        constrained = body.get("response_format") or {}
        if constrained.get("type") == "json_schema" or "schema" in constrained:
            return orjson.dumps({"label": self.label}).decode()
        return prompt  # a base model echoes its prompt

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if self.fail_status is not None and self.failing(body):
            return web.json_response(ERROR_BODY, status=self.fail_status)
        constrained = body.get("response_format") or {}
        if self.refuse_json_schema and constrained.get("type") == "json_schema":
            return web.json_response(
                {"error": {"message": "response_format type must be text or json_object"}},
                status=422,
            )
        prompt = str(body["messages"][-1].get("content"))
        max_tokens = body.get("max_tokens")
        words = self._answer(body, prompt).split(" ")
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            if max_tokens is None:
                await asyncio.Event().wait()  # generates until the client gives up
            content = " ".join(words[:max_tokens])
            answer: dict[str, Any] = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "length" if max_tokens < len(words) else "stop",
                    }
                ],
            }
            if self.report_usage:
                answer["usage"] = {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": min(max_tokens, len(words)),
                    "total_tokens": len(prompt.split()) + min(max_tokens, len(words)),
                }
            return web.json_response(answer)
        return await self._stream(request, body, base, words, max_tokens)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        base: dict[str, Any],
        words: list[str],
        max_tokens: int | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = 0
        options = body.get("stream_options") or {}
        try:
            while max_tokens is None or sent < max_tokens:
                word = words[sent % len(words)]
                chunk: dict[str, Any] = {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": word + " "}}],
                }
                if options.get("include_usage") and self.report_usage:
                    chunk["usage"] = None  # as the OpenAI API sends it on every other chunk
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                sent += 1
                await asyncio.sleep(0.005)
            if options.get("include_usage") and self.report_usage:
                usage = {"prompt_tokens": 7, "completion_tokens": sent, "total_tokens": 7 + sent}
                final = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                await response.write(b"data: " + orjson.dumps(final) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.streams_closed += 1
            self._closed.set()
            raise
        return response
