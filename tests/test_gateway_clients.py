"""Bounded clients and safe forwarding, over a real uvicorn server where the behaviour is about
sockets (slow bodies, slow headers and raw paths do not show through an ASGI transport).

The registry is a real SQLite file. The only fake is the general model's API
(``FakeGeneralModelAPI``, a real HTTP server that records the raw path of each request it gets
and how many chat completions it had in flight at once); the scheduling test runs its task on
``RecordingPredictor``, a model test double that records the batches it is given.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import orjson
import pytest
from aiohttp import web

from niche.gateway import Gateway
from niche.gateway.connection import BoundedHttpToolsProtocol
from niche.gateway.server import uvicorn_options
from niche.settings import Settings
from niche.specialists.base import Predictions
from tests.gateway_support import in_process, register_portfolio, running, until
from tests.threaded_server import ThreadedServer

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

TASK = "sms_spam"


class FakeGeneralModelAPI(ThreadedServer):
    """A test double of the general model's OpenAI-compatible API: a real aiohttp server in a
    thread. ``paths`` holds the raw path of every request it received; chat completions are
    answered "spam" after ``delay_s``, and ``max_inflight`` is the most it held at once."""

    what = "the fake general model API"

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.paths: list[str] = []
        self.inflight = self.max_inflight = 0

    def __enter__(self) -> FakeGeneralModelAPI:
        super().__enter__()
        return self

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._any)

    async def _any(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        if not request.raw_path.endswith("/chat/completions"):
            return web.json_response({"object": "list", "data": []})
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.inflight -= 1
        message = {"role": "assistant", "content": "spam"}
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": "fake",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
            }
        )


class Counting:
    """The gateway, counting the HTTP requests uvicorn handed it (their headers were read)."""

    def __init__(self, app: Gateway) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _exchange(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send ``data`` on a new connection; everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _settings(home: Path, **overrides: Any) -> Settings:
    return Settings(home=str(home), gateway_capture_flush_ms=50.0, **overrides)


# -- slow bodies and slow headers --


async def test_300_connections_stalled_mid_body_hold_no_slot_and_others_get_200(niche_home):
    app = Counting(Gateway(_settings(niche_home, gateway_body_timeout_s=60.0)))
    stalled: list[asyncio.StreamWriter] = []
    with running(app) as url:
        try:
            for _ in range(300):
                _, writer = await asyncio.open_connection("127.0.0.1", _port(url))
                writer.write(
                    b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n"
                    b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
                    b'{"model": '
                )
                stalled.append(writer)
            await until(lambda: app.calls >= 300)  # every one is in the app, reading its body
            async with httpx2.AsyncClient(base_url=url, timeout=10) as http:
                answers = await asyncio.gather(*(http.get("/v1/models") for _ in range(20)))
            assert [a.status_code for a in answers] == [200] * 20
            assert app.app.http.inflight == 0  # nobody holds a slot while sending its body
        finally:  # closed for real before the server stops (it waits for their requests)
            for writer in stalled:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for w in stalled), return_exceptions=True)


async def test_a_body_not_sent_in_time_gets_408_and_the_connection_closed(niche_home):
    app = Gateway(_settings(niche_home, gateway_body_timeout_s=0.3))
    with running(app) as url:
        started = time.monotonic()
        answer = await _exchange(
            _port(url),
            b"POST /v1/tasks/x/predict HTTP/1.1\r\nhost: gateway\r\n"
            b'content-length: 100\r\n\r\n{"inputs": ',
        )
        waited = time.monotonic() - started
    assert _status(answer) == 408
    assert b"NICHE_GATEWAY_BODY_TIMEOUT_S" in answer
    assert 0.25 < waited < 4.0


class QuickHeaders(BoundedHttpToolsProtocol):
    header_timeout_s = 0.3


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /healthz HTTP/1.1\r\n", b"GET /healthz HTTP/1.1\r\nhost: gate"],
    ids=["nothing", "request-line", "half-a-header"],
)
async def test_headers_not_sent_in_time_get_408_and_the_connection_closed(niche_home, sent):
    options = {**uvicorn_options(), "http": QuickHeaders}
    with running(Gateway(_settings(niche_home)), **options) as url:
        started = time.monotonic()
        answer = await _exchange(_port(url), sent)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.25 < waited < 4.0


async def test_a_kept_alive_connection_has_the_header_deadline_for_each_request(niche_home):
    options = {**uvicorn_options(), "http": QuickHeaders}
    with running(Gateway(_settings(niche_home)), **options) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        try:
            # Answered as usual, however long the first request takes after its headers.
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
            first = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 5)
            assert first.startswith(b"HTTP/1.1 200 ")
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: ga")  # then it stalls
            second = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
    assert second.startswith(b"HTTP/1.1 408 ")


async def test_request_headers_over_the_size_bound_get_431(niche_home):
    with running(Gateway(_settings(niche_home)), **uvicorn_options()) as url:
        answer = await _exchange(
            _port(url), b"GET /healthz HTTP/1.1\r\nx-padding: " + b"a" * 70_000
        )
    assert answer.startswith(b"HTTP/1.1 431 ")


# -- safe forwarding --

ESCAPES = [
    "/v1/../control",
    "/v1/%2e%2e/control",
    "/v1/%2E%2E%2Fcontrol",
    "/v1/.%2e/control",
    "/v1/%252e%252e/control",  # encoded twice: "%2e%2e" once uvicorn decoded it
    "/v1/%252E%252E%252Fcontrol",
    "/v1/embeddings/..%2F..%2Fcontrol",
    "/v1/..%5Ccontrol",  # a backslash
    "/v1/%5C..%5Ccontrol",
    "/v1/./embeddings",
    "/v1//control",
]


async def test_forwarded_paths_never_leave_the_base_path_of_the_fake_general_model_api(
    niche_home,
):
    with FakeGeneralModelAPI() as api:
        settings = _settings(niche_home, general_base_url=api.base_url, general_model="m")
        with running(Gateway(settings)) as url:
            for method in ("GET", "POST"):
                for path in ESCAPES:
                    answer = await _exchange(
                        _port(url),
                        f"{method} {path} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n"
                        "content-type: application/json\r\ncontent-length: 2\r\n\r\n{}".encode(),
                    )
                    assert 400 <= _status(answer) < 500, (method, path, answer)
                    assert api.paths == [], (method, path)  # refused before any upstream call
            relayed = await _exchange(
                _port(url), b"GET /v1/files HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n"
            )
    assert _status(relayed) == 200
    assert api.paths == ["/v1/files"]


# -- bounded predict calls --


async def test_predict_refuses_too_many_inputs_or_characters_naming_the_setting(niche_home):
    settings = _settings(niche_home, gateway_predict_max_inputs=4, gateway_predict_max_chars=100)
    register_portfolio(settings, [], champion=False)
    async with in_process(Gateway(settings)) as http:
        route = f"/v1/tasks/{TASK}/predict"
        many = await http.post(route, json={"inputs": ["hello"] * 5})
        long = await http.post(route, json={"inputs": ["x" * 60, "y" * 60]})
    assert many.status_code == 400
    assert "NICHE_GATEWAY_PREDICT_MAX_INPUTS" in many.json()["error"]["message"]
    assert long.status_code == 413
    error = long.json()["error"]
    assert (
        "120 characters" in error["message"]
        and "NICHE_GATEWAY_PREDICT_MAX_CHARS" in (error["message"])
    )
    assert error["param"] == "inputs"


async def test_a_predict_call_sends_at_most_its_concurrency_to_the_fake_general_model_api(
    niche_home,
):
    with FakeGeneralModelAPI(delay_s=0.05) as api:
        settings = _settings(
            niche_home,
            general_base_url=api.base_url,
            general_model="m",
            gateway_predict_concurrency=8,
        )
        register_portfolio(settings, [], champion=False)  # no specialist: every input cascades
        async with in_process(Gateway(settings)) as http:
            answer = await http.post(
                f"/v1/tasks/{TASK}/predict", json={"inputs": [f"text {i}" for i in range(40)]}
            )
    assert answer.status_code == 200
    assert [p["label"] for p in answer.json()["predictions"]] == ["spam"] * 40
    assert len(api.paths) == 40
    assert api.max_inflight == 8


class RecordingPredictor:
    """A model test double: answers "ham" at 0.9, records each batch, and holds its first
    batch until ``go`` is set."""

    def __init__(self) -> None:
        self.label_set = ["ham", "spam"]
        self.batches: list[list[str]] = []
        self.go = threading.Event()

    def predict(self, texts: Sequence[str]) -> Predictions:
        self.batches.append(list(texts))
        if len(self.batches) == 1 and not self.go.wait(30):
            raise RuntimeError("the test never released the first batch")
        return Predictions(labels=["ham"] * len(texts), confidences=np.full(len(texts), 0.9))


async def test_a_large_predict_call_does_not_starve_a_single_request_to_its_task(
    niche_home, tmp_path
):
    artifact = tmp_path / "model"
    artifact.mkdir()
    (artifact / "weights.json").write_text("{}")
    settings = _settings(niche_home, gateway_predict_concurrency=8)
    register_portfolio(settings, [artifact])
    model = RecordingPredictor()
    app = Gateway(settings, loader=lambda record: model)
    async with in_process(app) as http:
        route = f"/v1/tasks/{TASK}/predict"
        big = asyncio.ensure_future(
            http.post(route, json={"inputs": [f"big {i}" for i in range(256)]})
        )
        await until(lambda: bool(model.batches))  # the first batch is in the model, held
        single = asyncio.ensure_future(http.post(route, json={"inputs": ["single"]}))
        batcher = app.portfolio.get(TASK).champion.batcher  # type: ignore[union-attr]
        await until(lambda: batcher.queued >= 1)
        model.go.set()
        big_answer, single_answer = await asyncio.gather(big, single)
    assert big_answer.status_code == single_answer.status_code == 200
    assert len(big_answer.json()["predictions"]) == 256
    (at,) = [i for i, batch in enumerate(model.batches) if "single" in batch]
    ahead = sum(len(batch) for batch in model.batches[:at])
    # The single request waited for one batch of the large call, not for all 256 inputs.
    assert ahead <= 8, [len(b) for b in model.batches]
    assert sum(len(b) for b in model.batches) == 257
    assert orjson.loads(single_answer.content)["predictions"][0]["label"] == "ham"
