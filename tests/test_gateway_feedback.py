"""What capture records for the closed loop (the id each client got, the classified text, the
random teacher sample) and ``POST /v1/feedback``, on the real ASGI app with a real registry on
SQLite and PostgreSQL.

The specialists are real (SMS spam rows, the real encoder); the only fake is the vendor's API
(``FakeVendorAPI``), named in each test that uses it. The random source is scripted where the
test is about which requests are drawn.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from niche.gateway import Gateway
from niche.registry import Registry
from niche.settings import Settings
from tests.fake_vendor import FakeVendorAPI
from tests.gateway_support import HAM, SPAM, TASK, in_process, register_portfolio, sdk
from tests.test_gateway_outage import Backend, backend  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


class Scripted:
    """A random source returning the numbers it was given, in order (then failing loudly)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        if not self.values:
            raise AssertionError("the gateway drew more random numbers than the test scripted")
        return self.values.pop(0)


def _records(settings: Settings, task: str | None = TASK) -> list[Any]:
    with Registry(settings=settings) as registry:
        return registry.traffic.query(task)


def _update(settings: Settings, **changes: Any) -> None:
    with Registry(settings=settings) as registry:
        registry.tasks.update(TASK, **changes)


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


# -- what capture records ----------------------------------------------------------------------


async def test_a_chat_records_the_id_it_returned_and_the_text_it_classified(settings_for, gateway):
    settings = settings_for()
    messages = [
        {"role": "system", "content": "You sort texts."},
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "ham"},
        {"role": "user", "content": [{"type": "text", "text": SPAM}]},
    ]
    async with in_process(gateway(settings)) as http:
        raw = await sdk(http).chat.completions.with_raw_response.create(
            model=TASK,
            messages=messages,  # type: ignore[arg-type]
        )
        completion = raw.parse()
        assert raw.headers["x-request-id"] == completion.id
        assert completion.model_extra["niche"]["request_id"] == completion.id
        failed = await http.post(
            "/v1/chat/completions",
            json={"model": TASK, "messages": [{"role": "user", "content": "  "}]},
        )
        assert failed.status_code == 400
    answered, error = _records(settings)
    assert (answered.request_id, answered.text) == (completion.id, SPAM)
    assert answered.input == messages  # the whole request, apart from the text
    assert answered.sampled is False  # the conftest turns the random sample off
    assert (error.route, error.request_id, error.text) == ("error", None, None)


async def test_pass_through_records_keep_the_id_their_client_got(settings_for, gateway):
    with FakeVendorAPI(answer=lambda prompt: "hello from the vendor") as vendor:
        settings = settings_for(general_base_url=vendor.base_url, general_model="vendor-model")
        async with in_process(gateway(settings)) as http:
            chat = await http.post(
                "/v1/chat/completions",
                json={"model": "gpt-vendor", "messages": [{"role": "user", "content": "hi"}]},
            )
            relayed = await http.post(
                "/v1/embeddings", json={"model": "vendor-embed", "input": "hello"}
            )
    chat_id, relayed_id = chat.headers["x-request-id"], relayed.headers["x-request-id"]
    assert chat_id.startswith("req-") and relayed_id.startswith("req-") and chat_id != relayed_id
    records = _records(settings, None)
    assert [(r.route, r.request_id, r.text) for r in records] == [
        ("passthrough", chat_id, None),
        ("passthrough", relayed_id, None),
    ]


async def test_each_prediction_gets_its_own_id_and_its_record_keeps_it(settings_for, gateway):
    settings = settings_for()
    async with in_process(gateway(settings)) as http:
        response = await http.post(f"/v1/tasks/{TASK}/predict", json={"inputs": [SPAM, HAM, SPAM]})
        again = await http.post(f"/v1/tasks/{TASK}/predict", json={"inputs": [SPAM]})
    ids = [p["request_id"] for p in response.json()["predictions"] + again.json()["predictions"]]
    assert len(set(ids)) == 4 and all(i.startswith("pred-") for i in ids)
    stored = {r.request_id: (r.text, r.input) for r in _records(settings)}
    assert stored == {
        ids[0]: (SPAM, SPAM),
        ids[1]: (HAM, HAM),
        ids[2]: (SPAM, SPAM),
        ids[3]: (SPAM, SPAM),
    }


async def test_requests_drawn_at_random_are_recorded_sampled_whatever_the_confidence(
    settings_for, gateway
):
    # With the fake vendor as general model. A scripted random source: 0.1 and 0.3 are under
    # the task's share (0.5), so drawn; 0.9 is not.
    settings = settings_for()
    with FakeVendorAPI(answer=lambda prompt: "ham") as vendor:
        _update(
            settings,
            cascade_threshold=1.0,  # every answer unsure: the general model answers
            serving={"shadow_fraction": 0.5},
            general={"kind": "openai", "base_url": vendor.base_url, "model": "vendor-model"},
        )
        app = gateway(settings, rng=Scripted(0.1, 0.9, 0.3, 0.9))
        async with in_process(app) as http:
            client = sdk(http)
            for text in (SPAM, HAM):  # unsure: drawn, then not drawn
                await client.chat.completions.create(
                    model=TASK, messages=[{"role": "user", "content": text}]
                )
            _update(settings, cascade_threshold=0.0)  # every answer sure
            await app.portfolio.refresh()
            for text in (SPAM, HAM):  # sure: drawn (a shadow call), then not drawn
                await client.chat.completions.create(
                    model=TASK, messages=[{"role": "user", "content": text}]
                )
        assert len(vendor.requests) == 3  # two cascades and one shadow call
    records = sorted(_records(settings), key=lambda r: r.text + r.route)
    seen = {(r.text, r.route): (r.sampled, r.shadow, r.general_label) for r in records}
    assert seen == {
        (SPAM, "general"): (True, False, "ham"),
        (HAM, "general"): (False, False, "ham"),
        (SPAM, "specialist"): (True, True, "ham"),
        (HAM, "specialist"): (False, False, None),
    }


async def test_a_redactor_that_knows_only_the_input_leaves_no_raw_text_stored(
    settings_for, gateway, monkeypatch, tmp_path
):
    (tmp_path / "redactors.py").write_text(
        "import dataclasses\n"
        "def input_only(record):\n"
        "    return dataclasses.replace(record, input='[redacted]')\n"
        "def both(record):\n"
        "    return dataclasses.replace(record, input='[redacted]', text='[masked]')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    stored = []
    for hook in ("input_only", "both"):
        settings = settings_for(gateway_redact=f"redactors:{hook}")
        async with in_process(gateway(settings)) as http:
            await http.post(f"/v1/tasks/{TASK}/predict", json={"inputs": [SPAM]})
        stored.append(_records(settings)[-1])
    assert [(r.input, r.text) for r in stored] == [("[redacted]", None), ("[redacted]", "[masked]")]


# -- POST /v1/feedback -------------------------------------------------------------------------


async def _predict(http: Any, texts: list[str], headers: dict[str, str] | None = None) -> list[str]:
    response = await http.post(
        f"/v1/tasks/{TASK}/predict", json={"inputs": texts}, headers=headers or {}
    )
    assert response.status_code == 200, response.text
    return [p["request_id"] for p in response.json()["predictions"]]


async def test_feedback_attaches_gold_labels_to_the_records_it_names(settings_for, gateway):
    settings = settings_for()
    app = gateway(settings)
    async with in_process(app) as http:
        completion = await sdk(http).chat.completions.create(
            model=TASK, messages=[{"role": "user", "content": SPAM}]
        )
        ids = await _predict(http, [HAM, SPAM])
        await app.capture.flush()
        one = await http.post("/v1/feedback", json={"request_id": completion.id, "label": "spam"})
        assert (one.status_code, one.json()) == (200, {"attached": 1})
        batch = await http.post(
            "/v1/feedback",
            json={
                "feedback": [
                    {"request_id": ids[0], "label": "spam"},
                    {"request_id": ids[1], "label": "ham"},
                    {"request_id": ids[0], "label": "ham"},  # the last label wins
                ]
            },
        )
        assert (batch.status_code, batch.json()) == (200, {"attached": 2})
        metrics = (await http.get("/metrics")).text
    gold = {r.request_id: r.gold_label for r in _records(settings)}
    assert gold == {completion.id: "spam", ids[0]: "ham", ids[1]: "ham"}
    assert len(_records(settings, None)) == 3  # feedback is no traffic
    assert 'niche_requests_total{route="feedback",status="200",task=""} 2.0' in metrics
    with Registry(settings=settings) as registry:
        (*_, event) = registry.audit.events(TASK)
    assert (event.action, event.actor, event.detail["count"]) == (
        "traffic.labelled",
        "api:local",
        2,
    )


async def test_feedback_for_an_answer_given_a_moment_ago_finds_its_queued_record(
    settings_for, gateway
):
    settings = settings_for(gateway_capture_flush_ms=600_000.0)  # nothing flushed on its own
    app = gateway(settings)
    async with in_process(app) as http:
        (request_id,) = await _predict(http, [SPAM])
        assert app.capture.pending == 1
        response = await http.post("/v1/feedback", json={"request_id": request_id, "label": "ham"})
        assert (response.status_code, response.json()) == (200, {"attached": 1})
    assert _records(settings)[0].gold_label == "ham"


async def test_bad_feedback_is_named_and_changes_nothing(settings_for, gateway):
    settings = settings_for()
    app = gateway(settings)
    async with in_process(app) as http:
        (request_id,) = await _predict(http, [SPAM])
        await app.capture.flush()

        unknown = await http.post("/v1/feedback", json={"request_id": "pred-nope", "label": "ham"})
        error = unknown.json()["error"]
        assert unknown.status_code == 404
        assert (error["code"], error["param"]) == ("request_not_found", "request_id")
        assert "'pred-nope'" in error["message"]

        outside = await http.post(
            "/v1/feedback",
            json={
                "feedback": [
                    {"request_id": request_id, "label": "ham"},
                    {"request_id": request_id, "label": "eggs"},
                ]
            },
        )
        error = outside.json()["error"]
        assert (outside.status_code, error["param"]) == (400, "label")
        assert "'eggs'" in error["message"] and "labels of sms_spam: ham, spam" in error["message"]

        cases = [
            ({"request_id": request_id}, "label"),
            ({"request_id": request_id, "label": "ham", "lable": "x"}, "lable"),
            ({"request_id": 7, "label": "ham"}, "request_id"),
            ({"feedback": []}, "feedback"),
            ({"feedback": [{"request_id": request_id, "label": ""}]}, "feedback[0].label"),
            ({"feedback": ["x"]}, "feedback[0]"),
            ({"feedback": [{"request_id": request_id, "label": "ham", "x": 1}]}, "feedback[0].x"),
            ({"feedback": [{"request_id": request_id, "label": "ham"}] * 1001}, "feedback"),
        ]
        for body, param in cases:
            response = await http.post("/v1/feedback", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"]["param"] == param, body
        assert (await http.get("/v1/feedback")).status_code == 405
    (record,) = _records(settings)
    assert record.gold_label is None and record.gold_at is None


async def test_feedback_calls_are_written_a_few_at_a_time(settings_for, gateway):
    from niche.gateway.routes.feedback import FEEDBACK_CONCURRENCY

    settings = settings_for()
    app = gateway(settings)
    store = app.registry.traffic
    attach, running, most, lock = store.attach_labels, [0], [0], threading.Lock()

    def counted(*args: Any, **kwargs: Any) -> int:  # the real call, counted while it runs
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return attach(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    store.attach_labels = counted  # type: ignore[method-assign]
    async with in_process(app) as http:
        ids = await _predict(http, [SPAM] * 24)
        await app.capture.flush()
        sent = [
            http.post("/v1/feedback", json={"request_id": request_id, "label": "spam"})
            for request_id in ids
        ]
        responses = await asyncio.gather(*sent)
    assert [r.status_code for r in responses] == [200] * 24
    assert 1 < most[0] <= FEEDBACK_CONCURRENCY
    assert {r.gold_label for r in _records(settings)} == {"spam"}


async def test_feedback_needs_a_key_and_an_inference_key_labels_only_its_own_requests(
    settings_for, gateway
):
    settings = settings_for()
    with Registry(settings=settings) as registry:
        _, mine = registry.keys.create(scope="inference")
        _, other = registry.keys.create(scope="inference")
        admin, admin_secret = registry.keys.create(scope="admin")
    app = gateway(settings)
    async with in_process(app) as http:
        (request_id,) = await _predict(http, [SPAM], _bearer(mine))
        await app.capture.flush()
        body = {"request_id": request_id, "label": "spam"}
        missing = await http.post("/v1/feedback", json=body)
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        wrong = await http.post("/v1/feedback", json=body, headers=_bearer("nk-wrong"))
        assert wrong.status_code == 401
        others = await http.post("/v1/feedback", json=body, headers=_bearer(other))
        assert others.status_code == 404  # another key's request is unknown to it
        assert _records(settings)[0].gold_label is None
        assert (
            await http.post("/v1/feedback", json=body, headers=_bearer(mine))
        ).status_code == 200
        body["label"] = "ham"
        by_admin = await http.post("/v1/feedback", json=body, headers=_bearer(admin_secret))
        assert by_admin.status_code == 200
    assert _records(settings)[0].gold_label == "ham"
    with Registry(settings=settings) as registry:
        actors = [e.actor for e in registry.audit.events(TASK) if e.action == "traffic.labelled"]
    assert actors[-1] == f"api:{admin.prefix}" and actors[0].startswith("api:nk-")


async def test_feedback_while_the_registry_is_unreachable_is_a_503_naming_nothing(
    niche_home: Path,
    encoder_cache_dir: Path,
    backend: Backend,  # noqa: F811  (the fixture imported above)
    trained,
    serving_encoder,
):
    settings = Settings(
        home=str(niche_home),
        cache_dir=str(encoder_cache_dir),
        database_url=backend.url,
        gateway_refresh_s=0.2,
        gateway_capture_flush_ms=50.0,
    )
    register_portfolio(settings, trained)
    with Registry(settings=settings) as registry:
        _, secret = registry.keys.create(scope="inference")
    app = Gateway(settings, encoder=serving_encoder)
    async with in_process(app) as http:
        (request_id,) = await _predict(http, [SPAM], _bearer(secret))  # the key verified
        await app.capture.flush()
        body = {"request_id": request_id, "label": "ham"}
        await asyncio.to_thread(backend.stop, app.registry)
        try:
            refused = await http.post("/v1/feedback", json=body, headers=_bearer(secret))
        finally:
            await asyncio.to_thread(backend.start)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["message"] == (
            "the registry database cannot be used right now; the gateway's log says why"
        )
        for hidden in backend.secrets:
            assert hidden not in refused.text
        accepted = await http.post("/v1/feedback", json=body, headers=_bearer(secret))
        assert accepted.status_code == 200, accepted.text
        metrics = (await http.get("/metrics")).text
    # Refused by the registry call itself (the key's recent verdict let it through).
    assert 'niche_requests_total{route="feedback",status="503",task=""} 1.0' in metrics
    with Registry(settings=settings) as registry:
        assert registry.traffic.query(TASK)[0].gold_label == "ham"
