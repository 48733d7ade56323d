"""Traffic replay: the ``--shift`` grammar and the seeded stream it builds (pure, exact), and
``niche replay`` against a real gateway and against a fake one.

The real gateway (uvicorn in a thread, a real SQLite registry, real specialists trained on
SMS spam rows) has one fake behind it: the vendor's API (``FakeVendorAPI``), answering each
text's gold label. Where the gateway cannot yet show something (the feedback route lands with
another part of this release; errors on demand; a refused key), a fake gateway — a small
real HTTP server named as such — stands in and records what the replay sent.
"""

from __future__ import annotations

import asyncio
import csv
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from typer.testing import CliRunner

from niche.cli import app
from niche.data import Rows, ShiftPhase, StreamItem, build_stream, parse_shift
from niche.errors import ValidationError
from niche.settings import Settings
from niche.workflows import DataSpec, load_data
from niche.workflows.gateway_client import gateway_models, wait_until_served
from niche.workflows.replay import replay, replay_stream
from tests.fake_vendor import FakeVendorAPI
from tests.threaded_server import ThreadedServer

runner = CliRunner()


def _rows(per_label: int = 25, labels: str = "abcd") -> Rows:
    texts = [f"{label} text {i}" for label in labels for i in range(per_label)]
    return Rows(texts=texts, labels=[t[0] for t in texts], source="inline")


# -- the grammar --------------------------------------------------------------------------


def test_parse_shift_reads_each_target_and_several_phases():
    assert parse_shift("after=500,labels=card_arrival|lost_or_stolen_card") == (
        ShiftPhase(after=500, labels=("card_arrival", "lost_or_stolen_card")),
    )
    assert parse_shift(" after=500 , domain=travel ") == (ShiftPhase(after=500, domain="travel"),)
    (mix,) = parse_shift("after=500,mix=card_arrival:0.5,lost_or_stolen_card:0.5")
    assert mix.mix == (("card_arrival", 0.5), ("lost_or_stolen_card", 0.5))
    # share anywhere in the phase; keys in any order
    (shared,) = parse_shift("share=0.10,labels=a|b,after=500")
    assert (shared.after, shared.share, shared.labels, shared.target) == (
        500,
        0.1,
        ("a", "b"),
        "labels",
    )
    phases = parse_shift("after=100,domain=travel;after=300,share=0.25,mix=a:3,b:1")
    assert [p.target for p in phases] == ["domain", "mix"]
    assert phases[1].mix == (("a", 3.0), ("b", 1.0)) and phases[1].share == 0.25
    # describe() writes a spec that parses back to the same phase
    for phase in (*phases, shared, mix):
        assert parse_shift(phase.describe()) == (phase,)


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("", "--shift is empty"),
        ("after=500", "exactly one of labels=, domain=, mix= (got none)"),
        ("labels=a", "after=K is missing"),
        ("after=0,labels=a", "after= takes a whole number of requests >= 1, got '0'"),
        ("after=ten,labels=a", "got 'ten'"),
        ("after=5,labels=a,domain=travel", "(got labels= and domain=)"),
        ("after=5,labls=a", "unknown key 'labls'; a phase takes after, labels, domain, mix, share"),
        ("after=5,domain=mars", "unknown domain 'mars'; CLINC150 has auto_and_commute"),
        ("after=5,mix=a:x", "got 'a:x'"),
        ("after=5,mix=a:0", "positive weights"),
        ("after=5,mix=a:1,a:2", "names 'a' twice"),
        ("after=5,share=1.5,labels=a", "share= takes a fraction in (0, 1], e.g. 0.10, got '1.5'"),
        ("after=5,share=0,labels=a", "got '0'"),
        ("after=5,labels=a|a", "names a label twice"),
        ("after=5,labels=a||b", "separated by '|'"),
        (
            "after=5,labels=a,b",
            "'b' is not KEY=VALUE (keys: after, labels, domain, mix, share) "
            "(labels= separates labels with '|')",
        ),
        ("after=5,after=6,labels=a", "after= is given twice"),
        ("after=5,labels=a;", "--shift phase 2 ('') is empty"),
        (
            "after=9,labels=a;after=3,labels=b",
            "--shift phase 2 ('after=3,labels=b'): after=3 "
            "must be later than the phase before it (after=9)",
        ),
    ],
)
def test_parse_shift_refuses_bad_specs_naming_the_part(spec, names):
    with pytest.raises(ValidationError) as raised:
        parse_shift(spec)
    assert names in str(raised.value)
    assert raised.value.param == "shift"


# -- the stream ---------------------------------------------------------------------------


def test_the_stream_is_a_seeded_permutation_and_a_longer_limit_extends_it():
    rows = _rows()
    stream = build_stream(rows, seed=3)
    assert sorted(item.text for item in stream) == sorted(rows.texts)  # every row, once
    assert {item.phase for item in stream} == {0}
    assert all(item.label == item.text[0] for item in stream)
    assert build_stream(rows, seed=3) == stream
    assert [i.text for i in build_stream(rows, seed=4)] != [i.text for i in stream]
    assert build_stream(rows, seed=3, limit=10) == stream[:10]
    assert build_stream(rows, seed=3, limit=0) == []


def test_a_labels_shift_starts_exactly_at_after_and_brings_labels_held_back_before():
    stream = build_stream(_rows(), parse_shift("after=30,labels=c|d"), seed=0)
    before, after = stream[:30], stream[30:]
    assert {i.phase for i in before} == {0} and {i.phase for i in after} == {1}
    assert {i.label for i in before} <= {"a", "b"}  # c and d are new at the shift
    assert {i.label for i in after} == {"c", "d"}
    # the stream ends when the rows a position needs run out: all 50 of c and d were sent
    assert len(after) == 50
    assert len({i.text for i in stream}) == len(stream)  # no row twice


def test_a_share_mixes_exactly_that_part_of_the_new_rows_into_the_old_stream():
    rows = _rows(per_label=100)
    stream = build_stream(rows, parse_shift("after=40,share=0.1,labels=d"), seed=1, limit=240)
    assert len(stream) == 240
    assert not any(i.label == "d" for i in stream[:40])
    shifted = stream[40:]
    # spread evenly: every run of 10 requests holds exactly one new row, 20 in all
    for start in range(0, len(shifted) - 10 + 1):
        assert sum(i.label == "d" for i in shifted[start : start + 10]) == 1
    assert sum(i.label == "d" for i in shifted) == 20
    # the rest goes on as before: a, b and c
    assert {i.label for i in shifted if i.label != "d"} == {"a", "b", "c"}
    assert {i.phase for i in shifted} == {1}


def test_a_mix_draws_its_labels_by_weight_and_phases_chain():
    rows = _rows(per_label=100)
    spec = "after=20,mix=a:0.9,b:0.1;after=80,labels=d"
    stream = build_stream(rows, parse_shift(spec), seed=2, limit=120)
    assert stream == build_stream(rows, parse_shift(spec), seed=2, limit=120)
    assert Counter(i.phase for i in stream) == {0: 20, 1: 60, 2: 40}
    assert not any(i.label == "d" for i in stream[:80])
    mixed = Counter(i.label for i in stream[20:80])
    assert set(mixed) <= {"a", "b"} and mixed["a"] > 3 * mixed["b"]
    assert {i.label for i in stream[80:]} == {"d"}
    assert len({i.text for i in stream}) == 120


def test_a_domain_shift_draws_the_other_clinc150_domain(datasets_dir):
    settings = Settings()
    banking = load_data(DataSpec(dataset="clinc150/banking"), settings).train
    travel = load_data(DataSpec(dataset="clinc150/travel"), settings).train
    phases = parse_shift("after=100,domain=travel")
    stream = build_stream(banking, phases, seed=0, limit=200, domains={"travel": travel})
    assert {i.label for i in stream[:100]} <= set(banking.label_set())
    assert {i.label for i in stream[100:]} <= set(travel.label_set())
    assert len({i.label for i in stream[100:]}) > 10  # a shuffle of the domain's 15 intents
    with pytest.raises(ValidationError, match="the rows of domain 'travel' are missing"):
        build_stream(banking, phases, seed=0)


def test_the_stream_refuses_what_it_cannot_build():
    rows = _rows()
    with pytest.raises(ValidationError, match=r"the data has no label\(s\) z \(its 4 labels: a, b"):
        build_stream(rows, parse_shift("after=5,labels=a|z"), seed=0)
    with pytest.raises(ValidationError, match="runs out of rows after 75 request"):
        build_stream(rows, parse_shift("after=90,labels=d"), seed=0)
    # A limit that stops before the shift asks for no rows it lacks.
    assert len(build_stream(rows, parse_shift("after=90,labels=d"), seed=0, limit=60)) == 60
    with pytest.raises(ValidationError, match="a mix before it cannot draw them"):
        build_stream(rows, parse_shift("after=5,mix=a:1,d:1;after=9,labels=d"), seed=0)


def test_feedback_marks_are_seeded_and_do_not_depend_on_the_limit():
    rows = _rows(per_label=250)
    stream = build_stream(rows, seed=5, feedback_share=0.2)
    marked = sum(i.feedback for i in stream)
    assert 150 < marked < 250  # about 200 of 1,000
    assert [i.feedback for i in build_stream(rows, seed=5, limit=100, feedback_share=0.2)] == [
        i.feedback for i in stream[:100]
    ]
    assert not any(i.feedback for i in build_stream(rows, seed=5))
    assert all(i.feedback for i in build_stream(rows, seed=5, feedback_share=1.0))


# -- a fake gateway: what the replay sends, recorded ------------------------------------------


class FakeGateway(ThreadedServer):
    """A stand-in for niche's gateway (chat completions, /v1/models, /v1/feedback) that
    records every request. ``answer(text)`` is the answer; a text in ``fail`` gets HTTP 502.
    A record becomes known to /v1/feedback ``known_after_s`` after its answer (the real
    gateway writes records a little later too)."""

    what = "the fake gateway"

    def __init__(
        self,
        task: str,
        labels: list[str],
        answer: Any,
        *,
        key: str | None = None,
        fail: frozenset[str] = frozenset(),
        known_after_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.task, self.labels, self.answer = task, labels, answer
        self.key, self.fail, self.known_after_s = key, fail, known_after_s
        self.chats: list[dict[str, Any]] = []
        self.feedback: list[dict[str, Any]] = []
        self.authorization: list[str | None] = []
        self._answered: dict[str, float] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/feedback", self._feedback)

    def _refused(self, request: web.Request) -> web.Response | None:
        self.authorization.append(request.headers.get("Authorization"))
        if self.key is not None and request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return None

    async def _models(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        data = [{"id": self.task, "object": "model", "owned_by": "niche", "niche": {}}]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.chats.append(body)
        text = body["messages"][-1]["content"]
        if text in self.fail:
            return web.json_response({"error": {"message": "upstream failed"}}, status=502)
        completion_id = f"chatcmpl-{len(self.chats):04d}"
        self._answered[completion_id] = time.monotonic()
        route = "general" if len(self.chats) % 3 else "specialist"
        payload = {
            "id": completion_id,
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": self.answer(text)}}
            ],
            "niche": {"route": route},
        }
        headers = {"x-request-id": completion_id, "x-niche-route": route}
        return web.json_response(payload, headers=headers)

    async def _feedback(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.feedback.append(body)
        answered = self._answered.get(body.get("request_id"))
        if answered is None or time.monotonic() - answered < self.known_after_s:
            return web.json_response({"error": {"message": "unknown request_id"}}, status=404)
        if body.get("label") not in self.labels:
            return web.json_response({"error": {"message": "label not in set"}}, status=400)
        return web.json_response({"attached": 1})


FOUR = ("card_arrival", "exchange_rate", "pin_blocked", "top_up_failed")


def _gold(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["text"]: row["label"] for row in csv.DictReader(handle)}


@pytest.mark.parametrize("client", ["http", "openai"])
def test_replay_counts_routes_errors_and_posts_feedback_to_a_fake_gateway(four_intents, client):
    gold = _gold(four_intents)
    failing = frozenset(list(gold)[:5])
    # The fake answers the gold label, except "card_arrival" for every exchange_rate text.
    answer = lambda text: "card_arrival" if gold[text] == "exchange_rate" else gold[text]  # noqa: E731
    with FakeGateway("intents", list(FOUR), answer, fail=failing, known_after_s=0.8) as fake:
        result = replay(
            DataSpec(data=four_intents),
            task="intents",
            url=fake.url + "/v1/",  # a trailing /v1 is the SDK's habit: taken as the root
            limit=80,
            feedback_share=0.25,
            seed=7,
            client=client,
            settings=Settings(),
        )
    assert (result.sent, len(fake.chats)) == (80, 80)
    assert all(chat["model"] == "intents" for chat in fake.chats)
    sent = [chat["messages"][-1]["content"] for chat in fake.chats]
    failed = sum(text in failing for text in sent)
    assert result.errors == ({"502": failed} if failed else {})
    assert result.answered == 80 - failed
    assert sum(result.routes.values()) == result.answered
    assert set(result.routes) <= {"general", "specialist"} and result.routes["specialist"] > 0
    wrong = sum(r.label == "exchange_rate" for r in result.requests if r.answered)
    assert result.agreed == result.answered - wrong
    assert result.agreement == pytest.approx(result.agreed / result.answered)
    # Feedback: the gold label of each marked, answered request, under its request id, once
    # its record was known (the first tries met 404s and were retried).
    marked = [r for r in result.requests if r.answered and r.feedback is not None]
    assert 5 <= len(marked) <= 40
    assert result.feedback_sent == len(marked) == result.feedback_attached
    assert result.feedback_refused == {}
    attached = {(f["request_id"], f["label"]) for f in fake.feedback}
    assert {(r.request_id, r.label) for r in marked} <= attached
    assert len(fake.feedback) > len(marked)  # the retried 404s
    payload = result.to_dict()
    assert payload["feedback"] == {"sent": len(marked), "attached": len(marked), "refused": {}}
    assert [p["phase"] for p in payload["phases"]] == [0]
    assert payload["url"] == fake.url and payload["client"] == client


def test_feedback_a_gateway_refuses_is_counted_by_status(four_intents):
    # The gateway's label set lacks pin_blocked: its feedback is refused with 400.
    gold = _gold(four_intents)
    labels = [label for label in FOUR if label != "pin_blocked"]
    with FakeGateway("intents", labels, lambda text: gold[text]) as fake:
        result = replay(
            DataSpec(data=four_intents), task="intents", url=fake.url, feedback_share=1.0, limit=40
        )
    refused = sum(r.label == "pin_blocked" for r in result.requests)
    assert refused > 0
    assert result.feedback_refused == {"400": refused}
    assert result.feedback_attached == 40 - refused


def test_replay_sends_the_api_key_and_a_refused_key_is_a_clear_error(four_intents, monkeypatch):
    with FakeGateway("intents", list(FOUR), lambda text: "card_arrival", key="k-123") as fake:
        result = replay(
            DataSpec(data=four_intents), task="intents", url=fake.url, api_key="k-123", limit=3
        )
        assert result.answered == 3
        monkeypatch.setenv("NICHE_REPLAY_API_KEY", "k-123")
        assert (
            replay(DataSpec(data=four_intents), task="intents", url=fake.url, limit=2).answered == 2
        )
        assert set(fake.authorization) == {"Bearer k-123"}
        with pytest.raises(ValidationError, match=r"refused the API key \(HTTP 401\)") as raised:
            replay(DataSpec(data=four_intents), task="intents", url=fake.url, api_key="wrong")
        assert raised.value.param == "api_key"
    assert len(fake.chats) == 5  # the refused replay sent nothing


def test_a_task_the_gateway_does_not_serve_is_refused_before_sending(four_intents):
    with FakeGateway("intents", list(FOUR), lambda text: "x") as fake:
        with pytest.raises(
            ValidationError, match=r"serves no task 'tickets' \(its tasks: intents\)"
        ):
            replay(DataSpec(data=four_intents), task="tickets", url=fake.url)
        assert fake.chats == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on exit: nothing listens there


def test_connection_refused_names_the_url_and_the_cli_exits_2(four_intents):
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ValidationError, match=f"nothing answers at {url}") as raised:
        replay(DataSpec(data=four_intents), task="intents", url=url)
    assert raised.value.param == "url"
    result = runner.invoke(
        app, ["replay", "--data", str(four_intents), "--task", "intents", "--url", url]
    )
    assert result.exit_code == 2
    assert f"error: nothing answers at {url}" in result.stderr
    assert "niche serve" in result.stderr and "Traceback" not in result.output


def test_the_cli_refuses_a_bad_shift_and_a_bad_url_with_exit_2(four_intents):
    args = ["replay", "--data", str(four_intents), "--task", "intents"]
    result = runner.invoke(
        app, [*args, "--url", "http://127.0.0.1:1", "--shift", "after=5,labls=a"]
    )
    assert result.exit_code == 2 and "unknown key 'labls'" in result.stderr
    result = runner.invoke(app, [*args, "--url", "127.0.0.1:8000"])
    assert result.exit_code == 2 and "--url must be the gateway's http(s) URL" in result.stderr


def test_the_cli_prints_json_and_a_table(four_intents):
    gold = _gold(four_intents)
    with FakeGateway("intents", list(FOUR), lambda text: gold[text]) as fake:
        base = ["replay", "--data", str(four_intents), "--task", "intents", "--url", fake.url]
        shift = ["--shift", "after=20,labels=top_up_failed", "--limit", "30", "--seed", "1"]
        result = runner.invoke(app, [*base, *shift, "--json"])
        assert result.exit_code == 0, result.output
        payload = orjson.loads(result.stdout)
        assert (payload["sent"], payload["answered"], payload["agreement"]) == (30, 30, 1.0)
        assert [(p["phase"], p["sent"]) for p in payload["phases"]] == [(0, 20), (1, 10)]
        assert payload["phases"][1]["shift"] == "after=20,labels=top_up_failed"
        texts = [chat["messages"][-1]["content"] for chat in fake.chats]
        assert {gold[t] for t in texts[20:]} == {"top_up_failed"}
        assert "top_up_failed" not in {gold[t] for t in texts[:20]}
        table = runner.invoke(app, [*base, *shift])
        assert table.exit_code == 0, table.output
        assert "after=20,labels=top_up_failed" in table.stdout and "30 sent" in table.stdout
        # the same seed sends the same texts in the same order
        assert [chat["messages"][-1]["content"] for chat in fake.chats[30:]] == texts


# -- pacing --------------------------------------------------------------------------------


class FakeClock:
    """A clock that only ``sleep`` moves: pacing measured exactly, with no waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def _stream(n: int) -> list[StreamItem]:
    return [StreamItem(f"text {i}", "card_arrival", 0) for i in range(n)]


def test_rate_paces_the_starts_exactly_on_an_injected_clock():
    clock = FakeClock()
    with FakeGateway("intents", list(FOUR), lambda text: "card_arrival") as fake:
        result = replay_stream(
            _stream(20),
            task="intents",
            url=fake.url,
            rate=10.0,
            concurrency=4,
            clock=clock,
            sleep=clock.sleep,
        )
        assert result.answered == 20
        # 20 starts at 10/s: the last one 1.9 s after the first
        assert result.seconds == pytest.approx(1.9)
        assert sum(clock.slept) == pytest.approx(1.9)
        unpaced = FakeClock()
        replay_stream(_stream(20), task="intents", url=fake.url, clock=unpaced, sleep=unpaced.sleep)
        assert unpaced.slept == []


def test_rate_holds_the_pace_on_the_real_clock_loosely():
    with FakeGateway("intents", list(FOUR), lambda text: "card_arrival") as fake:
        started = time.monotonic()
        result = replay_stream(_stream(16), task="intents", url=fake.url, rate=40.0)
        elapsed = time.monotonic() - started
    assert result.answered == 16
    # the pace is a floor (15 intervals of 25 ms), whatever the machine's load
    assert elapsed >= 15 / 40 and result.seconds >= 15 / 40
    assert result.seconds < 30


# -- the real gateway -------------------------------------------------------------------------


@pytest.mark.slow
def test_replay_through_a_real_gateway_with_a_fake_vendor_general_model(
    trained, niche_home, encoder_cache_dir, serving_encoder, datasets_dir
):
    from niche.gateway import Gateway
    from niche.registry import Registry
    from tests.gateway_support import register_portfolio, running

    sms = load_data(DataSpec(dataset="sms_spam")).train
    gold = {" ".join(t.split()): label for t, label in zip(sms.texts, sms.labels, strict=True)}

    def answer(prompt: str) -> str:  # the fake vendor knows every text's gold label
        return gold[" ".join(prompt.rpartition("Text: ")[2].split())]

    settings = Settings(
        home=str(niche_home), cache_dir=str(encoder_cache_dir), gateway_capture_flush_ms=50.0
    )
    register_portfolio(settings, trained)
    with FakeVendorAPI(answer=answer) as vendor:
        with Registry(settings=settings) as registry:
            # A strict threshold, so that some answers cascade to the fake vendor.
            registry.tasks.update(
                "sms_spam",
                cascade_threshold=0.97,
                general={"kind": "openai", "base_url": vendor.base_url, "model": "fake-vendor"},
            )
        with running(Gateway(settings, encoder=serving_encoder)) as url:
            assert gateway_models(url) == {"sms_spam": {"champion": 1}}
            assert wait_until_served(url, "sms_spam", 1, timeout_s=5) >= 0
            results = {
                client: replay(
                    DataSpec(dataset="sms_spam"),
                    task="sms_spam",
                    url=url,
                    settings=settings,
                    limit=60,
                    skip=1000,  # a replay that goes on from an earlier one
                    shift="after=1030,labels=spam",
                    seed=11,
                    client=client,
                )
                for client in ("http", "openai")
            }
    http, sdk = results["http"], results["openai"]
    assert (http.sent, http.answered, http.errors) == (60, 60, {})
    assert [p.sent for p in http.phases] == [30, 30]
    assert {r.label for r in http.requests if r.phase == 1} == {"spam"}
    assert set(http.routes) <= {"specialist", "general"}
    assert http.routes.get("specialist", 0) > 0 and http.routes.get("general", 0) > 0
    # what the general model answered is the gold label (the fake vendor's answers)
    assert all(r.agreed for r in http.requests if r.route == "general")
    # the same stream through the SDK: the same texts, about the same routes (the int8
    # encoder's activations are scaled per micro-batch, so a confidence right at the
    # threshold may fall either side of it when requests batch differently)
    assert [r.label for r in sdk.requests] == [r.label for r in http.requests]
    assert sum(sdk.routes.values()) == sum(http.routes.values())
    assert abs(sdk.routes.get("specialist", 0) - http.routes.get("specialist", 0)) <= 3
    assert all(r.request_id and r.request_id.startswith("chatcmpl-") for r in sdk.requests)
    # the gateway recorded each request with the route the replay counted
    with Registry(settings=settings) as registry:
        deadline = time.monotonic() + 30
        while len(records := registry.traffic.query()) < 120 and time.monotonic() < deadline:
            time.sleep(0.1)  # the stopping gateway flushes its last records
    assert Counter(r.route for r in records) == Counter(http.routes) + Counter(sdk.routes)


def test_a_domain_shift_needs_a_clinc150_dataset(four_intents):
    with pytest.raises(ValidationError, match="domain= shifts to another CLINC150 domain"):
        replay(
            DataSpec(data=four_intents),
            task="intents",
            url="http://127.0.0.1:1",
            shift="after=5,domain=travel",
        )


def test_the_demo_runs_in_its_own_home_whatever_the_callers_settings(tmp_path, monkeypatch):
    from niche.workflows.demo import _demo_environ, demo_spec

    monkeypatch.setenv("NICHE_DATABASE_URL", "postgresql+psycopg://team@db/niche")
    monkeypatch.setenv("NICHE_ARTIFACTS_URL", "s3://team-bucket/niche")
    monkeypatch.setenv("NICHE_GENERAL_BASE_URL", "https://api.vendor.example/v1")
    caller = Settings(cache_dir=str(tmp_path / "cache"))
    environ = _demo_environ(caller, tmp_path / "demo")
    demo = Settings(environ=environ)
    # the caller's registry, artifacts and general model are never the demo's
    assert demo.get("NICHE_DATABASE_URL") == f"sqlite:///{tmp_path / 'demo' / 'niche.db'}"
    assert "team" not in str(demo.get("NICHE_ARTIFACTS_URL"))
    assert demo.get("NICHE_GENERAL_BASE_URL") is None  # the built-in zero-shot model answers
    # the caller's encoder cache and datasets are reused
    assert demo.cache_dir == (tmp_path / "cache").resolve()
    assert demo.datasets_dir == caller.datasets_dir.resolve()
    spec = demo_spec(["balance", "book_flight"], window=200)
    assert (spec.loop.min_rows, spec.loop.cooldown_s) == (200, 0.0)
    assert spec.serving.shadow_fraction and spec.serving.shadow_fraction > 0
