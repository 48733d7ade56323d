"""The gateway's parts on their own: answer mapping, prompts, breaker, batcher, errors."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from niche.errors import (
    BudgetExceededError,
    ConfigurationError,
    ConflictError,
    GateRefusedError,
    OverloadedError,
    RequestError,
    UpstreamError,
)
from niche.evaluation import Prices, cost_usd
from niche.gateway.batching import MicroBatcher, split_usage
from niche.gateway.general import prices, token_cost
from niche.gateway.protocol import error_response, last_user_text, parse_chat_request
from niche.gateway.upstream import CircuitBreaker
from niche.registry.tasks import GeneralModelSpec
from niche.specialists.base import Predictions, Usage
from niche.specialists.prompting import map_answer, render_prompt

LABELS = ["card_arrival", "lost_or_stolen_card", "card", "ham", "spam"]


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("card_arrival", "card_arrival"),
        ("Card arrival.", "card_arrival"),
        ('"SPAM"', "spam"),
        # A label must be the whole answer (issue 9): inside a longer text it does not count.
        ("The answer is: lost or stolen card", None),
        ("card", "card"),
        ("ham or spam", None),  # two labels: ambiguous
        ("I do not know", None),
        ("", None),
        (None, None),
        ("...", None),
    ],
)
def test_map_answer(answer, label):
    assert map_answer(answer, LABELS) == label


def test_render_prompt_fills_text_and_labels_and_refuses_unknown_fields():
    assert render_prompt("{labels} | {text}", "hi", ["a", "b"]) == "a, b | hi"
    assert "Text: hi" in render_prompt(None, "hi", ["a", "b"])
    with pytest.raises(ConfigurationError, match="unknown field"):
        render_prompt("{text} {user}", "hi", ["a"])
    with pytest.raises(ConfigurationError, match="malformed"):
        render_prompt("{text", "hi", ["a"])


def test_circuit_breaker_opens_lets_one_trial_through_and_closes():
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

        def advance(self, seconds: float) -> None:
            self.now += seconds

    clock = Clock()
    breaker = CircuitBreaker(2, 30.0, clock=clock)
    breaker.before("up")
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(UpstreamError, match="circuit open"):
        breaker.before("up")
    clock.advance(31)
    breaker.before("up")  # the trial
    with pytest.raises(UpstreamError):
        breaker.before("up")  # only one at a time
    breaker.failure()
    assert breaker.state == "open"
    clock.advance(31)
    breaker.before("up")
    breaker.success()
    assert breaker.state == "closed"
    breaker.before("up")


def _labels_by_length(texts):
    probabilities = np.array([[0.2, 0.8] if len(t) > 3 else [0.9, 0.1] for t in texts])
    return Predictions.from_probabilities(probabilities, ["short", "long"])


def test_micro_batcher_batches_concurrent_requests_and_keeps_order():
    calls: list[int] = []

    def predict(texts):
        calls.append(len(texts))
        return _labels_by_length(texts)

    async def main():
        batcher = MicroBatcher(predict, max_batch=8, max_wait_s=0.05)
        first = await batcher.submit("a")  # alone: answered at once, no wait
        answers = await asyncio.gather(*(batcher.submit("x" * i) for i in range(1, 21)))
        await batcher.aclose()
        return first, answers

    first, answers = asyncio.run(main())
    assert (first.label, first.batch_size) == ("short", 1)
    # A predictor that records no usage: the batch's CPU seconds stand in.
    assert first.usage.compute_s > 0 and first.usage.input_tokens is None
    assert [a.label for a in answers] == ["short"] * 3 + ["long"] * 17
    assert [a.confidence for a in answers[:2]] == [0.9, 0.9]
    assert calls[0] == 1 and max(calls) == 8 and sum(calls) == 21


def test_micro_batcher_answers_carry_their_share_of_the_predictors_usage():
    def predict(texts):
        # What a remote model would record: seconds and tokens for the whole batch.
        return Predictions.from_probabilities(
            _labels_by_length(texts).probabilities,
            ["short", "long"],
            usage=Usage(compute_s=5.0, input_tokens=10),
        )

    # The seconds are the process CPU seconds of the predict call, as evaluation measures
    # them (not the predictor's own wall-clock figure): 0.8 on this scripted CPU clock.
    cpu = iter([1.0, 1.8])

    async def main():
        batcher = MicroBatcher(predict, max_batch=8, max_wait_s=0.05, cpu_clock=lambda: next(cpu))
        answers = await asyncio.gather(*(batcher.submit(t) for t in ["a", "bb", "ccc", "dddd"]))
        await batcher.aclose()
        return answers

    answers = asyncio.run(main())
    assert [a.batch_size for a in answers] == [4] * 4
    # Seconds split evenly; tokens in whole numbers that add up to the batch's.
    assert [a.usage for a in answers] == [
        Usage(compute_s=0.2, input_tokens=3),
        Usage(compute_s=0.2, input_tokens=3),
        Usage(compute_s=0.2, input_tokens=2),
        Usage(compute_s=0.2, input_tokens=2),
    ]
    assert [a.compute_s for a in answers] == [0.2] * 4
    assert split_usage(Usage(compute_s=0.3), 1) == [Usage(compute_s=0.3)]


def test_general_model_tokens_are_priced_by_the_one_cost_function():
    spec = GeneralModelSpec(
        kind="openai",
        base_url="http://vendor.test/v1",
        model="m",
        price_input_per_1m_tokens_usd=1.0,
        price_output_per_1m_tokens_usd=2.0,
    )
    at = prices(spec)
    assert at == Prices(input_per_1m_tokens_usd=1.0, output_per_1m_tokens_usd=2.0)
    usage = Usage(input_tokens=12, output_tokens=3)
    assert token_cost(at, 12, 3) == cost_usd(usage, at) == (12 * 1.0 + 3 * 2.0) / 1e6
    assert token_cost(at, None, None) == 0.0
    assert token_cost(Prices(), 12, 3) == cost_usd(usage, Prices()) == 0.0


def test_the_zero_shot_fallback_is_the_zero_shot_kind_fitted_on_the_tasks_labels(registry, encoder):
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from niche.gateway.config import GatewayConfig
    from niche.gateway.portfolio import Portfolio, TaskState
    from niche.registry.tasks import TaskSpec
    from niche.settings import Settings
    from niche.specialists import FitContext, get_kind

    settings = Settings()
    descriptions = {"spam": "an unsolicited advertisement or scam"}
    spec = TaskSpec(name="sms", labels=["ham", "spam"], label_descriptions=descriptions)
    lonely = TaskSpec(name="one", labels=["ham"])
    texts = ["WINNER!! claim your free prize now", "see you at lunch"]
    with ThreadPoolExecutor(1) as executor:
        portfolio = Portfolio(
            registry,
            settings,
            GatewayConfig.from_settings(settings),
            executor=executor,
            loader_executor=executor,
            encoder=encoder,
        )

        async def main():
            state = TaskState(spec=spec, created_at=datetime(2026, 3, 1, tzinfo=UTC))
            batcher = portfolio.zero_shot(state)
            assert portfolio.zero_shot(state) is batcher  # built once per task
            answers = [await batcher.submit(text) for text in texts]
            await portfolio.aclose()
            await batcher.aclose()
            with pytest.raises(ConfigurationError, match="task one: the offline zero-shot"):
                portfolio.zero_shot(TaskState(spec=lonely, created_at=state.created_at))
            return answers

        answers = asyncio.run(main())
    expected = get_kind("zero-shot").fit(
        [], ["ham", "spam"], FitContext(encoder=encoder, options={"descriptions": descriptions})
    )
    predicted = expected.predict(texts)
    assert [a.label for a in answers] == predicted.labels
    assert [a.confidence for a in answers] == pytest.approx(list(predicted.confidences))


def test_micro_batcher_gives_the_models_error_to_every_waiting_request():
    def predict(texts):
        raise RuntimeError("model broke")

    async def main():
        batcher = MicroBatcher(predict, max_batch=4, max_wait_s=0.01)
        results = await asyncio.gather(
            *(batcher.submit(str(i)) for i in range(3)), return_exceptions=True
        )
        await batcher.aclose()
        return results

    assert [str(r) for r in asyncio.run(main())] == ["model broke"] * 3


def test_chat_requests_are_checked_as_far_as_routing_needs():
    body = parse_chat_request(
        b'{"model": "t", "messages": [{"role": "user", "content": [{"type": "text", '
        b'"text": "hello"}, {"type": "image_url"}]}], "temperature": 0.2}'
    )
    assert last_user_text(body["messages"]) == "hello"
    for raw, param in [
        (b'{"model": "t", "messages": [{"role": {"a": 1}}]}', "messages[0].role"),
        (b'{"model": "t", "messages": [{"role": "user", "content": 3}]}', "messages[0].content"),
        (b'{"model": "", "messages": []}', "model"),
    ]:
        with pytest.raises(RequestError) as error:
            parse_chat_request(raw)
        assert error.value.param == param


@pytest.mark.parametrize(
    ("error", "status", "kind", "code", "retry_after"),
    [
        (RequestError("bad", param="model"), 400, "invalid_request_error", None, None),
        (
            OverloadedError("busy", retry_after_s=1),
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            b"1",
        ),
        (
            BudgetExceededError("spent", key_id=1),
            429,
            "insufficient_quota",
            "insufficient_quota",
            None,
        ),
        (UpstreamError("down"), 502, "api_error", "upstream_error", None),
        (
            GateRefusedError("task t v2 has no passed gate for champion", version=2),
            409,
            "invalid_request_error",
            "gate_required",
            None,
        ),
        (
            ConflictError("alias moved meanwhile"),
            409,
            "invalid_request_error",
            "alias_conflict",
            None,
        ),
    ],
)
def test_error_responses_are_openai_shaped(error, status, kind, code, retry_after):
    got_status, body, headers = error_response(error)
    payload = orjson.loads(body)["error"]
    assert got_status == status
    assert (payload["type"], payload["code"]) == (kind, code)
    assert dict(headers).get(b"retry-after") == retry_after


def _traffic(i: int, **fields):
    from niche.registry.store import TrafficRecord

    return TrafficRecord(
        model="t", route="specialist", input=f"text {i}", latency_ms=1.0, status=200, **fields
    )


def test_capture_writer_flushes_batches_and_spend_and_everything_at_close(registry):
    from niche.gateway.capture import CaptureWriter

    key, _ = registry.keys.create(scope="inference", budget_usd=1.0)

    async def main():
        writer = CaptureWriter(registry, flush_s=60.0)
        writer.start()
        writer.submit(_traffic(0), spend=(key.id, 0.25))
        writer.submit(lambda: _traffic(1, task="t"), spend=(key.id, 0.25))  # built at flush
        assert registry.traffic.count() == 0  # nothing written on the request path
        assert writer.pending_spend(key.id) == 0.5
        assert await writer.flush() == 2
        for i in range(2, 5):
            writer.submit(_traffic(i))
        await writer.aclose()  # a long flush interval: the close writes the rest
        return writer

    writer = asyncio.run(main())
    assert [r.input for r in registry.traffic.query()] == [f"text {i}" for i in range(5)]
    assert registry.keys.all()[0].spent_usd == 0.5
    assert (writer.written, writer.pending, writer.pending_spend(key.id)) == (5, 0, 0.0)


def test_capture_writer_keeps_records_when_the_database_fails_and_drops_unredactable_ones(
    registry,
):
    from niche.gateway.capture import CaptureWriter

    def redact(record):
        if record.input == "text 1":
            raise ValueError("cannot clean this one")
        return record

    class FlakyTraffic:
        """The real registry's traffic store, whose first write fails (a database outage)."""

        failures = 1

        def record(self, records):
            if self.failures:
                self.failures -= 1
                raise OSError("database unreachable")
            return registry.traffic.record(records)

    flaky = SimpleNamespace(traffic=FlakyTraffic(), keys=registry.keys)

    async def main():
        writer = CaptureWriter(flaky, flush_s=60.0, redact=redact)
        for i in range(3):
            writer.submit(_traffic(i))
        # Built and redacted (one record refused by the hook), then the write failed.
        assert await writer.flush() == 0 and writer.pending == 2 and writer.failures == 1
        assert await writer.flush() == 2  # retried as prepared: nothing lost, none redone
        return writer

    writer = asyncio.run(main())
    assert [r.input for r in registry.traffic.query()] == ["text 0", "text 2"]
    assert writer.dropped == 1


def test_capture_writer_closing_mid_flush_writes_each_record_and_spend_once(registry):
    from niche.gateway.capture import CaptureWriter

    key, _ = registry.keys.create(scope="inference", budget_usd=1.0)
    writing, go = threading.Event(), threading.Event()

    class SlowKeys:
        """The real registry's key store, whose first spend write waits for the test."""

        def add_spend(self, key_id, usd):
            if not writing.is_set():
                writing.set()
                if not go.wait(30):
                    raise RuntimeError("the test never let the write finish")
            return registry.keys.add_spend(key_id, usd)

    slow = SimpleNamespace(traffic=registry.traffic, keys=SlowKeys())

    async def main():
        writer = CaptureWriter(slow, flush_s=0.01)
        writer.start()
        writer.submit(_traffic(0), spend=(key.id, 0.25))
        await asyncio.to_thread(writing.wait, 30)  # the background flush is writing
        closing = asyncio.ensure_future(writer.aclose())
        await asyncio.sleep(0)  # the shutdown has begun, the write is still going on
        go.set()
        await closing
        return writer

    writer = asyncio.run(main())
    assert registry.keys.all()[0].spent_usd == 0.25
    assert [r.input for r in registry.traffic.query()] == ["text 0"]
    assert (writer.written, writer.pending, writer.pending_spend(key.id)) == (1, 0, 0.0)
