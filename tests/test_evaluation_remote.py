"""The task's real general model in evaluation and gates: a remote predictor for any
OpenAI-compatible endpoint, its answers cached, its cost from tokens, its failures named.

Only the vendor is faked: a real aiohttp server on a free port (tests.fake_vendor) that labels
some texts rightly, some wrongly, some not at all, and reports 12 input and 3 output tokens a
call. Everything else is real: the encoder on a small slice of BANKING77, the registry on
SQLite and PostgreSQL, the answer cache on disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from typer.testing import CliRunner

from niche.cli import app
from niche.data import Rows, curate
from niche.errors import ConfigurationError, UpstreamError
from niche.evaluation import Prices, compare, cost_per_1m, evaluate
from niche.registry import Registry
from niche.registry.gates import decide
from niche.registry.tasks import GeneralModelSpec, TaskSpec
from niche.settings import Settings
from niche.specialists import FitContext, LoadContext, Predictions, Usage, get_kind
from niche.specialists.remote import UNMAPPED, RemotePredictor
from niche.testing import check_predictor
from niche.workflows import (
    DataSpec,
    curate_data,
    evaluate_model,
    evaluate_registered,
    general_model_of,
    promote,
    train_and_register,
    zero_shot_baseline,
)
from tests.fake_vendor import FakeVendorAPI, free_port

LABELS = ("card_arrival", "exchange_rate", "pin_blocked", "top_up_failed")
KEY_ENV = "FAKE_GENERAL_MODEL_KEY"
SECRET = "sk-fake-general-secret-123"
# What the fake reports per call (tests.fake_vendor), and the task's prices.
IN_TOKENS, OUT_TOKENS = 12, 3
PRICE_IN, PRICE_OUT = 1.0, 2.0

runner = CliRunner()


def text_of(prompt: str) -> str:
    """The text the default prompt template asks about (it ends with ``Text: {text}``)."""
    return prompt.rsplit("Text: ", 1)[-1]


def keyword_answer(prompt: str) -> str:
    """A deterministic general model that answers a label by keyword, in free text."""
    text = text_of(prompt).lower()
    for word, label in (
        ("pin", "pin_blocked"),
        ("rate", "exchange_rate"),
        ("top", "top_up_failed"),
    ):
        if word in text:
            return f"{label.replace('_', ' ').title()}."
    return "card_arrival"


class FlakyFakeGeneralModel(FakeVendorAPI):
    """The fake vendor, answering HTTP 503 to its first ``fail_first`` chat completions."""

    def __init__(self, answer: Callable[[str], str], fail_first: int) -> None:
        super().__init__(answer)
        self.fail_first = fail_first

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if self.fail_first > 0:
            self.fail_first -= 1
            self._received(await request.json())
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        return await super()._chat(request)


def remote(base_url: str, **options: Any) -> RemotePredictor:
    predictor = get_kind("remote").fit(
        [], list(LABELS), FitContext(Settings(), options={"base_url": base_url, **options})
    )
    assert isinstance(predictor, RemotePredictor)
    return predictor


# -- the predictor ---------------------------------------------------------------------------


def test_the_remote_kind_passes_the_conformance_kit_against_a_fake_general_model_endpoint():
    with FakeVendorAPI(answer=keyword_answer) as vendor:
        options = {"base_url": vendor.base_url, "model": "fake-gpt", "max_tokens": 8}
        context = LoadContext(Settings())
        rules = check_predictor(
            lambda: get_kind("remote").fit([], list(LABELS), FitContext(options=options)),
            context=context,
        )
        assert len(rules) == 13
        assert vendor.requests, "the kit's predictions came from the fake endpoint"
        # Every distinct sample text was asked once: the rest came from the answer cache,
        # the rebuild in a fresh process included.
        asked = [text_of(body["messages"][0]["content"]) for body in vendor.requests]
        assert len(asked) == len(set(asked))


def test_answers_map_to_labels_with_their_tokens_and_bounds_fake_general_model(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    answers = {"my card is late": "Card arrival", "pin?": "PIN blocked", "hm": "I am not sure"}
    with FakeVendorAPI(answer=lambda prompt: answers[text_of(prompt)]) as vendor:
        predictor = remote(
            vendor.base_url, model="fake-gpt", api_key_env=KEY_ENV, max_tokens=5, stop=["\n"]
        )
        preds = predictor.predict(["my card is late", "pin?", "hm"])
        assert preds.labels == ["card_arrival", "pin_blocked", UNMAPPED]
        assert preds.confidences.tolist() == [1.0, 1.0, 0.0]
        assert preds.usage is not None
        assert (preds.usage.input_tokens, preds.usage.output_tokens) == (3 * 12, 3 * 3)
        body = vendor.requests[0]
        assert (body["model"], body["max_tokens"], body["stop"], body["temperature"]) == (
            "fake-gpt",
            5,
            ["\n"],
            0,
        )
        assert set(vendor.authorization) == {f"Bearer {SECRET}"}
        assert (predictor.calls, predictor.cache_hits) == (3, 0)

        again = predictor.predict(["hm", "pin?", "my card is late"])
        assert len(vendor.requests) == 3, "cached answers are not asked again"
        assert again.labels == [UNMAPPED, "pin_blocked", "card_arrival"]
        # A cached answer reports the tokens it cost when it was paid for.
        assert again.usage is not None and again.usage.input_tokens == 36
        assert predictor.cache_hits == 3
        # Another max_tokens is another question: not answered from the cache.
        remote(vendor.base_url, model="fake-gpt", api_key_env=KEY_ENV, max_tokens=6).predict(["hm"])
        assert len(vendor.requests) == 4


def test_transient_errors_are_retried_and_concurrency_is_bounded_fake_general_model():
    with FlakyFakeGeneralModel(answer=keyword_answer, fail_first=2) as vendor:
        predictor = remote(vendor.base_url, model="fake-gpt", retries=2, concurrency=2)
        predictor.retry_wait_s = 0.0
        texts = [f"my pin number {i}" for i in range(6)]
        assert predictor.predict(texts).labels == ["pin_blocked"] * 6
        assert len(vendor.requests) == 6 + 2
        assert predictor.calls == 8


def test_retries_give_up_naming_the_endpoint_fake_general_model():
    with FlakyFakeGeneralModel(answer=keyword_answer, fail_first=10) as vendor:
        predictor = remote(vendor.base_url, model="fake-gpt", retries=1)
        predictor.retry_wait_s = 0.0
        with pytest.raises(UpstreamError, match="failed 2 time\\(s\\): HTTP 503") as caught:
            predictor.predict(["a text"])
        assert vendor.base_url in str(caught.value)
        assert len(vendor.requests) == 2


class PickyFakeGeneralModel(FakeVendorAPI):
    """The fake vendor, failing (HTTP 500) every question about the text ``bad``."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if text_of(body["messages"][0]["content"]) == "bad":
            self._received(body)
            return web.json_response({"error": {"message": "boom"}}, status=500)
        return await super()._chat(request)


def test_answers_paid_for_are_kept_when_a_later_call_fails_fake_general_model():
    with PickyFakeGeneralModel(answer=keyword_answer) as vendor:
        predictor = remote(vendor.base_url, model="fake-gpt", retries=0, concurrency=1)
        with pytest.raises(UpstreamError, match="HTTP 500"):
            predictor.predict(["my pin 1", "my pin 2", "bad"])
        asked = len(vendor.requests)
        assert predictor.predict(["my pin 1", "my pin 2"]).labels == ["pin_blocked"] * 2
        assert len(vendor.requests) == asked, "the two answers were cached before the failure"


def test_an_unset_key_variable_is_named_before_any_call_fake_general_model(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with FakeVendorAPI(answer=keyword_answer) as vendor:
        predictor = remote(vendor.base_url, model="fake-gpt", api_key_env=KEY_ENV)
        with pytest.raises(ConfigurationError, match=f"\\${KEY_ENV}, which is not set"):
            predictor.predict(["a text"])
        assert vendor.requests == []


# -- evaluation and the gate -----------------------------------------------------------------


def endpoint_task(
    registry: Registry, base_url: str, *, template: str | None = None, key_env: str = KEY_ENV
) -> None:
    registry.tasks.update(
        "intents",
        general={
            "kind": "openai",
            "base_url": base_url,
            "model": "fake-gpt",
            "api_key_env": key_env,
            "price_input_per_1m_tokens_usd": PRICE_IN,
            "price_output_per_1m_tokens_usd": PRICE_OUT,
            "prompt_template": template,
            "max_tokens": 8,
        },
    )


@pytest.fixture
def trained(four_intents: Path, encoder, registry: Registry, monkeypatch) -> dict[str, Any]:
    """Task ``intents`` v1 trained on the four intents; its test split's texts and labels."""
    monkeypatch.setenv("NICHE_BOOTSTRAP_RESAMPLES", "200")
    monkeypatch.setenv(KEY_ENV, SECRET)
    settings = Settings()
    curated = curate_data(DataSpec(data=four_intents), settings, seed=0, registry=registry)
    train_and_register(
        curated.version.fingerprint, settings, task="intents", encoder=encoder, registry=registry
    )
    test = curated.version.splits["test"]
    return {"settings": settings, "texts": list(test.texts), "labels": list(test.labels)}


@pytest.mark.slow
def test_gate_against_fake_general_model_endpoint(trained, encoder, registry: Registry):
    settings, texts, labels = trained["settings"], trained["texts"], trained["labels"]
    truth = dict(zip(texts, labels, strict=True))
    # Right on two rows in three, a wrong label on the rest, and no label at all on one.
    wrong = {label: LABELS[(LABELS.index(label) + 1) % 4] for label in LABELS}
    expected = {
        text: (truth[text] if i % 3 else wrong[truth[text]]) for i, text in enumerate(texts)
    }
    expected[texts[-1]] = "no idea, sorry"
    n = len(texts)
    fake_accuracy = sum(expected[t] == truth[t] for t in texts) / n

    with FakeVendorAPI(answer=lambda prompt: expected[text_of(prompt)]) as vendor:
        endpoint_task(registry, vendor.base_url)
        outcome = promote("intents", 1, settings, encoder=encoder, registry=registry)
        report = outcome.evaluation

        # The gate compared the candidate with THAT endpoint's answers, not with zero-shot.
        assert len(vendor.requests) == n
        assert set(vendor.authorization) == {f"Bearer {SECRET}"}
        general = report.general
        assert general.kind == "remote"
        assert general.accuracy == pytest.approx(fake_accuracy)
        assert general.unmapped == 1
        assert report.general_model == {
            "kind": "remote",
            "model": "fake-gpt",
            "base_url": vendor.base_url,
            "calls": n,
            "cached": 0,
        }
        check = next(c for c in outcome.decision.checks if c.name == "quality_vs_general")
        diff = report.specialist.accuracy - fake_accuracy
        assert f"general model's (remote): {diff:+.4f}" in check.detail
        assert report.comparison.paired_test.bootstrap.diff == pytest.approx(diff)
        zero_shot = zero_shot_baseline(list(LABELS), settings, encoder=encoder)
        assert np.mean(np.asarray(zero_shot.predict(texts).labels) == labels) != fake_accuracy

        # Its cost: the fake's tokens at the task's prices (12 x $1 + 3 x $2 per 1M, per row).
        assert general.usage.input_tokens == IN_TOKENS * n
        assert general.usage.output_tokens == OUT_TOKENS * n
        tokens_only = Prices(input_per_1m_tokens_usd=PRICE_IN, output_per_1m_tokens_usd=PRICE_OUT)
        token_cost = IN_TOKENS * PRICE_IN + OUT_TOKENS * PRICE_OUT
        assert cost_per_1m(general.usage, n, tokens_only) == pytest.approx(token_cost)
        assert general.cost_per_1m_usd == pytest.approx(token_cost, abs=0.5)  # + local CPU
        stored = registry.models.evaluations("intents", 1)[-1]
        assert stored.general_usage is not None
        assert stored.general_usage["rows"] == n
        assert stored.general_usage["input_tokens"] == IN_TOKENS * n
        assert stored.cost_per_1m_usd(tokens_only, general=True) == pytest.approx(token_cost)
        assert stored.usage is not None and stored.usage["compute_s"] > 0
        assert stored.general["usage"]["output_tokens"] == OUT_TOKENS * n

        # A second evaluation pays nothing: every answer comes from the cache.
        again = evaluate_registered("intents", 1, settings, encoder=encoder, registry=registry)
        assert len(vendor.requests) == n
        assert again.general_model["calls"] == 0 and again.general_model["cached"] == n
        assert again.general.accuracy == pytest.approx(fake_accuracy)
        assert again.general.usage.input_tokens == IN_TOKENS * n

        # A row cap asks a seeded sample, and says so with its (wider) interval.
        capped = evaluate_registered(
            "intents", 1, settings, encoder=encoder, registry=registry, general_rows=10
        )
        sample = capped.to_dict()["general"]["sample"]
        assert sample == {"rows": 10, "of": n, "seed": 0}
        assert capped.comparison.paired_test.bootstrap.diff == pytest.approx(
            capped.specialist.correct[capped.general.rows].mean() - capped.general.accuracy
        )
        low, high = capped.general.accuracy_ci
        assert high - low > general.accuracy_ci[1] - general.accuracy_ci[0]
        assert len(vendor.requests) == n  # the sample's answers were cached too


@pytest.mark.slow
def test_an_endpoint_that_is_down_names_the_task_and_the_url_not_the_key(
    trained, encoder, registry: Registry, monkeypatch
):
    monkeypatch.setenv("NICHE_REMOTE_RETRIES", "0")
    down = f"http://127.0.0.1:{free_port()}/v1"
    endpoint_task(registry, down)
    with pytest.raises(UpstreamError) as caught:
        evaluate_registered("intents", 1, Settings(), encoder=encoder, registry=registry)
    message = str(caught.value)
    assert message.startswith("task intents: the general model fake-gpt at " + down)
    assert SECRET not in message
    assert registry.models.evaluations("intents", 1) == []  # nothing half-recorded


@pytest.mark.slow
def test_every_answer_unmapped_suggests_the_prompt_template_fake_general_model(
    trained, encoder, registry: Registry
):
    with FakeVendorAPI(answer=lambda prompt: "Sure! Here is my answer.") as vendor:
        endpoint_task(registry, vendor.base_url, template="Say something nice about {text}")
        with pytest.raises(ConfigurationError) as caught:
            evaluate_registered("intents", 1, Settings(), encoder=encoder, registry=registry)
    message = str(caught.value)
    assert message.startswith("task intents: none of the")
    assert "general.prompt_template" in message and "'Sure! Here is my answer.'" in message
    assert registry.models.evaluations("intents", 1) == []


@pytest.mark.slow
def test_an_unset_key_fails_the_evaluation_before_the_specialist_runs(encoder, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    version = toy_version()
    general = GeneralModelSpec(
        kind="openai", base_url="http://127.0.0.1:9/v1", model="m", api_key_env=KEY_ENV
    )
    spec = TaskSpec(name="toy", labels=["card_arrival", "pin_blocked"], general=general)
    specialist = zero_shot_baseline(spec.labels, encoder=encoder)
    calls: list[int] = []
    real_predict = specialist.predict
    specialist.predict = lambda texts: calls.append(len(texts)) or real_predict(texts)  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match=f"task toy: .*\\${KEY_ENV}, which is not set"):
        evaluate_model(specialist, version, Settings(), task=spec, encoder=encoder)
    assert calls == []


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_trained(cli_env: Path, four_intents: Path, monkeypatch) -> Path:
    """Task ``intents`` v1 trained through the CLI in this test's NICHE_HOME."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    columns = ["--data", str(four_intents)]
    curated = runner.invoke(app, ["data", "curate", *columns, "--json"])
    fingerprint = json.loads(curated.stdout)["fingerprint"]
    trained = runner.invoke(app, ["train", fingerprint[:10], "--task", "intents", "--json"])
    assert trained.exit_code == 0, trained.output
    return cli_env


@pytest.mark.slow
def test_niche_evaluate_shows_the_fake_general_model_endpoint_and_its_token_cost(
    cli_trained, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line, nothing folded
    with FakeVendorAPI(answer=keyword_answer) as vendor:
        with Registry(settings=Settings()) as registry:
            endpoint_task(registry, vendor.base_url)
        shown = runner.invoke(app, ["evaluate", "intents", "1", "--general-rows", "12"])
        assert shown.exit_code == 0, shown.output
        assert len(vendor.requests) == 12
        out = " ".join(shown.stdout.split())
        assert f"general (fake-gpt at {vendor.base_url})" in out
        # 12 input and 3 output tokens a row: the cost column says so.
        assert "12.0 in + 3.0 out tokens each" in out
        assert "seeded sample of 12 of" in out
        assert "12 calls to the general model, 0 answers from the cache" in out
        assert SECRET not in shown.output

        again = runner.invoke(app, ["evaluate", "intents", "1", "--general-rows", "12", "--json"])
        report = json.loads(again.stdout)
        assert len(vendor.requests) == 12
        assert report["general_model"]["calls"] == 0
        assert report["general"]["usage"]["input_tokens"] == 12 * IN_TOKENS

        # The gate in `niche promote` takes the same cap and asks the same (cached) rows.
        gated = runner.invoke(app, ["promote", "intents", "1", "--general-rows", "12", "--json"])
        assert gated.exit_code in (0, 4), gated.output
        checks = {c["name"]: c for c in json.loads(gated.stdout)["checks"]}
        assert "asked a seeded sample of 12 of" in checks["quality_vs_general"]["detail"]
        assert len(vendor.requests) == 12


@pytest.mark.slow
def test_niche_evaluate_against_an_endpoint_that_is_down_exits_with_one_line(
    cli_trained, monkeypatch
):
    monkeypatch.setenv("NICHE_REMOTE_RETRIES", "0")
    down = f"http://127.0.0.1:{free_port()}/v1"
    with Registry(settings=Settings()) as registry:
        endpoint_task(registry, down)
    result = runner.invoke(app, ["evaluate", "intents", "1"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: task intents: the general model fake-gpt at " + down)
    assert "Traceback" not in result.output and SECRET not in result.output
    monkeypatch.delenv(KEY_ENV)
    unset = runner.invoke(app, ["evaluate", "intents", "1"])
    assert unset.exit_code == 2
    assert f"task intents: the general model fake-gpt at {down} needs an API key in " in (
        unset.stderr
    )


def toy_version() -> Any:
    rows = Rows(
        texts=[f"my {w} number {i}" for w in ("card", "pin") for i in range(10)],
        labels=["card_arrival"] * 10 + ["pin_blocked"] * 10,
        source="toy",
    )
    return curate(rows, seed=0, source="toy")


@pytest.mark.slow
def test_a_task_without_its_own_endpoint_is_compared_with_the_global_fake_general_model(
    encoder,
):
    version = toy_version()
    spec = TaskSpec(name="toy", labels=["card_arrival", "pin_blocked"])
    specialist = zero_shot_baseline(spec.labels, encoder=encoder)
    with FakeVendorAPI(answer=keyword_answer) as vendor:
        settings = Settings(
            general_base_url=vendor.base_url,
            general_model="global-gpt",
            general_price_input_per_1m_tokens_usd=PRICE_IN,
            general_max_tokens=7,
        )
        report = evaluate_model(specialist, version, settings, task=spec, encoder=encoder)
        n = len(version.splits["test"])
        assert len(vendor.requests) == n and vendor.requests[0]["max_tokens"] == 7
    assert report.general_model["model"] == "global-gpt"
    assert report.general.kind == "remote" and report.general.accuracy == 1.0
    tokens_only = Prices(input_per_1m_tokens_usd=PRICE_IN)
    assert cost_per_1m(report.general.usage, n, tokens_only) == pytest.approx(IN_TOKENS * PRICE_IN)
    # Without any endpoint, zero-shot stays the baseline.
    offline = evaluate_model(specialist, version, Settings(), task=spec, encoder=encoder)
    assert offline.general.kind == "zero-shot" and offline.general_model == {"kind": "zero-shot"}


class Fixed:
    """Answers from a dict, confidence 0.9: a stand-in with no model, for the gate's arithmetic."""

    kind = "fixed"

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    @property
    def label_set(self) -> list[str]:
        return ["a", "b"]

    def predict(self, inputs: Any) -> Predictions:
        return Predictions(
            labels=[self.answers[t] for t in inputs],
            confidences=np.full(len(inputs), 0.9),
            usage=Usage(compute_s=0.0),
        )


def test_the_gate_compares_the_candidate_with_a_sampled_general_model_on_its_rows():
    texts = [f"t{i}" for i in range(20)]
    labels = ["a" if i % 2 else "b" for i in range(20)]
    options = {"n_resamples": 200, "latency_samples": 0, "cpu_hour_usd": 0.0}
    candidate = evaluate(
        Fixed(dict(zip(texts, labels, strict=True))), texts, labels, watts_per_core=0, **options
    )
    rows = np.arange(0, 20, 2)  # ten of the twenty rows
    wrong = {t: ("b" if label == "a" else "a") for t, label in zip(texts, labels, strict=True)}
    answers = {texts[i]: (labels[i] if k % 2 else wrong[texts[i]]) for k, i in enumerate(rows)}
    sampled = [texts[i] for i in rows]
    general = evaluate(
        Fixed(answers), sampled, [labels[i] for i in rows], watts_per_core=0, **options
    ).sampled(rows, 20, seed=5)
    assert general.accuracy == 0.5 and general.to_dict()["sample"] == {
        "rows": 10,
        "of": 20,
        "seed": 5,
    }

    decision = decide(TaskSpec(name="toy", labels=["a", "b"]), candidate, general, n_resamples=200)
    check = next(c for c in decision.checks if c.name == "quality_vs_general")
    assert "asked a seeded sample of 10 of 20 rows (seed 5)" in check.detail
    assert ": +0.5000," in check.detail and "10 rows)" in check.detail
    comparison = compare(candidate, general, labels, n_resamples=200)
    assert comparison.paired_test.bootstrap.diff == pytest.approx(0.5)
    # Above the candidate's confidence the general model answers: its accuracy on the sample.
    top = comparison.cascade[-1]
    assert (top.threshold, top.coverage, top.accuracy) == (0.99, 0.0, 0.5)

    with pytest.raises(ValueError, match="same rows"):
        decide(TaskSpec(name="toy"), candidate, general.sampled(rows, 30, seed=5))


def test_the_global_general_model_is_read_as_the_gateway_reads_it():
    """Evaluation's global general model is the gateway's: its bounds and format settings too,
    and a half-set one is a configuration error, not a silent zero-shot baseline."""
    task = TaskSpec(name="t", labels=list(LABELS))
    settings = Settings(
        general_base_url="http://127.0.0.1:9/v1",
        general_model="m",
        general_max_tokens=7,
        general_response_format="json_object",
    )
    spec = general_model_of(task, settings)
    assert spec is not None
    assert (spec.model, spec.max_tokens, spec.response_format) == ("m", 7, "json_object")
    assert general_model_of(task, Settings(environ={})) is None
    with pytest.raises(ConfigurationError, match="NICHE_GENERAL_MODEL"):
        general_model_of(task, Settings(environ={}, general_base_url="http://127.0.0.1:9/v1"))
