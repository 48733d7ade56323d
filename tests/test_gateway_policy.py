"""The cascade policy on its own, no HTTP: a fake specialist handle, a fake general model,
a scripted random source, and the real circuit breaker on an injected clock.

(The handle and the general model are test doubles of the policy's two collaborators; the
real ones are exercised end to end in ``test_gateway.py``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from niche.errors import CircuitOpenError, UpstreamError, UpstreamTimeoutError
from niche.evaluation import Prices
from niche.gateway.batching import BatchAnswer
from niche.gateway.general import GeneralReply
from niche.gateway.handles import SpecialistHandle
from niche.gateway.metrics import GatewayMetrics
from niche.gateway.policy import CascadePolicy
from niche.gateway.portfolio import TaskState
from niche.gateway.upstream import CircuitBreaker
from niche.registry.tasks import ServingSpec, TaskSpec
from niche.specialists.base import Usage

pytestmark = pytest.mark.anyio

CPU_HOUR_USD = 0.036  # 1e-5 USD per CPU-second


class FakeHandle:
    """A specialist handle answering ``label`` with ``confidence`` (or raising ``error``)."""

    def __init__(
        self,
        alias: str = "champion",
        version: int = 1,
        *,
        label: str = "spam",
        confidence: float = 0.9,
        compute_s: float = 0.5,
        batch_size: int = 4,
        error: Exception | None = None,
    ) -> None:
        self.alias, self.version, self.digest = alias, version, f"sha-{version}"
        self.label_set = ["ham", "spam"]
        self.answer = BatchAnswer(label, confidence, Usage(compute_s=compute_s), batch_size)
        self.error = error
        self.asked: list[list[str]] = []

    async def predict(self, inputs: Sequence[str]) -> list[BatchAnswer]:
        self.asked.append(list(inputs))
        if self.error is not None:
            raise self.error
        return [self.answer for _ in inputs]

    async def aclose(self) -> None:
        pass


class FakeGeneral:
    """The general model: answers ``reply``, raises ``error``, or waits for ``gate`` first.

    With ``breaker``, it behaves as an upstream behind the real circuit breaker: refused
    while open, each failure counted.
    """

    def __init__(
        self,
        reply: GeneralReply | None = None,
        *,
        error: Exception | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.reply = reply or GeneralReply("Ham.", "ham", 12, 3, 0.002)
        self.error = error
        self.breaker = breaker
        self.gate: asyncio.Event | None = None
        self.asked: list[tuple[str, str]] = []
        self.uses: list[str] = []

    async def ask(self, state: TaskState, text: str, *, use: str = "cascade") -> GeneralReply:
        self.uses.append(use)
        if self.breaker is not None:
            self.breaker.before("vendor-model")
        self.asked.append((state.spec.name, text))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            if self.breaker is not None:
                self.breaker.failure()
            raise self.error
        if self.breaker is not None:
            self.breaker.success()
        return self.reply


class Scripted:
    """A random source that returns the numbers it was given, in order."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _state(*handles: SpecialistHandle, threshold: float = 0.5, **serving: object) -> TaskState:
    spec = TaskSpec(
        name="sms",
        labels=["ham", "spam"],
        cascade_threshold=threshold,
        serving=ServingSpec(**serving),
    )
    return TaskState(
        spec=spec,
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
        deployed={h.alias: h for h in handles},
    )


def _policy(general: FakeGeneral, metrics: GatewayMetrics, rng: Scripted | None = None, **kw):
    options = {
        "canary_fraction": 0.0,
        "shadow_fraction": 0.0,
        "prices": Prices(cpu_hour_usd=CPU_HOUR_USD),
    }
    return CascadePolicy(general, metrics, rng=rng or Scripted(), **{**options, **kw})


def _sample(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_a_confident_specialist_answers_alone_and_its_compute_is_its_cost():
    metrics, general, champion = GatewayMetrics(), FakeGeneral(), FakeHandle(confidence=0.5)
    answer = await _policy(general, metrics).answer(_state(champion), "WIN cash now")
    assert (answer.route, answer.label, answer.confidence) == ("specialist", "spam", 0.5)
    assert (answer.alias, answer.model_version, answer.specialist_label) == ("champion", 1, "spam")
    assert answer.fallback_reason is None and answer.shadow is None
    assert answer.cost_usd == pytest.approx(0.5 * CPU_HOUR_USD / 3600, rel=1e-12)
    assert champion.asked == [["WIN cash now"]] and general.asked == []
    assert _sample(metrics, "niche_batch_size_sum", task="sms") == 4.0
    assert _sample(metrics, "niche_cascaded_total", task="sms") is None


async def test_below_the_threshold_the_general_model_answers_and_costs_are_added():
    metrics, general = GatewayMetrics(), FakeGeneral()
    state = _state(FakeHandle(confidence=0.49))
    answer = await _policy(general, metrics).answer(state, "lunch?")
    assert (answer.route, answer.label, answer.specialist_label) == ("general", "ham", "spam")
    assert (answer.general_answer, answer.general_label) == ("Ham.", "ham")
    assert (answer.input_tokens, answer.output_tokens) == (12, 3)
    assert answer.cost_usd == pytest.approx(0.5 * CPU_HOUR_USD / 3600 + 0.002, rel=1e-12)
    assert general.asked == [("sms", "lunch?")]
    assert _sample(metrics, "niche_cascaded_total", task="sms") == 1.0
    assert _sample(metrics, "niche_tokens_total", task="sms", direction="input") == 12.0
    assert _sample(metrics, "niche_tokens_total", task="sms", direction="output") == 3.0


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (UpstreamError("general model vendor-model answered HTTP 500"), "upstream-error"),
        (UpstreamTimeoutError("general model vendor-model did not answer"), "timeout"),
        (CircuitOpenError("general model vendor-model: circuit open"), "circuit-open"),
        (RuntimeError("a bug in a prompt template"), "upstream-error"),
    ],
)
async def test_when_the_general_model_fails_the_specialists_answer_stands(error, reason):
    metrics = GatewayMetrics()
    answer = await _policy(FakeGeneral(error=error), metrics).answer(
        _state(FakeHandle(confidence=0.2)), "x"
    )
    assert (answer.route, answer.label, answer.fallback_reason) == (
        "specialist-fallback",
        "spam",
        reason,
    )
    assert answer.general_label is None and answer.input_tokens is None


async def test_an_answer_naming_no_label_falls_back_and_is_counted_invalid():
    metrics = GatewayMetrics()
    general = FakeGeneral(GeneralReply("no idea", None, 12, 3, 0.002))
    answer = await _policy(general, metrics).answer(_state(FakeHandle(confidence=0.2)), "x")
    assert (answer.route, answer.label, answer.fallback_reason) == (
        "specialist-fallback",
        "spam",
        "invalid-answer",
    )
    assert answer.general_answer == "no idea"
    assert _sample(metrics, "niche_general_invalid_total", task="sms") == 1.0


async def test_a_failing_specialist_falls_back_to_the_general_model_or_raises_without_one():
    broken = FakeHandle(error=RuntimeError("onnxruntime session failed"))
    answer = await _policy(FakeGeneral(), GatewayMetrics()).answer(_state(broken), "x")
    assert (answer.route, answer.label, answer.fallback_reason) == (
        "general-fallback",
        "ham",
        "specialist-error",
    )
    assert answer.confidence is None and answer.specialist_label is None
    assert answer.cost_usd == 0.002

    down = FakeGeneral(error=UpstreamTimeoutError("general model vendor-model did not answer"))
    with pytest.raises(UpstreamTimeoutError):
        await _policy(down, GatewayMetrics()).answer(_state(broken), "x")
    invalid = FakeGeneral(GeneralReply("no idea", None))
    with pytest.raises(UpstreamError, match="names no label of the task"):
        await _policy(invalid, GatewayMetrics()).answer(_state(broken), "x")


async def test_without_a_champion_the_general_model_answers():
    answer = await _policy(FakeGeneral(), GatewayMetrics()).answer(_state(), "x")
    assert (answer.route, answer.label, answer.fallback_reason) == ("general", "ham", "no-champion")
    assert answer.alias is None and answer.model_version is None
    with pytest.raises(CircuitOpenError):
        await _policy(FakeGeneral(error=CircuitOpenError("open")), GatewayMetrics()).answer(
            _state(), "x"
        )


async def test_the_canary_share_goes_to_the_challenger():
    champion, challenger = FakeHandle("champion", 1), FakeHandle("challenger", 2)
    # 0.29 < 0.3: the challenger; 0.3 is not below 0.3: the champion.
    policy = _policy(FakeGeneral(), GatewayMetrics(), Scripted(0.29, 0.3), canary_fraction=0.3)
    state = _state(champion, challenger)
    assert policy.pick(state) is challenger
    assert policy.pick(state) is champion
    # The task's own fraction wins over the gateway's; 0 never draws a number.
    policy = _policy(FakeGeneral(), GatewayMetrics(), Scripted(0.9), canary_fraction=0.0)
    assert policy.pick(_state(champion, challenger, canary_fraction=0.95)) is challenger
    assert policy.pick(_state(champion, challenger, canary_fraction=0.0)) is champion
    answer = await policy.answer(_state(champion, challenger), "x")  # nothing left to draw
    assert (answer.alias, answer.model_version) == ("champion", 1)
    assert policy.pick(_state(challenger)) is None  # a challenger alone is not served


async def test_a_shadow_call_runs_after_the_answer_and_records_agreement():
    metrics, general = GatewayMetrics(), FakeGeneral(GeneralReply("spam", "spam", 12, 3, 0.002))
    general.gate = asyncio.Event()
    policy = _policy(general, metrics, Scripted(0.39, 0.4), shadow_fraction=0.4)
    state = _state(FakeHandle(confidence=0.9))
    answer = await policy.answer(state, "x")
    # Answered while the general model has not answered the shadow call.
    assert answer.route == "specialist" and answer.shadow is not None
    assert not answer.shadow.done() and policy.pending == 1
    assert answer.general_label is None
    general.gate.set()
    await policy.drain(timeout_s=5)
    assert policy.pending == 0
    assert (answer.general_answer, answer.general_label, answer.input_tokens) == (
        "spam",
        "spam",
        12,
    )
    assert answer.cost_usd == pytest.approx(0.5 * CPU_HOUR_USD / 3600, rel=1e-12)  # not billed
    assert _sample(metrics, "niche_shadow_total", task="sms", outcome="agree") == 1.0
    assert _sample(metrics, "niche_tokens_total", task="sms", direction="input") is None
    # 0.4 is not below 0.4: no shadow.
    assert (await policy.answer(state, "y")).shadow is None
    assert general.asked == [("sms", "x")]


@pytest.mark.parametrize(
    ("reply", "error", "outcome"),
    [
        (GeneralReply("ham", "ham"), None, "disagree"),
        (GeneralReply("hmm", None), None, "invalid"),
        (None, UpstreamError("down"), "error"),
    ],
)
async def test_shadow_outcomes(reply, error, outcome):
    metrics = GatewayMetrics()
    policy = _policy(FakeGeneral(reply, error=error), metrics, Scripted(0.0), shadow_fraction=1.0)
    answer = await policy.answer(_state(FakeHandle(confidence=0.9)), "x")
    await policy.drain(timeout_s=5)
    assert answer.route == "specialist" and answer.label == "spam"
    assert _sample(metrics, "niche_shadow_total", task="sms", outcome=outcome) == 1.0


async def test_an_open_circuit_falls_back_at_once_until_its_trial_on_the_injected_clock():
    clock = Clock()
    general = FakeGeneral(
        error=UpstreamError("HTTP 500"), breaker=CircuitBreaker(2, 30.0, clock=clock)
    )
    policy = _policy(general, GatewayMetrics())
    state = _state(FakeHandle(confidence=0.2))
    reasons = [(await policy.answer(state, "x")).fallback_reason for _ in range(4)]
    assert reasons == ["upstream-error"] * 2 + ["circuit-open"] * 2
    assert len(general.asked) == 2  # not asked while open
    clock.now += 29.0
    assert (await policy.answer(state, "x")).fallback_reason == "circuit-open"
    clock.now += 1.0  # 30 s after it opened: one trial, which the recovered vendor answers
    general.error = None
    answer = await policy.answer(state, "x")
    assert (answer.route, answer.label) == ("general", "ham")
    assert general.breaker is not None and general.breaker.state == "closed"


# -- the random teacher sample: drawn before the confidence check, for every request ---------


async def test_an_unsure_answer_drawn_at_random_is_sampled_with_the_general_label():
    # 0.04 < 0.05: drawn. The specialist is unsure anyway: the cascade answers, once.
    general = FakeGeneral()
    policy = _policy(general, GatewayMetrics(), Scripted(0.04), shadow_fraction=0.05)
    answer = await policy.answer(_state(FakeHandle(confidence=0.2)), "lunch?")
    assert (answer.route, answer.label, answer.general_label) == ("general", "ham", "ham")
    assert answer.sampled and answer.shadow is None and answer.text == "lunch?"
    assert general.uses == ["cascade"]


async def test_a_cascade_not_drawn_is_not_sampled_and_draws_once_per_request():
    general = FakeGeneral()
    policy = _policy(general, GatewayMetrics(), Scripted(0.05, 0.9), shadow_fraction=0.05)
    unsure = await policy.answer(_state(FakeHandle(confidence=0.2)), "x")
    assert (unsure.route, unsure.general_label, unsure.sampled) == ("general", "ham", False)
    sure = await policy.answer(_state(FakeHandle(confidence=0.9)), "y")
    assert (sure.route, sure.sampled, sure.shadow) == ("specialist", False, None)
    assert general.uses == ["cascade"]


async def test_a_confident_answer_drawn_at_random_is_sampled_and_shadowed():
    general = FakeGeneral(GeneralReply("spam", "spam", 12, 3, 0.002))
    policy = _policy(general, GatewayMetrics(), Scripted(0.01), shadow_fraction=0.05)
    answer = await policy.answer(_state(FakeHandle(confidence=0.9)), "x")
    await policy.drain(timeout_s=5)
    assert (answer.route, answer.sampled, answer.general_label) == ("specialist", True, "spam")
    assert answer.shadow is not None and general.uses == ["shadow"]


async def test_requests_without_a_champion_or_with_a_failed_specialist_are_drawn_too():
    # The draw comes before the specialist is asked: a cascade of any cause can be sampled.
    policy = _policy(FakeGeneral(), GatewayMetrics(), Scripted(0.0, 0.5), shadow_fraction=0.3)
    drawn = await policy.answer(_state(), "x")
    broken = FakeHandle(error=RuntimeError("onnxruntime session failed"))
    not_drawn = await policy.answer(_state(broken), "y")
    assert (drawn.fallback_reason, drawn.sampled) == ("no-champion", True)
    assert (not_drawn.fallback_reason, not_drawn.sampled) == ("specialist-error", False)


async def test_the_tasks_own_share_wins_and_the_canary_is_drawn_first():
    champion, challenger = FakeHandle("champion", 1), FakeHandle("challenger", 2)
    # First number: the canary (0.1 < 0.5: the challenger); second: the sample (0.7 < 0.8).
    policy = _policy(FakeGeneral(), GatewayMetrics(), Scripted(0.1, 0.7), shadow_fraction=0.0)
    state = _state(challenger, champion, canary_fraction=0.5, shadow_fraction=0.8)
    answer = await policy.answer(state, "x")
    await policy.drain(timeout_s=5)
    assert (answer.alias, answer.sampled) == ("challenger", True)
    # A task that turns sampling off draws nothing (the scripted source is empty).
    answer = await _policy(FakeGeneral(), GatewayMetrics(), Scripted(), shadow_fraction=1.0).answer(
        _state(champion, shadow_fraction=0.0), "x"
    )
    assert answer.sampled is False


async def test_the_sampled_share_is_the_configured_fraction_of_all_requests():
    import random

    # Half the requests unsure, half sure: about 5 % of each is sampled, not 5 % of the sure.
    policy = _policy(FakeGeneral(), GatewayMetrics(), random.Random(11), shadow_fraction=0.05)
    unsure, sure = _state(FakeHandle(confidence=0.2)), _state(FakeHandle(confidence=0.9))
    answers = [await policy.answer(unsure if i % 2 else sure, "x") for i in range(4000)]
    await policy.drain(timeout_s=5)
    by_route = {
        route: [a.sampled for a in answers if a.route == route]
        for route in ("general", "specialist")
    }
    for route, sampled in by_route.items():
        assert len(sampled) == 2000, route
        assert 0.035 < sum(sampled) / 2000 < 0.065, route
