"""A fast OpenAI-compatible upstream stub for the gateway benchmark.

    .venv/bin/python benchmarks/stub_upstream.py --port 8101 [--host 127.0.0.1]

Answers ``POST /v1/chat/completions`` (and ``/chat/completions``) with one fixed, small
``chat.completion`` (content ``"ok"``, with a ``usage`` block) and ``GET /v1/models`` with a list
of one model, whatever the request asked. A hand-written asyncio protocol on uvloop: HTTP/1.1
keep-alive, ``Content-Length`` bodies (chunked request bodies are refused with 411), requests
answered in order (so pipelined requests also work). It parses no JSON and allocates little, so
that one core serves ~10k requests/s at concurrency 1 and ~50k at 16 — far more than any proxy
under test, whose cost is then what the benchmark measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import cast

MODEL = "bench-model"
MAX_HEAD = 64 * 1024


def _response(status: bytes, body: bytes, *, close: bool = False) -> bytes:
    head = (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
    )
    if close:
        head += b"connection: close\r\n"
    return head + b"\r\n" + body


def _json(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


COMPLETION = _response(
    b"200 OK",
    _json(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
        }
    ),
)
MODELS = _response(
    b"200 OK",
    _json(
        {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "bench"}],
        }
    ),
)
NOT_FOUND = _response(b"404 Not Found", _json({"error": {"message": "not found"}}))
BAD_REQUEST = _response(
    b"400 Bad Request", _json({"error": {"message": "bad request"}}), close=True
)
LENGTH_REQUIRED = _response(
    b"411 Length Required", _json({"error": {"message": "send Content-Length"}}), close=True
)
ROUTES = {
    (b"POST", b"/v1/chat/completions"): COMPLETION,
    (b"POST", b"/chat/completions"): COMPLETION,
    (b"GET", b"/v1/models"): MODELS,
    (b"GET", b"/models"): MODELS,
}


class StubProtocol(asyncio.Protocol):
    """One connection: parse request heads, skip their bodies, answer from :data:`ROUTES`."""

    __slots__ = ("buffer", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        out: list[bytes] = []
        close = False
        while buffer:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    out.append(BAD_REQUEST)
                    close = True
                    buffer = b""
                break
            head = buffer[:end]
            line_end = head.find(b"\r\n")
            request_line = head if line_end < 0 else head[:line_end]
            parts = request_line.split(b" ")
            if len(parts) != 3:
                out.append(BAD_REQUEST)
                close, buffer = True, b""
                break
            headers = head[line_end + 2 :].lower() if line_end >= 0 else b""
            length = 0
            at = headers.find(b"content-length:")
            if at >= 0:
                value_end = headers.find(b"\r\n", at)
                try:
                    length = int(headers[at + 15 : value_end if value_end >= 0 else None])
                except ValueError:
                    out.append(BAD_REQUEST)
                    close, buffer = True, b""
                    break
            elif b"transfer-encoding:" in headers:
                out.append(LENGTH_REQUIRED)
                close, buffer = True, b""
                break
            total = end + 4 + length
            if len(buffer) < total:
                break
            buffer = buffer[total:]
            path = parts[1].split(b"?", 1)[0]
            out.append(ROUTES.get((parts[0], path), NOT_FOUND))
            if b"connection: close" in headers or parts[2] == b"HTTP/1.0":
                close, buffer = True, b""
                break
        self.buffer = buffer
        assert self.transport is not None
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubProtocol, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"stub upstream on http://{host}:{port}/v1", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # still correct, only slower
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
