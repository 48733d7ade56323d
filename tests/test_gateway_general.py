"""The general-model client under issue 9: bounded and constrained calls, whole-answer label
mapping, one circuit breaker per use whose trial always ends, pass-through that relays the
upstream's own answers and counts a stream's tokens, and a relay that lets go of the upstream
when its client leaves.

The only fake is the general model (``NeverEndingGeneralModel``, a real aiohttp server that
generates until ``max_tokens`` and otherwise forever); the gateway, its registry and the
specialists are real (in-process through httpx2's ASGI transport, or on a real uvicorn where
sockets matter).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from niche.errors import CircuitOpenError, UpstreamError
from niche.gateway import Gateway
from niche.gateway.upstream import CircuitBreaker, Upstream
from niche.registry import Registry
from niche.registry.tasks import GeneralModelSpec
from niche.settings import Settings
from niche.specialists.prompting import (
    DEFAULT_PROMPT_TEMPLATE,
    chat_request,
    label_schema,
    map_answer,
    render_prompt,
)
from tests.fake_general import ERROR_BODY, NeverEndingGeneralModel
from tests.gateway_support import (
    SPAM,
    TASK,
    in_process,
    register_portfolio,
    running,
    sdk,
    until,
)

pytestmark = pytest.mark.anyio


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


# -- the pure pieces: request body and answer mapping ------------------------------------


def test_an_echo_of_the_prompt_listing_every_label_maps_to_no_label():
    labels = ["spam", "not_spam"]
    echo = render_prompt(DEFAULT_PROMPT_TEMPLATE, "win a prize now", labels)
    # A base model (Gemma 3 270M behind llama.cpp) mostly echoes its prompt: the labels it
    # lists are no answer, although "not spam" is the longest label named in it.
    assert map_answer(echo, labels) is None
    assert map_answer("The answer is not spam, I think", labels) is None
    assert map_answer("Not spam.", labels) == "not_spam"
    assert map_answer(' "SPAM" ', labels) == "spam"
    assert map_answer('{"label": "not_spam"}', labels) == "not_spam"
    assert map_answer('```json\n{"label": "spam"}\n```', labels) == "spam"
    assert map_answer('{"label": "eggs"}', labels) is None


def test_chat_request_is_bounded_and_constrained_to_the_labels():
    body = chat_request(
        "m", "hi", ["ham", "spam"], max_tokens=24, stop=["\n"], response_format="json_schema"
    )
    assert (body["max_tokens"], body["stop"], body["temperature"]) == (24, ["\n"], 0)
    schema = body["response_format"]["json_schema"]["schema"]
    assert body["response_format"]["json_schema"]["strict"] is True
    assert schema["properties"]["label"]["enum"] == ["ham", "spam"]
    assert schema["required"] == ["label"] and schema["additionalProperties"] is False
    llama = chat_request("m", "hi", ["ham"], max_tokens=8, response_format="json_object")
    assert llama["response_format"] == {"type": "json_object", "schema": label_schema(["ham"])}
    assert "response_format" not in chat_request("m", "hi", ["ham"], max_tokens=8)


async def test_a_stream_split_anywhere_loses_only_the_usage_it_was_not_asked_for():
    from niche.gateway.general import StreamUsage

    events = [
        b'data: {"choices":[{"index":0,"delta":{"content":"he said \\"usage\\":null"}}],'
        b'"usage":null}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"!"}}],"usage":null}\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
    ]
    whole = b"".join(events)
    closed = []

    async def source(size: int):
        try:
            for start in range(0, len(whole), size):
                yield whole[start : start + size]
        finally:
            closed.append(size)

    for size in (1, 7, 64, len(whole)):
        watched = StreamUsage(source(size), strip=True)
        relayed = b"".join([chunk async for chunk in watched.chunks()])
        assert relayed == (
            b'data: {"choices":[{"index":0,"delta":{"content":"he said \\"usage\\":null"}}]}'
            b'\n\ndata: {"choices":[{"index":0,"delta":{"content":"!"}}]}\n\ndata: [DONE]\n\n'
        )
        assert watched.result() == ('he said "usage":null!', 5, 2)
        kept = StreamUsage(source(size), strip=False)
        assert b"".join([chunk async for chunk in kept.chunks()]) == whole
    assert sorted(closed) == sorted([1, 7, 64, len(whole)] * 2)


# -- the breaker's trial always ends -----------------------------------------------------


def _open(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(breaker.failures):
        breaker.before("m")
        breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError) as refused:
        breaker.before("m")
    assert refused.value.retry_after_s == pytest.approx(breaker.reset_s)
    clock.now += breaker.reset_s


async def test_a_cancelled_breaker_trial_ends_against_a_never_ending_fake_general_model():
    clock = Clock()
    breaker = CircuitBreaker(2, 30.0, clock=clock)
    with NeverEndingGeneralModel() as general:
        spec = GeneralModelSpec(kind="openai", base_url=general.base_url, model="m")
        upstream = Upstream(spec, timeout_s=30.0, breaker=lambda: breaker)
        try:
            _open(breaker, clock)
            # The trial: a request the model never answers (no max_tokens), then cancelled.
            hanging = {"model": "m", "messages": [{"role": "user", "content": "go on"}]}
            trial = asyncio.ensure_future(upstream.complete(orjson.dumps(hanging)))
            await until(lambda: len(general.requests) == 1)
            trial.cancel()
            with pytest.raises(asyncio.CancelledError):
                await trial
            assert breaker.state == "half-open"
            # The slot is free: the next call is the new trial, not "circuit open".
            body = orjson.dumps(chat_request("m", "hi", ["a"], max_tokens=2))
            reply = await upstream.complete(body, use="passthrough")
            assert reply.status == 200 and breaker.state == "closed"
        finally:
            await upstream.close()


async def test_a_trial_refused_before_the_call_ends_too_fake_general_model():
    clock = Clock()
    breaker = CircuitBreaker(1, 30.0, clock=clock)
    with NeverEndingGeneralModel() as general:
        spec = GeneralModelSpec(
            kind="openai", base_url=general.base_url, model="m", api_key_env="FAKE_GENERAL_KEY"
        )
        environ = {"FAKE_GENERAL_KEY": ""}  # the key variable, briefly unset
        upstream = Upstream(spec, timeout_s=5.0, breaker=lambda: breaker, environ=environ)
        try:
            _open(breaker, clock)
            with pytest.raises(UpstreamError, match="FAKE_GENERAL_KEY"):  # the key is unset
                await upstream.complete(b"{}")
            environ["FAKE_GENERAL_KEY"] = "sk-test"
            body = orjson.dumps(chat_request("m", "hi", ["a"], max_tokens=2))
            assert (await upstream.complete(body)).status == 200
            assert breaker.state == "closed"
        finally:
            await upstream.close()


def test_a_trial_that_never_ends_loses_its_slot_after_reset_s():
    clock = Clock()
    breaker = CircuitBreaker(1, 30.0, clock=clock)
    _open(breaker, clock)
    breaker.before("m")  # a trial whose caller never reports back
    with pytest.raises(CircuitOpenError) as refused:
        breaker.before("m")
    assert refused.value.retry_after_s >= 1
    clock.now += 30.0
    breaker.before("m")  # a new trial


# -- the gateway in front of the fake ----------------------------------------------------


@pytest.fixture
def settings_for(niche_home: Path, encoder_cache_dir: Path, trained):
    """Settings of a SQLite registry holding the portfolio; ``make(**kw)`` adds settings."""
    base = {"home": str(niche_home), "cache_dir": str(encoder_cache_dir)}
    register_portfolio(Settings(**base), trained)

    def make(**overrides: Any) -> Settings:
        return Settings(
            **{**base, "gateway_refresh_s": 0.2, "gateway_capture_flush_ms": 50.0, **overrides}
        )

    return make


@pytest.fixture
def gateway(serving_encoder) -> Callable[..., Gateway]:
    def make(settings: Settings) -> Gateway:
        return Gateway(settings, encoder=serving_encoder)

    return make


def _update(settings: Settings, **changes: Any) -> None:
    with Registry(settings=settings) as registry:
        registry.tasks.update(TASK, **changes)


def _task_request(text: str = SPAM) -> dict[str, Any]:
    return {"model": TASK, "messages": [{"role": "user", "content": text}]}


def _formats(general: NeverEndingGeneralModel) -> list[str]:
    return [(r.get("response_format") or {}).get("type", "text") for r in general.requests]


@pytest.mark.slow
@pytest.mark.parametrize("llama_cpp", [False, True], ids=["openai", "llama-cpp"])
async def test_cascade_calls_carry_max_tokens_and_return_from_a_never_ending_fake_general_model(
    settings_for, gateway, llama_cpp
):
    settings = settings_for()
    with NeverEndingGeneralModel(label="ham", refuse_json_schema=llama_cpp) as general:
        _update(
            settings,
            cascade_threshold=1.0,  # every request cascades
            serving={"timeout_s": 5.0},
            general={
                "kind": "openai",
                "base_url": general.base_url,
                "model": "small-llm",
                "max_tokens": 24,
                "stop": ["\n"],
            },
        )
        async with in_process(gateway(settings)) as http:
            started = time.monotonic()
            for _ in range(2):
                response = await http.post("/v1/chat/completions", json=_task_request())
                assert response.status_code == 200
                assert response.headers["x-niche-route"] == "general"
                assert response.json()["choices"][0]["message"]["content"] == "ham"
            assert time.monotonic() - started < 4.0  # not the 5 s timeout, twice
    assert all(r["max_tokens"] == 24 and r["stop"] == ["\n"] for r in general.requests)
    # llama.cpp refuses json_schema once; the endpoint is then asked with json_object.
    expected = ["json_schema", "json_object", "json_object"] if llama_cpp else ["json_schema"] * 2
    assert _formats(general) == expected


@pytest.mark.slow
async def test_failed_shadow_calls_never_make_pass_through_answer_503_fake_general_model(
    settings_for, gateway
):
    with NeverEndingGeneralModel() as general:
        settings = settings_for(
            general_base_url=general.base_url,
            general_model="small-llm",
            gateway_breaker_failures=2,
            gateway_breaker_reset_s=60.0,
        )
        _update(settings, serving={"shadow_fraction": 1.0})
        # Every label request (niche's own prompt) fails; pass-through ones do not.
        general.fail(500, when=lambda body: "Classify the text" in str(body["messages"]))
        app = gateway(settings)
        async with in_process(app) as http:
            for _ in range(5):
                response = await http.post("/v1/chat/completions", json=_task_request())
                assert response.headers["x-niche-route"] == "specialist"
                await until(lambda: app.policy.pending == 0)
            shadowed = len(general.requests)
            assert shadowed == 2  # the shadow breaker opened after two failures
            passed = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "small-llm",
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 3,
                },
            )
            assert passed.status_code == 200, passed.text
            embedded = await http.post("/v1/embeddings", json={"model": "small-llm", "input": "hi"})
            assert embedded.status_code == 200
            # The cascade has a breaker of its own, still closed: it calls (and falls back).
            _update(settings, cascade_threshold=1.0)
            await until(lambda: app.portfolio.get(TASK).spec.cascade_threshold == 1.0)
            cascaded = await http.post("/v1/chat/completions", json=_task_request())
            assert cascaded.headers["x-niche-fallback-reason"] == "upstream-error"
            assert len(general.requests) == shadowed + 3


@pytest.mark.slow
async def test_an_upstream_500_on_pass_through_is_relayed_with_its_body_fake_general_model(
    settings_for, gateway
):
    with NeverEndingGeneralModel() as general:
        settings = settings_for(
            general_base_url=general.base_url,
            general_model="small-llm",
            gateway_breaker_failures=2,
            gateway_breaker_reset_s=60.0,
        )
        general.fail(500)
        request = {"model": "small-llm", "messages": [{"role": "user", "content": "hi"}]}
        async with in_process(gateway(settings)) as http:
            for _ in range(2):
                response = await http.post("/v1/chat/completions", json=request)
                assert response.status_code == 500
                assert response.json() == ERROR_BODY  # the upstream's own body
                assert response.headers["x-niche-route"] == "passthrough"
            # Its pass-through breaker is open now: 503, saying when to come back.
            refused = await http.post("/v1/chat/completions", json=request)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "60"
            assert len(general.requests) == 2


@pytest.mark.slow
@pytest.mark.parametrize("reports_usage", [True, False], ids=["usage-asked", "estimated"])
async def test_streamed_pass_through_costs_tokens_against_the_key_fake_general_model(
    settings_for, gateway, reports_usage
):
    with NeverEndingGeneralModel() as general:
        settings = settings_for(
            general_base_url=general.base_url,
            general_model="small-llm",
            general_price_input_per_1m_tokens_usd=1000.0,
            general_price_output_per_1m_tokens_usd=2000.0,
        )
        with Registry(settings=settings) as registry:
            key, secret = registry.keys.create(scope="inference", budget_usd=10.0)
        if not reports_usage:  # an upstream that ignores stream_options
            general.report_usage = False
        async with in_process(gateway(settings)) as http:
            client = sdk(http, key=secret)
            stream = await client.chat.completions.create(
                model="small-llm",
                messages=[{"role": "user", "content": "one two three four five six"}],
                max_tokens=4,
                stream=True,
            )
            chunks = [chunk async for chunk in stream]
    # The gateway asked for usage; the client, which did not, gets no usage chunk.
    assert general.requests[-1]["stream_options"] == {"include_usage": True}
    assert all(chunk.choices and "usage" not in chunk.model_fields_set for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "one two three four "
    (record,) = Registry(settings=settings).traffic.query()
    if reports_usage:
        assert (record.input_tokens, record.output_tokens) == (7, 4)
    else:  # 4 characters a token
        assert (record.input_tokens, record.output_tokens) == (7, 5)
    expected = (record.input_tokens * 1000.0 + record.output_tokens * 2000.0) / 1e6
    assert record.cost_usd == pytest.approx(expected)
    (spent,) = [k for k in Registry(settings=settings).keys.all() if k.id == key.id]
    assert spent.spent_usd == pytest.approx(expected)


@pytest.mark.slow
async def test_a_client_asking_for_usage_still_gets_it_fake_general_model(settings_for, gateway):
    with NeverEndingGeneralModel() as general:
        settings = settings_for(general_base_url=general.base_url, general_model="small-llm")
        async with in_process(gateway(settings)) as http:
            stream = await sdk(http).chat.completions.create(
                model="small-llm",
                messages=[{"role": "user", "content": "a b"}],
                max_tokens=2,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2


@pytest.mark.slow
def test_a_disconnect_mid_stream_closes_the_upstream_over_a_real_server_fake_general_model(
    settings_for, serving_encoder
):
    with NeverEndingGeneralModel() as general:
        settings = settings_for(general_base_url=general.base_url, general_model="small-llm")
        with running(Gateway(settings, encoder=serving_encoder)) as url:
            host, port = url.removeprefix("http://").split(":")
            body = orjson.dumps(
                {  # no max_tokens: the fake streams forever
                    "model": "small-llm",
                    "messages": [{"role": "user", "content": "go on"}],
                    "stream": True,
                }
            )
            with socket.create_connection((host, int(port)), timeout=10) as client:
                client.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                    b"content-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                received = b""
                while b"data: " not in received:  # the stream has begun (headers may come first)
                    chunk = client.recv(65536)
                    assert chunk, f"the gateway closed before streaming: {received!r}"
                    received += chunk
            # The client went away: the gateway lets go of the upstream at once.
            assert general.wait_closed(10.0)
            assert general.streams_closed == 1
    (record,) = Registry(settings=settings).traffic.query()
    assert record.status == 499 and record.route == "passthrough"


# -- niche general check -----------------------------------------------------------------


def _cli(args: list[str], **env: str) -> Any:
    from typer.testing import CliRunner

    from niche.cli import app

    return CliRunner().invoke(app, ["general", "check", *args], env=env)


@pytest.mark.parametrize("llama_cpp", [False, True], ids=["openai", "llama-cpp"])
def test_niche_general_check_probes_the_fake_general_model(niche_home, llama_cpp):
    with NeverEndingGeneralModel(label="question", refuse_json_schema=llama_cpp) as general:
        result = _cli(
            ["--json"],
            NICHE_GENERAL_BASE_URL=general.base_url,
            NICHE_GENERAL_MODEL="small-llm",
            NICHE_GENERAL_MAX_TOKENS="16",
            NICHE_GATEWAY_TIMEOUT_S="5",
        )
        assert result.exit_code == 0, result.output
        check = orjson.loads(result.stdout)
        assert check["answer"] == '{"label":"question"}'
        assert (check["label"], check["maps_to_label"]) == ("question", True)
        assert check["latency_ms"] < 5000 and general.requests[-1]["max_tokens"] == 16
        if llama_cpp:  # json_schema refused with 422, json_object taken
            assert check["formats"] == [["json_schema", 422], ["json_object", 200]]
            assert (check["response_format"], check["format_accepted"]) == ("json_object", False)
        else:
            assert (check["response_format"], check["format_accepted"]) == ("json_schema", True)

        # A task's own general model, asked free text: the echo maps to no label.
        with Registry(settings=Settings()) as registry:
            from niche.registry.tasks import TaskSpec

            registry.tasks.create(
                TaskSpec(
                    name="tickets",
                    labels=["spam", "not_spam"],
                    general=GeneralModelSpec(
                        kind="openai",
                        base_url=general.base_url,
                        model="small-llm",
                        response_format="text",
                        max_tokens=200,
                    ),
                )
            )
        result = _cli(["tickets", "--json"])
        assert result.exit_code == 0, result.output
        check = orjson.loads(result.stdout)
        assert check["answer"].startswith("Classify the text") and check["label"] is None
        assert (check["task"], check["format_accepted"]) == ("tickets", None)
        table = _cli(["tickets"])
        assert table.exit_code == 0 and "names no label" in table.stdout


def test_niche_general_check_says_what_is_wrong(niche_home):
    result = _cli([])
    assert result.exit_code == 2
    assert "no general model is configured" in result.stderr
    with NeverEndingGeneralModel() as general:
        result = _cli(
            [],
            NICHE_GENERAL_BASE_URL=general.base_url,
            NICHE_GENERAL_MODEL="small-llm",
            NICHE_GENERAL_API_KEY_ENV="FAKE_GENERAL_KEY",
        )
        assert result.exit_code == 2
        assert "FAKE_GENERAL_KEY" in result.stderr and "not set" in result.stderr
        assert general.requests == []
        port = general.base_url.split(":")[2].split("/")[0]
    down = f"http://127.0.0.1:{port}/v1"  # the fake has stopped: nothing listens there
    result = _cli([], NICHE_GENERAL_BASE_URL=down, NICHE_GENERAL_MODEL="small-llm")
    assert result.exit_code == 1
    assert "cannot be reached" in result.stderr
