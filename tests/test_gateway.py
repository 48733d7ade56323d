"""The gateway on a real uvicorn server, driven by the official OpenAI SDK and plain HTTP.

The specialists are real (trained on SMS spam rows with the real encoder); the registry is a
real SQLite file; the only fake is the vendor's API (``FakeVendorAPI``), named in each test.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from niche.gateway import Gateway
from niche.registry import Registry
from niche.settings import Settings
from tests.fake_vendor import FakeVendorAPI, free_port
from tests.gateway_support import HAM, SPAM, TASK, build_portfolio, copy_home, running

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def portfolio_source(tmp_path_factory, encoder_cache_dir, encoder, datasets_dir) -> Path:
    home = tmp_path_factory.mktemp("portfolio")
    build_portfolio(home, encoder_cache_dir, encoder, datasets_dir)
    return home


@pytest.fixture
def home(portfolio_source: Path, niche_home: Path) -> Path:
    return copy_home(portfolio_source, niche_home)


@pytest.fixture
def settings_for(home: Path, encoder_cache_dir: Path):
    def make(**overrides: Any) -> Settings:
        values = {
            "home": str(home),
            "cache_dir": str(encoder_cache_dir),
            "gateway_refresh_s": 0.2,
            "gateway_capture_flush_ms": 50.0,
            **overrides,
        }
        return Settings(**values)

    return make


def _registry(settings: Settings) -> Registry:
    return Registry(settings=settings)


def _set_general(settings: Settings, vendor: FakeVendorAPI | str, **general: Any) -> None:
    base_url = vendor if isinstance(vendor, str) else vendor.base_url
    with _registry(settings) as registry:
        registry.update_task(
            TASK,
            general={"kind": "openai", "base_url": base_url, "model": "vendor-model", **general},
        )


def _post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _ask(client: openai.OpenAI, text: str, model: str = TASK):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return raw.headers, raw.parse()


def _client(url: str, key: str = "local") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_sdk_task_requests_specialist_answers_and_low_confidence_cascades_to_fake_vendor(
    settings_for, monkeypatch, caplog
):
    settings = settings_for()
    monkeypatch.setenv("VENDOR_KEY_FOR_TEST", "sk-vendor-secret")
    caplog.set_level("DEBUG")
    with FakeVendorAPI(answer=lambda prompt: "Spam.") as vendor:
        _set_general(
            settings,
            vendor,
            price_input_per_1m_tokens_usd=1.0,
            api_key_env="VENDOR_KEY_FOR_TEST",
        )
        with running(Gateway(settings)) as url:
            client = _client(url)
            headers, completion = _ask(client, SPAM)
            assert completion.choices[0].message.content == "spam"
            assert headers["x-niche-route"] == "specialist"
            assert headers["x-niche-model-version"] == "1"
            assert float(headers["x-niche-confidence"]) >= 0.5
            assert completion.model_extra["niche"]["route"] == "specialist"
            assert vendor.requests == []

            with _registry(settings) as registry:
                registry.update_task(TASK, cascade_threshold=1.0)
            _wait_for(lambda: _ask(client, HAM)[0]["x-niche-route"] == "general")
            headers, completion = _ask(client, HAM)
            assert completion.choices[0].message.content == "spam"  # what the vendor said
            assert completion.usage.prompt_tokens == 12
            assert headers["x-niche-route"] == "general"
            prompt = vendor.requests[-1]["messages"][0]["content"]
            assert HAM in prompt and "ham, spam" in prompt
            assert vendor.requests[-1]["model"] == "vendor-model"
            assert vendor.authorization[-1] == "Bearer sk-vendor-secret"
    assert "sk-vendor-secret" not in caplog.text
    records = _registry(settings).list_traffic(TASK)
    assert [r.route for r in records][:1] == ["specialist"]
    general = records[-1]
    assert (general.route, general.general_answer, general.general_label) == (
        "general",
        "Spam.",
        "spam",
    )
    assert general.specialist_label is not None and general.input_tokens == 12
    assert general.cost_usd > 12 / 1e6 - 1e-12
    assert general.input == [{"role": "user", "content": HAM}]


def _wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_sdk_pass_through_to_fake_vendor_with_and_without_stream(settings_for):
    with FakeVendorAPI(answer=lambda prompt: "hello from the vendor") as vendor:
        settings = settings_for(general_base_url=vendor.base_url, general_model="vendor-model")
        with running(Gateway(settings)) as url:
            client = _client(url)
            headers, completion = _ask(client, "say hello", model="gpt-vendor")
            assert completion.choices[0].message.content == "hello from the vendor"
            assert headers["x-niche-route"] == "passthrough"
            assert vendor.requests[-1]["model"] == "gpt-vendor"

            stream = client.chat.completions.create(
                model="gpt-vendor",
                messages=[{"role": "user", "content": "say hello"}],
                stream=True,
            )
            pieces = [
                chunk.choices[0].delta.content
                for chunk in stream
                if chunk.choices and chunk.choices[0].delta.content
            ]
            assert pieces == ["hello", " from", " the", " vendor"]
            assert vendor.requests[-1]["stream"] is True

            # Other routes of the API are relayed too: the base URL is all a client changes.
            embedding = client.embeddings.create(model="vendor-embed", input="hello")
            assert embedding.data[0].embedding == [0.5, -0.5, 5.0]
            assert vendor.requests[-1]["model"] == "vendor-embed"
            assert vendor.requests[-1]["input"] == "hello"
            status, _, _ = _get(f"{url}/v1/no-such-route")
            assert status == 404  # the vendor's answer, relayed

            # A task request with stream=True gets a one-chunk stream of its label.
            chunks = list(
                client.chat.completions.create(
                    model=TASK, messages=[{"role": "user", "content": SPAM}], stream=True
                )
            )
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "spam"
    records = _registry(settings).list_traffic()
    assert [(r.route, r.general_answer) for r in records[:2]] == [
        ("passthrough", "hello from the vendor"),
        ("passthrough", "hello from the vendor"),
    ]
    assert records[1].input_tokens == 12
    assert (records[2].model, records[2].route, records[2].input["path"]) == (
        "vendor-embed",
        "passthrough",
        "/v1/embeddings",
    )
    assert records[-1].route == "specialist"


def test_upstream_down_or_slow_gives_the_specialists_answer_marked_fallback(settings_for):
    settings = settings_for()
    closed = f"http://127.0.0.1:{free_port()}/v1"
    _set_general(settings, closed)
    with _registry(settings) as registry:
        registry.update_task(TASK, cascade_threshold=1.0, serving={"timeout_s": 0.5})
    with running(Gateway(settings)) as url:
        headers, completion = _ask(_client(url), SPAM)
        assert completion.choices[0].message.content == "spam"
        assert headers["x-niche-route"] == "specialist-fallback"
        assert headers["x-niche-fallback-reason"] == "upstream-error"

    with FakeVendorAPI() as vendor:
        vendor.delay_s = 3.0
        _set_general(settings, vendor)
        with running(Gateway(settings)) as url:
            started = time.monotonic()
            headers, completion = _ask(_client(url), SPAM)
            assert time.monotonic() - started < 2.5
            assert headers["x-niche-route"] == "specialist-fallback"
            assert headers["x-niche-fallback-reason"] == "timeout"
            assert completion.choices[0].message.content == "spam"


def test_a_raising_specialist_falls_back_to_the_fake_vendor(settings_for):
    from niche.workflows import load_specialist

    settings = settings_for()

    class Broken:
        """Fault injection: the real specialist, whose predict raises."""

        def __init__(self, inner: Any) -> None:
            self.kind, self.label_set = inner.kind, inner.label_set

        def predict(self, texts):
            raise RuntimeError("onnxruntime session failed")

    def loader(record):
        return Broken(load_specialist(record, settings))

    with FakeVendorAPI(answer=lambda prompt: "ham") as vendor:
        _set_general(settings, vendor)
        with running(Gateway(settings, loader=loader)) as url:
            headers, completion = _ask(_client(url), SPAM)
            assert completion.choices[0].message.content == "ham"  # the vendor's answer
            assert headers["x-niche-route"] == "general-fallback"
            assert headers["x-niche-fallback-reason"] == "specialist-error"
        assert len(vendor.requests) == 1


def test_an_answer_naming_no_label_is_counted_invalid(settings_for):
    settings = settings_for()
    with FakeVendorAPI(answer=lambda prompt: "I cannot tell, sorry") as vendor:
        _set_general(settings, vendor)
        with _registry(settings) as registry:
            registry.update_task(TASK, cascade_threshold=1.0)
        with running(Gateway(settings)) as url:
            headers, completion = _ask(_client(url), SPAM)
            assert headers["x-niche-route"] == "specialist-fallback"
            assert headers["x-niche-fallback-reason"] == "invalid-answer"
            assert completion.choices[0].message.content == "spam"
            _, _, metrics = _get(f"{url}/metrics")
    assert b'niche_general_invalid_total{task="sms_spam"} 1.0' in metrics
    assert b'niche_cascaded_total{task="sms_spam"} 1.0' in metrics


def test_circuit_breaker_stops_calling_a_failing_vendor(settings_for):
    settings = settings_for(gateway_breaker_failures=2, gateway_breaker_reset_s=60.0)
    with FakeVendorAPI() as vendor:
        vendor.fail_status = 500
        _set_general(settings, vendor)
        with _registry(settings) as registry:
            registry.update_task(TASK, cascade_threshold=1.0)
        with running(Gateway(settings)) as url:
            client = _client(url)
            reasons = []
            for _ in range(5):
                headers, _ = _ask(client, SPAM)
                assert headers["x-niche-route"] == "specialist-fallback"
                reasons.append(headers["x-niche-fallback-reason"])
            assert reasons == ["upstream-error"] * 2 + ["circuit-open"] * 3
            _, _, metrics = _get(f"{url}/metrics")
        assert len(vendor.requests) == 2  # the breaker opened after two failures
    assert b"niche_upstream_circuit_open" in metrics


def test_shadow_traffic_records_agreement_without_delaying_the_answer(settings_for):
    settings = settings_for()
    with FakeVendorAPI(answer=lambda prompt: "spam") as vendor:
        vendor.delay_s = 1.0
        _set_general(settings, vendor)
        with _registry(settings) as registry:
            registry.update_task(TASK, serving={"shadow_fraction": 1.0})
        with running(Gateway(settings)) as url:
            started = time.monotonic()
            headers, _completion = _ask(_client(url), SPAM)
            assert time.monotonic() - started < 0.9
            assert headers["x-niche-route"] == "specialist"
        assert len(vendor.requests) == 1  # the shadow call finished before shutdown ended
    (record,) = _registry(settings).list_traffic(TASK)
    assert record.shadow and record.route == "specialist"
    assert record.specialist_label == record.general_label == "spam"


def test_canary_promotion_without_restart_and_batch_predict(settings_for):
    settings = settings_for()
    with _registry(settings) as registry:
        registry.set_alias(TASK, "challenger", 2, actor="test", reason="canary")
        registry.update_task(TASK, serving={"canary_fraction": 1.0})
    with running(Gateway(settings)) as url:
        status, _headers, body = _post(
            f"{url}/v1/tasks/{TASK}/predict", {"inputs": [SPAM, HAM, SPAM]}
        )
        assert status == 200
        assert [p["label"] for p in body["predictions"]] == ["spam", "ham", "spam"]
        assert {(p["alias"], p["model_version"]) for p in body["predictions"]} == {
            ("challenger", 2)
        }
        with _registry(settings) as registry:
            registry.update_task(TASK, serving={"canary_fraction": 0.0})
            registry.set_alias(TASK, "champion", 2, actor="test", reason="promoted")

        def on_v2() -> bool:
            _, _headers, body = _post(f"{url}/v1/tasks/{TASK}/predict", {"inputs": [HAM]})
            prediction = body["predictions"][0]
            return (prediction["alias"], prediction["model_version"]) == ("champion", 2)

        _wait_for(on_v2)


def test_concurrent_requests_are_micro_batched(settings_for):
    settings = settings_for(gateway_batch_wait_ms=20.0)
    app = Gateway(settings)
    with running(app) as url:
        client = _client(url)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: _ask(client, f"{SPAM} #{i}")[1], range(32)))
        batches = app.portfolio.get(TASK).champion.batcher.batches
    assert [a.choices[0].message.content for a in answers] == ["spam"] * 32
    assert batches < 32


def test_keys_scopes_and_budgets(settings_for):
    settings = settings_for()
    with _registry(settings) as registry:
        admin, admin_secret = registry.create_key(scope="admin")
        _, user_secret = registry.create_key(scope="inference", budget_usd=0.01)
    with FakeVendorAPI(answer=lambda prompt: "ham") as vendor:
        # 12 input tokens at $1,000 per 1M: each cascaded request costs $0.012.
        _set_general(settings, vendor, price_input_per_1m_tokens_usd=1000.0)
        with _registry(settings) as registry:
            registry.update_task(TASK, cascade_threshold=1.0)
        with running(Gateway(settings)) as url:
            with pytest.raises(openai.AuthenticationError):
                _ask(_client(url, key="nk-wrong"), SPAM)
            status, _, body = _post(f"{url}/v1/chat/completions", {"model": TASK})
            assert status == 401 and body["error"]["type"] == "authentication_error"

            user = _client(url, key=user_secret)
            assert _ask(user, SPAM)[1].choices[0].message.content == "ham"
            with pytest.raises(openai.RateLimitError) as exhausted:
                _ask(user, SPAM)
            assert exhausted.value.body["code"] == "insufficient_quota"
            assert "spent its budget" in exhausted.value.body["message"]

            status, _, body = _get(
                f"{url}/v1/admin/keys", {"authorization": f"Bearer {user_secret}"}
            )
            assert status == 403
            status, _, body = _get(
                f"{url}/v1/admin/keys", {"authorization": f"Bearer {admin_secret}"}
            )
            assert status == 200
            assert user_secret not in body.decode() and admin_secret not in body.decode()
    keys = {k.scope: k for k in _registry(settings).list_keys()}
    # The vendor's tokens, plus the specialist's compute (a few micro-dollars).
    assert keys["inference"].spent_usd == pytest.approx(0.012, abs=1e-5)
    assert keys["inference"].spent_usd > 0.012
    assert admin.id == keys["admin"].id


def test_openai_style_errors_never_500(settings_for):
    settings = settings_for(gateway_max_body_bytes=2048)
    with running(Gateway(settings)) as url:
        chat = f"{url}/v1/chat/completions"
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
            got, _, payload = _post(chat, body)
            assert got == status, (body, payload)
            assert set(payload["error"]) == {"message", "type", "param", "code"}
            assert payload["error"]["param"] == param
        status, _, payload = _post(f"{url}/v1/tasks/nope/predict", {"inputs": ["x"]})
        assert status == 404 and "sms_spam" in payload["error"]["message"]
        status, _, _ = _post(f"{url}/v1/tasks/{TASK}/predict", {"inputs": []})
        assert status == 400
        assert _get(f"{url}/nowhere")[0] == 404
        assert _get(f"{url}/v1/chat/completions")[0] == 405
        assert _get(f"{url}/healthz")[0] == 200
        status, _, ready = _get(f"{url}/readyz")
        assert status == 200 and json.loads(ready)["tasks"] == {TASK: {"champion": 1}}
        status, _, models = _get(f"{url}/v1/models")
        assert [m["id"] for m in json.loads(models)["data"]] == [TASK]
    # Requests that parsed but failed are traffic too; malformed ones are not.
    failed = [(r.model, r.route, r.status) for r in _registry(settings).list_traffic()]
    assert failed == [(TASK, "error", 400), ("no-such-model", "error", 404)]


def test_capture_can_be_turned_off_per_task_and_redacted(settings_for, monkeypatch, tmp_path):
    (tmp_path / "redactor.py").write_text(
        "import dataclasses\n"
        "def redact(record):\n"
        "    return dataclasses.replace(record, input='[redacted]')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = settings_for(gateway_redact="redactor:redact")
    app = Gateway(settings)
    with running(app) as url:
        _ask(_client(url), SPAM)  # captured, through the redaction hook
        with _registry(settings) as registry:
            registry.update_task(TASK, serving={"capture": False})
        _wait_for(lambda: not app.portfolio.get(TASK).spec.serving.capture)
        for _ in range(3):
            _ask(_client(url), SPAM)  # answered, not captured
    (record,) = _registry(settings).list_traffic(TASK)
    assert record.input == "[redacted]" and record.route == "specialist"


def test_low_confidence_without_an_upstream_cascades_to_the_offline_zero_shot_model(
    settings_for,
):
    settings = settings_for()
    with _registry(settings) as registry:
        registry.update_task(TASK, cascade_threshold=1.0)
    with running(Gateway(settings)) as url:
        headers, completion = _ask(_client(url), SPAM)
        assert headers["x-niche-route"] == "general"
        assert completion.choices[0].message.content in {"ham", "spam"}
        assert completion.model_extra["niche"]["general_label"] == (
            completion.choices[0].message.content
        )


def test_over_the_concurrency_limit_gets_429_with_retry_after(settings_for):
    with FakeVendorAPI(answer=lambda prompt: "slow") as vendor:
        vendor.delay_s = 1.0
        settings = settings_for(
            general_base_url=vendor.base_url,
            general_model="vendor-model",
            gateway_max_concurrency=1,
        )
        body = {"model": "vendor-model", "messages": [{"role": "user", "content": "hi"}]}
        with running(Gateway(settings)) as url, concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(_post, f"{url}/v1/chat/completions", body)
            time.sleep(0.3)
            second = pool.submit(_post, f"{url}/v1/chat/completions", body)
            results = [first.result(), second.result()]
    assert results[0][0] == 200
    status, headers, payload = results[1]
    assert status == 429 and headers["retry-after"] == "1"
    assert payload["error"]["type"] == "rate_limit_error"


def test_admin_alias_moves_need_a_passed_gate_or_force(settings_for):
    settings = settings_for()
    with running(Gateway(settings)) as url:
        route = f"{url}/v1/admin/tasks/{TASK}/aliases/champion"
        request = urllib.request.Request(
            route,
            data=json.dumps({"version": 2, "reason": "rollforward"}).encode(),
            method="PUT",
            headers={"content-type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        error = json.loads(refused.value.read())["error"]
        assert refused.value.code == 400 and error["code"] == "gate_required"

        forced = urllib.request.Request(
            route,
            data=json.dumps(
                {"version": 2, "reason": "hotfix", "force": True, "expected_current": 1}
            ).encode(),
            method="PUT",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(forced, timeout=30) as response:
            event = json.loads(response.read())
        assert (event["from_version"], event["to_version"], event["actor"]) == (
            1,
            2,
            "api:local",
        )
        _, _, body = _post(f"{url}/v1/tasks/{TASK}/predict", {"inputs": [HAM]})
        assert body["predictions"][0]["model_version"] == 2  # no restart, no wait

        status, _, aliases = _get(f"{url}/v1/admin/tasks/{TASK}/aliases")
        assert status == 200 and json.loads(aliases)["aliases"] == {"champion": 2}


def test_serve_plan_binds_loopback_until_a_key_exists(settings_for):
    from niche.gateway.server import plan

    settings = settings_for()
    decided = plan(settings, host="0.0.0.0", port=8000, workers=2)
    assert decided.host == "127.0.0.1"
    assert "serving on 127.0.0.1 only" in decided.notices[0]
    with _registry(settings) as registry:
        registry.create_key(scope="inference")
    assert plan(settings, host="0.0.0.0", port=8000, workers=2).host == "0.0.0.0"
    from niche.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="--workers"):
        plan(settings, host="127.0.0.1", port=8000, workers=0)
