"""The gateway in-process, through httpx2's ASGI transport, driven by the official OpenAI SDK
and plain HTTP — on a SQLite and on a PostgreSQL registry.

The specialists are real (trained on SMS spam rows with the real encoder); the registry is a
real SQLite file or a real PostgreSQL database; the only fake is the vendor's API
(``FakeVendorAPI``, a real HTTP server), named in each test. Streaming relay and signals are
tested on a real uvicorn server (``test_gateway_server.py``, ``test_gateway_shutdown.py``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import openai
import orjson
import pytest

from niche.gateway.portfolio import load_version, serving_context
from niche.registry import Registry
from niche.settings import Settings
from tests.fake_vendor import FakeVendorAPI, free_port
from tests.gateway_support import (
    HAM,
    SPAM,
    TASK,
    in_process,
    register_portfolio,
    sdk,
    until,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


def _registry(settings: Settings) -> Registry:
    return Registry(settings=settings)


def _set_general(settings: Settings, vendor: FakeVendorAPI | str, **general: Any) -> None:
    base_url = vendor if isinstance(vendor, str) else vendor.base_url
    with _registry(settings) as registry:
        registry.tasks.update(
            TASK,
            general={"kind": "openai", "base_url": base_url, "model": "vendor-model", **general},
        )


async def _ask(client: openai.AsyncOpenAI, text: str, model: str = TASK, **options: Any):
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **options
    )
    return raw.headers, raw.parse()


def _metric(body: bytes, line: str) -> bool:
    return line.encode() in body.split(b"\n")


async def test_sdk_task_requests_specialist_answers_and_low_confidence_cascades_to_fake_vendor(
    settings_for, gateway, serving_encoder, monkeypatch, caplog
):
    settings = settings_for()
    monkeypatch.setenv("VENDOR_KEY_FOR_TEST", "sk-vendor-secret")
    caplog.set_level("DEBUG")
    with _registry(settings) as registry:
        v1 = load_version(registry.models.get(TASK, 1), serving_context(settings, serving_encoder))
    expected = v1.predict([SPAM])
    with FakeVendorAPI(answer=lambda prompt: "Spam.") as vendor:
        _set_general(
            settings,
            vendor,
            price_input_per_1m_tokens_usd=1.0,
            api_key_env="VENDOR_KEY_FOR_TEST",
        )
        app = gateway(settings)
        async with in_process(app) as http:
            client = sdk(http)
            headers, completion = await _ask(client, SPAM)
            assert completion.choices[0].message.content == "spam"
            assert headers["x-niche-route"] == "specialist"
            assert headers["x-niche-model-version"] == "1"
            # The confidence v1 gives this text, and above the task's threshold (0.5).
            assert headers["x-niche-confidence"] == f"{float(expected.confidences[0]):.4f}"
            assert float(headers["x-niche-confidence"]) >= 0.5
            assert completion.model_extra["niche"]["route"] == "specialist"
            assert vendor.requests == []

            with _registry(settings) as registry:
                registry.tasks.update(TASK, cascade_threshold=1.0)
            await app.portfolio.refresh()  # what the refresher does every refresh_s
            headers, completion = await _ask(client, HAM)
            assert completion.choices[0].message.content == "spam"  # what the vendor said
            assert completion.usage.prompt_tokens == 12
            assert headers["x-niche-route"] == "general"
            prompt = vendor.requests[-1]["messages"][0]["content"]
            assert HAM in prompt and "ham, spam" in prompt
            assert vendor.requests[-1]["model"] == "vendor-model"
            assert vendor.authorization[-1] == "Bearer sk-vendor-secret"
    assert "sk-vendor-secret" not in caplog.text
    records = _registry(settings).traffic.query(TASK)
    assert [r.route for r in records] == ["specialist", "general"]
    general = records[-1]
    assert (general.route, general.general_answer, general.general_label) == (
        "general",
        "Spam.",
        "spam",
    )
    assert general.specialist_label == v1.predict([HAM]).labels[0]
    assert general.input_tokens == 12
    # The vendor's 12 tokens at $1 per 1M, plus the specialist's compute: CPU seconds over
    # all threads, as evaluation measures them, so at most the request's time on every core.
    cores = os.cpu_count() or 1
    compute_usd = cores * general.latency_ms / 1000 * settings.get("NICHE_CPU_HOUR_USD") / 3600
    assert 12 / 1e6 < general.cost_usd < 12 / 1e6 + compute_usd
    assert general.input == [{"role": "user", "content": HAM}]


async def test_sdk_pass_through_to_fake_vendor_and_other_routes_relayed(settings_for, gateway):
    with FakeVendorAPI(answer=lambda prompt: "hello from the vendor") as vendor:
        settings = settings_for(general_base_url=vendor.base_url, general_model="vendor-model")
        async with in_process(gateway(settings)) as http:
            client = sdk(http)
            headers, completion = await _ask(client, "say hello", model="gpt-vendor")
            assert completion.choices[0].message.content == "hello from the vendor"
            assert headers["x-niche-route"] == "passthrough"
            assert vendor.requests[-1]["model"] == "gpt-vendor"

            # Other routes of the API are relayed too: the base URL is all a client changes.
            embedding = await client.embeddings.create(model="vendor-embed", input="hello")
            assert embedding.data[0].embedding == [0.5, -0.5, 5.0]
            assert vendor.requests[-1]["model"] == "vendor-embed"
            assert vendor.requests[-1]["input"] == "hello"
            missing = await http.get("/v1/no-such-route")
            # The vendor's own answer (aiohttp's), relayed.
            assert (missing.status_code, missing.text) == (404, "404: Not Found")
            assert missing.headers["x-niche-route"] == "passthrough"

            # A task request with stream=True gets a one-chunk stream of its label.
            stream = await client.chat.completions.create(
                model=TASK, messages=[{"role": "user", "content": SPAM}], stream=True
            )
            chunks = [chunk async for chunk in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "spam"
    records = _registry(settings).traffic.query()
    assert [(r.route, r.general_answer) for r in records[:1]] == [
        ("passthrough", "hello from the vendor")
    ]
    assert records[0].input_tokens == 12
    assert (records[1].model, records[1].route, records[1].input["path"]) == (
        "vendor-embed",
        "passthrough",
        "/v1/embeddings",
    )
    assert [r.route for r in records] == ["passthrough"] * 3 + ["specialist"]


async def test_upstream_down_gives_the_specialists_answer_marked_fallback(settings_for, gateway):
    settings = settings_for()
    closed = f"http://127.0.0.1:{free_port()}/v1"
    _set_general(settings, closed)
    with _registry(settings) as registry:
        registry.tasks.update(TASK, cascade_threshold=1.0)
    async with in_process(gateway(settings)) as http:
        headers, completion = await _ask(sdk(http), SPAM)
        assert completion.choices[0].message.content == "spam"
        assert headers["x-niche-route"] == "specialist-fallback"
        assert headers["x-niche-fallback-reason"] == "upstream-error"


async def test_a_slow_fake_vendor_times_out_and_the_specialist_answers(settings_for, gateway):
    # The one test where a real timeout is the point: the vendor holds its answer, and the
    # gateway must stop waiting after the task's timeout_s (0.5 s).
    settings = settings_for()
    with FakeVendorAPI() as vendor:
        _set_general(settings, vendor)
        with _registry(settings) as registry:
            registry.tasks.update(TASK, cascade_threshold=1.0, serving={"timeout_s": 0.5})
        vendor.hold()
        async with in_process(gateway(settings)) as http:
            started = time.monotonic()
            headers, completion = await _ask(sdk(http), SPAM)
            waited = time.monotonic() - started
            assert vendor.answered == 0  # answered without the vendor's answer
            assert 0.5 <= waited < 2.5
            assert headers["x-niche-route"] == "specialist-fallback"
            assert headers["x-niche-fallback-reason"] == "timeout"
            assert completion.choices[0].message.content == "spam"
            vendor.release()


class _Broken:
    """Fault injection: the real specialist, whose predict raises."""

    def __init__(self, inner: Any) -> None:
        self.kind, self.label_set = inner.kind, inner.label_set

    def predict(self, texts):
        raise RuntimeError("onnxruntime session failed")


async def test_a_raising_specialist_falls_back_to_the_fake_vendor(
    settings_for, gateway, serving_encoder
):
    settings = settings_for()

    def loader(record):
        return _Broken(load_version(record, serving_context(settings, serving_encoder)))

    with FakeVendorAPI(answer=lambda prompt: "ham") as vendor:
        _set_general(settings, vendor)
        async with in_process(gateway(settings, loader=loader)) as http:
            headers, completion = await _ask(sdk(http), SPAM)
            assert completion.choices[0].message.content == "ham"  # the vendor's answer
            assert headers["x-niche-route"] == "general-fallback"
            assert headers["x-niche-fallback-reason"] == "specialist-error"
        assert len(vendor.requests) == 1


async def test_an_answer_naming_no_label_is_counted_invalid(settings_for, gateway):
    settings = settings_for()
    with FakeVendorAPI(answer=lambda prompt: "I cannot tell, sorry") as vendor:
        _set_general(settings, vendor)
        with _registry(settings) as registry:
            registry.tasks.update(TASK, cascade_threshold=1.0)
        async with in_process(gateway(settings)) as http:
            headers, completion = await _ask(sdk(http), SPAM)
            assert headers["x-niche-route"] == "specialist-fallback"
            assert headers["x-niche-fallback-reason"] == "invalid-answer"
            assert completion.choices[0].message.content == "spam"
            metrics = (await http.get("/metrics")).content
    assert _metric(metrics, 'niche_general_invalid_total{task="sms_spam"} 1.0')
    assert _metric(metrics, 'niche_cascaded_total{task="sms_spam"} 1.0')


async def test_circuit_breaker_stops_calling_a_failing_fake_vendor(settings_for, gateway):
    settings = settings_for(gateway_breaker_failures=2, gateway_breaker_reset_s=60.0)
    with FakeVendorAPI() as vendor:
        vendor.fail_status = 500
        _set_general(settings, vendor)
        with _registry(settings) as registry:
            registry.tasks.update(TASK, cascade_threshold=1.0)
        async with in_process(gateway(settings)) as http:
            client = sdk(http)
            reasons = []
            for _ in range(5):
                headers, _ = await _ask(client, SPAM)
                assert headers["x-niche-route"] == "specialist-fallback"
                reasons.append(headers["x-niche-fallback-reason"])
            assert reasons == ["upstream-error"] * 2 + ["circuit-open"] * 3
            metrics = (await http.get("/metrics")).content
        assert len(vendor.requests) == 2  # the breaker opened after two failures
    upstream = f"vendor-model at {vendor.base_url}"
    assert _metric(metrics, f'niche_upstream_circuit_open{{upstream="{upstream}"}} 1.0')


async def test_shadow_traffic_records_agreement_without_delaying_the_answer(settings_for, gateway):
    settings = settings_for()
    with FakeVendorAPI(answer=lambda prompt: "spam") as vendor:
        _set_general(settings, vendor)
        with _registry(settings) as registry:
            registry.tasks.update(TASK, serving={"shadow_fraction": 1.0})
        vendor.hold()
        async with in_process(gateway(settings)) as http:
            headers, _completion = await _ask(sdk(http), SPAM)
            assert headers["x-niche-route"] == "specialist"
            # Answered while the vendor still holds the shadow call.
            await asyncio.to_thread(vendor.wait_for_requests, 1)
            assert vendor.answered == 0
            vendor.release()
        assert (len(vendor.requests), vendor.answered) == (1, 1)  # done before shutdown ended
    (record,) = _registry(settings).traffic.query(TASK)
    assert record.shadow and record.route == "specialist"
    assert record.specialist_label == record.general_label == "spam"


async def test_canary_promotion_without_restart_and_batch_predict(settings_for, gateway):
    settings = settings_for()
    with _registry(settings) as registry:
        registry.promotions.move(TASK, "challenger", 2, actor="test", reason="canary")
        registry.tasks.update(TASK, serving={"canary_fraction": 1.0})
    app = gateway(settings)
    async with in_process(app) as http:
        response = await http.post(f"/v1/tasks/{TASK}/predict", json={"inputs": [SPAM, HAM, SPAM]})
        assert response.status_code == 200
        body = response.json()
        assert [p["label"] for p in body["predictions"]] == ["spam", "ham", "spam"]
        assert {(p["alias"], p["model_version"]) for p in body["predictions"]} == {
            ("challenger", 2)
        }
        with _registry(settings) as registry:
            registry.tasks.update(TASK, serving={"canary_fraction": 0.0})
            registry.promotions.move(TASK, "champion", 2, actor="test", reason="promoted")
        await app.portfolio.refresh()  # the same app: no restart
        body = (await http.post(f"/v1/tasks/{TASK}/predict", json={"inputs": [HAM]})).json()
        prediction = body["predictions"][0]
        assert (prediction["alias"], prediction["model_version"]) == ("champion", 2)


class _Gated:
    """The real specialist, whose first batch waits for the test (threading.Event) so that
    the other requests queue up behind it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.kind, self.label_set = inner.kind, inner.label_set
        self.go = threading.Event()
        self.batches: list[int] = []

    def predict(self, texts):
        self.batches.append(len(texts))
        if len(self.batches) == 1 and not self.go.wait(30):
            raise RuntimeError("the test never released the first batch")
        return self.inner.predict(texts)


async def test_concurrent_requests_are_micro_batched(settings_for, gateway, serving_encoder):
    settings = settings_for(gateway_batch_wait_ms=20.0)
    gated: list[_Gated] = []

    def loader(record):
        gated.append(_Gated(load_version(record, serving_context(settings, serving_encoder))))
        return gated[-1]

    app = gateway(settings, loader=loader)
    async with in_process(app) as http:
        client = sdk(http)
        asks = [asyncio.ensure_future(_ask(client, f"{SPAM} #{i}")) for i in range(32)]
        (model,) = gated
        batcher = app.portfolio.get(TASK).champion.batcher
        # The first batch is held in the model; every other text waits in the queue.
        await until(lambda: bool(model.batches) and model.batches[0] + batcher.queued == 32)
        model.go.set()
        answers = [completion for _, completion in await asyncio.gather(*asks)]
        metrics = (await http.get("/metrics")).content
    assert [a.choices[0].message.content for a in answers] == ["spam"] * 32
    assert sum(model.batches) == 32 and max(model.batches) > 1
    assert batcher.batches == len(model.batches) < 32
    # The batch-size histogram counts each answer with the size of its batch.
    alone = sum(size for size in model.batches if size == 1)
    squares = sum(size * size for size in model.batches)
    assert _metric(metrics, f'niche_batch_size_bucket{{le="1.0",task="sms_spam"}} {alone}.0')
    assert _metric(metrics, 'niche_batch_size_count{task="sms_spam"} 32.0')
    assert _metric(metrics, f'niche_batch_size_sum{{task="sms_spam"}} {squares}.0')


async def test_a_slow_load_does_not_delay_answers_of_another_task(
    settings_for, gateway, serving_encoder, trained
):
    settings = settings_for()
    other = "sms_spam_b"
    register_portfolio(settings, trained[1:], task=other, champion=False)
    loading, finish = threading.Event(), threading.Event()

    def loader(record):
        if record.task == other:  # a load that takes as long as the test wants
            loading.set()
            if not finish.wait(30):
                raise RuntimeError("the test never let the load finish")
        return load_version(record, serving_context(settings, serving_encoder))

    app = gateway(settings, loader=loader)
    async with in_process(app) as http:
        with _registry(settings) as registry:
            registry.promotions.move(other, "champion", 1, actor="test", reason="slow load")
        refresh = asyncio.ensure_future(app.portfolio.refresh())
        await asyncio.to_thread(loading.wait, 30)
        # sms_spam answers while sms_spam_b's new version is still loading.
        response = await asyncio.wait_for(
            http.post(f"/v1/tasks/{TASK}/predict", json={"inputs": [SPAM]}), 10
        )
        assert response.json()["predictions"][0]["route"] == "specialist"
        assert not refresh.done()
        finish.set()
        await refresh
        assert app.portfolio.get(other).served() == {"champion": 1}
        response = await http.post(f"/v1/tasks/{other}/predict", json={"inputs": [SPAM]})
        assert response.json()["predictions"][0]["model_version"] == 1


async def test_a_refresh_reads_every_tasks_aliases_in_two_queries(settings_for, gateway, trained):
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    settings = settings_for(gateway_refresh_s=600.0)  # no background refresh meanwhile
    register_portfolio(settings, trained[1:], task="sms_spam_b")
    register_portfolio(settings, trained[:1], task="sms_spam_c")
    app = gateway(settings)
    statements: list[str] = []

    def executed(connection, cursor, statement, *args) -> None:
        statements.append(statement)

    async with in_process(app):
        event.listen(Engine, "before_cursor_execute", executed)
        try:
            await app.portfolio.refresh()
        finally:
            event.remove(Engine, "before_cursor_execute", executed)
    # Three tasks: one query for the tasks, one for every alias (not 2 per task + 1).
    kinds = [statement.split(None, 1)[0].upper() for statement in statements]
    assert kinds.count("SELECT") == 2, statements
    assert set(kinds) <= {"SELECT", "BEGIN", "COMMIT"}, statements  # SQLite sends its BEGINs
    assert app.portfolio.names() == "sms_spam, sms_spam_b, sms_spam_c"


async def test_keys_scopes_and_budgets(settings_for, gateway):
    settings = settings_for()
    with _registry(settings) as registry:
        admin, admin_secret = registry.keys.create(scope="admin")
        _, user_secret = registry.keys.create(scope="inference", budget_usd=0.01)
    with FakeVendorAPI(answer=lambda prompt: "ham") as vendor:
        # 12 input tokens at $1,000 per 1M: each cascaded request costs $0.012.
        _set_general(settings, vendor, price_input_per_1m_tokens_usd=1000.0)
        with _registry(settings) as registry:
            registry.tasks.update(TASK, cascade_threshold=1.0)
        async with in_process(gateway(settings)) as http:
            with pytest.raises(openai.AuthenticationError) as wrong:
                await _ask(sdk(http, key="nk-wrong"), SPAM)
            assert wrong.value.status_code == 401
            assert wrong.value.body["message"] == "invalid API key (unknown or revoked)"
            response = await http.post("/v1/chat/completions", json={"model": TASK})
            body = response.json()
            assert response.status_code == 401 and body["error"]["type"] == "authentication_error"

            user = sdk(http, key=user_secret)
            assert (await _ask(user, SPAM))[1].choices[0].message.content == "ham"
            with pytest.raises(openai.RateLimitError) as exhausted:
                await _ask(user, SPAM)
            assert exhausted.value.body["code"] == "insufficient_quota"
            assert "spent its budget" in exhausted.value.body["message"]

            response = await http.get(
                "/v1/admin/keys", headers={"authorization": f"Bearer {user_secret}"}
            )
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "insufficient_scope"
            response = await http.get(
                "/v1/admin/keys", headers={"authorization": f"Bearer {admin_secret}"}
            )
            assert response.status_code == 200
            assert user_secret not in response.text and admin_secret not in response.text
    keys = {k.scope: k for k in _registry(settings).keys.all()}
    # The vendor's tokens, plus the specialist's compute (a few micro-dollars).
    assert keys["inference"].spent_usd == pytest.approx(0.012, abs=1e-5)
    assert keys["inference"].spent_usd > 0.012
    assert admin.id == keys["admin"].id


async def test_admin_key_changes_are_made_as_the_admin_key(settings_for, gateway):
    settings = settings_for()
    with _registry(settings) as registry:
        admin, admin_secret = registry.keys.create(scope="admin", actor="test")
    as_admin = {"authorization": f"Bearer {admin_secret}"}
    async with in_process(gateway(settings)) as http:
        created = await http.post(
            "/v1/admin/keys", json={"scope": "inference", "name": "ci"}, headers=as_admin
        )
        assert created.status_code == 201
        key = created.json()["key"]
        assert created.json()["secret"].startswith("nk-") and key["name"] == "ci"
        revoked = await http.delete(f"/v1/admin/keys/{key['prefix']}", headers=as_admin)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    with _registry(settings) as registry:
        audit = [(e.action, e.subject, e.actor) for e in registry.audit.events()]
    assert audit[-2:] == [
        ("key.created", key["prefix"], f"api:{admin.prefix}"),
        ("key.revoked", key["prefix"], f"api:{admin.prefix}"),
    ]


async def test_openai_style_errors_never_500(settings_for, gateway):
    settings = settings_for(gateway_max_body_bytes=2048)
    async with in_process(gateway(settings)) as http:
        cases = [
            (b"{not json", 400, None),
            (b"[1, 2]", 400, None),
            ({"model": 3, "messages": []}, 400, "model"),
            ({"model": TASK, "messages": "hi"}, 400, "messages"),
            (
                {"model": TASK, "messages": [{"role": "robot", "content": "x"}]},
                400,
                "messages[0].role",
            ),
            (
                {"model": TASK, "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
                400,
                "stream",
            ),
            ({"model": TASK, "messages": [{"role": "system", "content": "x"}]}, 400, "messages"),
            ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404, None),
            ({"model": TASK, "messages": [{"role": "user", "content": "x" * 5000}]}, 413, None),
        ]
        for body, status, param in cases:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            response = await http.post(
                "/v1/chat/completions", content=data, headers={"content-type": "application/json"}
            )
            payload = response.json()
            assert response.status_code == status, (body, payload)
            assert set(payload["error"]) == {"message", "type", "param", "code"}
            assert payload["error"]["param"] == param
        response = await http.post("/v1/tasks/nope/predict", json={"inputs": ["x"]})
        assert response.status_code == 404 and "sms_spam" in response.json()["error"]["message"]
        response = await http.post(f"/v1/tasks/{TASK}/predict", json={"inputs": []})
        assert response.status_code == 400 and response.json()["error"]["param"] == "inputs"
        response = await http.get("/nowhere")
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "no route GET /nowhere"
        response = await http.get("/v1/chat/completions")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["tasks"] == {TASK: {"champion": 1}}
        models = await http.get("/v1/models")
        assert [m["id"] for m in models.json()["data"]] == [TASK]
    # Requests that parsed but failed are traffic too; malformed ones are not.
    failed = [(r.model, r.route, r.status) for r in _registry(settings).traffic.query()]
    assert failed == [(TASK, "error", 400), ("no-such-model", "error", 404)]


async def test_capture_can_be_turned_off_per_task_and_redacted(
    settings_for, gateway, monkeypatch, tmp_path
):
    (tmp_path / "redactor.py").write_text(
        "import dataclasses\n"
        "def redact(record):\n"
        "    return dataclasses.replace(record, input='[redacted]')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = settings_for(gateway_redact="redactor:redact")
    app = gateway(settings)
    async with in_process(app) as http:
        client = sdk(http)
        await _ask(client, SPAM)  # captured, through the redaction hook
        with _registry(settings) as registry:
            registry.tasks.update(TASK, serving={"capture": False})
        # The background refresher (every 0.2 s) picks the change up, no restart.
        await until(lambda: not app.portfolio.get(TASK).spec.serving.capture)
        for _ in range(3):
            await _ask(client, SPAM)  # answered, not captured
    (record,) = _registry(settings).traffic.query(TASK)
    assert record.input == "[redacted]" and record.route == "specialist"


async def test_low_confidence_without_an_upstream_cascades_to_the_offline_zero_shot_model(
    settings_for, gateway, serving_encoder
):
    from niche.specialists.zeroshot import ZeroShot

    settings = settings_for()
    with _registry(settings) as registry:
        registry.tasks.update(TASK, cascade_threshold=1.0)
    expected = ZeroShot(["ham", "spam"], serving_encoder).predict([SPAM]).labels[0]
    async with in_process(gateway(settings)) as http:
        headers, completion = await _ask(sdk(http), SPAM)
        assert headers["x-niche-route"] == "general"
        assert completion.choices[0].message.content == expected
        assert completion.model_extra["niche"]["general_label"] == expected


async def test_over_the_concurrency_limit_gets_429_with_retry_after(settings_for, gateway):
    with FakeVendorAPI(answer=lambda prompt: "slow") as vendor:
        settings = settings_for(
            general_base_url=vendor.base_url,
            general_model="vendor-model",
            gateway_max_concurrency=1,
        )
        body = {"model": "vendor-model", "messages": [{"role": "user", "content": "hi"}]}
        vendor.hold()
        async with in_process(gateway(settings)) as http:
            first = asyncio.ensure_future(http.post("/v1/chat/completions", json=body))
            await asyncio.to_thread(vendor.wait_for_requests, 1)  # the first is in flight
            second = await http.post("/v1/chat/completions", json=body)
            vendor.release()
            first_done = await first
    assert first_done.status_code == 200
    assert second.status_code == 429 and second.headers["retry-after"] == "1"
    assert second.json()["error"]["type"] == "rate_limit_error"
    assert len(vendor.requests) == 1  # the refused one never reached the vendor


async def test_admin_alias_moves_need_a_passed_gate_or_force(settings_for, gateway):
    # The route is the registry's one promotion rule (registry.promotions.promote) over HTTP.
    settings = settings_for()
    async with in_process(gateway(settings)) as http:
        route = f"/v1/admin/tasks/{TASK}/aliases/champion"
        refused = await http.put(route, json={"version": 2, "reason": "rollforward"})
        error = refused.json()["error"]
        # The registry's GateRefusedError with its own status: the request is well-formed,
        # the version's state (no passed gate) refuses it.
        assert refused.status_code == 409 and error["code"] == "gate_required"
        assert error["param"] == "version"
        assert error["message"].startswith(f"task {TASK} v2 has no passed gate for champion")

        forced = await http.put(
            route, json={"version": 2, "reason": "hotfix", "force": True, "expected_current": 1}
        )
        assert forced.status_code == 200
        event = forced.json()
        assert (event["from_version"], event["to_version"], event["actor"]) == (
            1,
            2,
            "api:local",
        )
        assert (event["reason"], event["moved"], event["forced"]) == ("forced: hotfix", True, True)
        body = (await http.post(f"/v1/tasks/{TASK}/predict", json={"inputs": [HAM]})).json()
        assert body["predictions"][0]["model_version"] == 2  # no restart, no wait

        # Asked again: v2 holds the alias already, nothing is written; the answer is the
        # move that put it there.
        again = await http.put(route, json={"version": 2, "reason": "again", "force": True})
        assert again.status_code == 200
        assert again.json() == {**event, "moved": False, "forced": False}

        # Someone else moved it meanwhile: the compare-and-set refuses, with its own code.
        stale = await http.put(
            route, json={"version": 1, "reason": "rollback", "force": True, "expected_current": 1}
        )
        error = stale.json()["error"]
        assert (stale.status_code, error["code"], error["param"]) == (
            409,
            "alias_conflict",
            "expected_current",
        )

        # A version with a passed gate for champion moves without force.
        with _registry(settings) as registry:
            registry.promotions.record_gate(
                TASK, 1, alias="champion", passed=True, checks=[], actor="test"
            )
        rollback = await http.put(route, json={"version": 1, "reason": "rollback"})
        assert rollback.status_code == 200
        moved = rollback.json()
        assert (moved["from_version"], moved["to_version"], moved["reason"]) == (2, 1, "rollback")
        assert (moved["moved"], moved["forced"]) == (True, False)

        aliases = await http.get(f"/v1/admin/tasks/{TASK}/aliases")
        assert aliases.status_code == 200 and aliases.json()["aliases"] == {"champion": 1}
        history = [(e["from_version"], e["to_version"]) for e in aliases.json()["history"]]
        assert history == [(None, 1), (1, 2), (2, 1)]
    with _registry(settings) as registry:
        audit = [
            (e.action, e.subject, e.detail.get("forced"))
            for e in registry.audit.events(TASK)
            if e.actor == "api:local"
        ]
        gate = registry.promotions.gates(TASK)[0]
    # The forced move stored a forced gate decision beside it, both by the route's caller.
    assert audit == [
        ("gate.decided", "v2", True),
        ("alias.moved", "v2", None),
        ("alias.moved", "v1", None),
    ]
    assert (gate.version, gate.passed, gate.forced, gate.why) == (2, False, True, "hotfix")


async def test_admin_answers_bad_values_with_400_and_unknown_keys_with_404(settings_for, gateway):
    settings = settings_for()
    async with in_process(gateway(settings)) as http:
        response = await http.put(
            f"/v1/admin/tasks/{TASK}/aliases/Bad_Alias",
            json={"version": 2, "reason": "typo", "force": True},
        )
        error = response.json()["error"]
        assert (response.status_code, error["type"]) == (400, "invalid_request_error")
        assert error["message"].startswith("alias 'Bad_Alias' must be 1-64 lower-case letters")
        response = await http.delete("/v1/admin/keys/zz")
        assert response.status_code == 404
        assert response.json()["error"]["message"] == (
            "no API key with id or prefix 'zz' (see `niche keys list`)"
        )


def test_serve_plan_binds_loopback_until_a_key_exists(settings_for):
    from niche.errors import ConfigurationError
    from niche.gateway.server import plan

    settings = settings_for()
    decided = plan(settings, host="0.0.0.0", port=8000, workers=2)
    assert decided.host == "127.0.0.1"
    assert "serving on 127.0.0.1 only" in decided.notices[0]
    with _registry(settings) as registry:
        registry.keys.create(scope="inference")
    assert plan(settings, host="0.0.0.0", port=8000, workers=2).host == "0.0.0.0"
    with pytest.raises(ConfigurationError, match="--workers"):
        plan(settings, host="127.0.0.1", port=8000, workers=0)


async def test_an_unreachable_database_is_never_named_to_clients(niche_home, gateway):
    url = f"postgresql+psycopg://niche@127.0.0.1:{free_port()}/registry"
    settings = Settings(home=str(niche_home), database_url=url)
    async with in_process(gateway(settings)) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        models = await http.get("/v1/models")
        assert models.status_code == 503
    message = "the registry database cannot be used right now; the gateway's log says why"
    assert ready.json() == {"status": "not ready", "reason": message}
    assert models.json()["error"] == {
        "message": message,
        "type": "server_error",
        "param": None,
        "code": None,
    }
