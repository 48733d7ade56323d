"""`niche tco`: the cost of ownership per task from real registry records (SQLite and
PostgreSQL), every number computed by hand below."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from niche.cli import app
from niche.errors import ValidationError
from niche.registry.records import TrafficRecord
from niche.registry.tasks import GeneralModelSpec, TaskSpec
from niche.reports import tco
from niche.settings import Settings

runner = CliRunner()

# Prices and settings chosen so the hand arithmetic stays short.
SETTINGS = {
    "cpu_hour_usd": 3.6,  # 0.001 USD per CPU-second
    "cpu_watts_per_core": 10.0,
    "grid_gco2e_per_kwh": 500.0,
    "general_wh_per_1k_tokens": 2.0,
    "tco_retrain_every_months": 3,  # trained in months 1 and 4 of 6
    "tco_maintenance_usd_per_month": 1.3,
}
ENV = {"NICHE_" + name.upper(): str(value) for name, value in SETTINGS.items()}
GENERAL = {"kind": "openai", "base_url": "http://llm.invalid/v1", "model": "big"}


def _comparison(diff: float, low: float) -> dict[str, object]:
    return {
        "paired_test": {
            "p_value": 0.01,
            "mcnemar": {},
            "bootstrap": {"diff": diff, "ci_low": low, "ci_high": diff + 0.03, "p_value": 0.01},
        },
        "cascade": [
            {"threshold": 0.3, "coverage": 0.9, "accuracy": 0.9},
            {"threshold": 0.5, "coverage": 0.75, "accuracy": 0.92},
        ],
    }


def _champion(registry, task: str, *, low: float, fit_seconds: float | None = 360.0) -> None:
    lineage = {} if fit_seconds is None else {"fit_seconds": fit_seconds}
    registry.models.register(
        task,
        kind="text",
        artifact_digest="ab" * 32,
        artifact_uri="file:///a",
        dataset_fingerprint="cd" * 32,
        lineage=lineage,
    )
    registry.models.record_evaluation(
        task,
        1,
        dataset_fingerprint="cd" * 32,
        split="test",
        metrics={"accuracy": 0.9},
        general={"accuracy": 0.85},
        comparison=_comparison(0.05, low),
        usage={"compute_s": 2.0, "input_tokens": None, "output_tokens": None, "rows": 1000},
    )
    registry.promotions.move(task, "champion", 1)


def _traffic(task: str, route: str, at: datetime, **fields: object) -> TrafficRecord:
    return TrafficRecord(
        model=task, route=route, input="x", latency_ms=5.0, status=200, task=task, at=at, **fields
    )


@pytest.fixture
def portfolio(registry):
    """``spam`` (specialist beats the general model, 10 records this month), ``chat`` (its
    comparison shows no gain), ``fresh`` (3 labelled records, no champion)."""
    now = datetime.now(UTC).replace(microsecond=0)
    general = GeneralModelSpec(
        **GENERAL, price_input_per_1m_tokens_usd=1000.0, price_output_per_1m_tokens_usd=5000.0
    )
    for name in ("spam", "chat"):
        registry.tasks.create(TaskSpec(name=name, labels=["ham", "spam"], general=general))
    registry.tasks.create(
        TaskSpec(
            name="fresh",
            labels=["ham", "spam"],
            general=GeneralModelSpec(
                **GENERAL, price_input_per_1m_tokens_usd=1.0, price_output_per_1m_tokens_usd=1.0
            ),
        )
    )
    _champion(registry, "spam", low=0.02)
    _champion(registry, "chat", low=-0.01)
    day = timedelta(days=1)
    answered = {"general_label": "spam", "input_tokens": 100, "output_tokens": 20}
    records = [_traffic("spam", "general", now - 2 * day, **answered) for _ in range(2)]
    records += [_traffic("spam", "specialist", now - 3 * day, specialist_label="ham")] * 8
    # 31 days ago: outside the month measured.
    records += [_traffic("spam", "specialist", now - 31 * day, specialist_label="ham")] * 5
    # No token counts (a zero-shot teacher): estimated from the text, "hello world" = 2
    # WordPiece tokens, the label "spam" = 2 ("spa", "##m").
    records += [
        _traffic("fresh", "general", now - day, general_label="spam", text="hello world")
    ] * 3
    registry.traffic.record(records)
    return registry, now


def test_the_specialist_that_beats_the_general_model_is_worth_specialising(portfolio):
    registry, now = portfolio
    report = tco(Settings(**SETTINGS), registry=registry, months=6, now=now)
    rows = {row.task: row for row in report.tasks}
    spam = rows["spam"]
    assert spam.requests_per_month == 10  # the 5 records of 31 days ago are not counted
    # General: (100 x 1000 + 20 x 5000) / 1M = 0.2 USD a request, 2 USD a month.
    assert spam.general_usd == pytest.approx(12.0)
    # Portfolio a month: 10 x 0.002 CPU-s x 0.001 USD = 2e-5 + cascade 2/10 x 2 = 0.4
    # + maintenance 1.3; training 360 CPU-s = 0.36 USD in months 1 and 4.
    monthly = 2e-5 + 0.4 + 1.3
    assert [m.portfolio_usd for m in spam.months] == pytest.approx(
        [monthly + 0.36, monthly, monthly, monthly + 0.36, monthly, monthly]
    )
    assert spam.portfolio_usd == pytest.approx(6 * monthly + 0.72)  # 10.92012
    assert spam.savings_usd == pytest.approx(12.0 - 10.92012)
    assert spam.savings_pct == pytest.approx(1.07988 / 12 * 100)
    # Cumulative: -0.06002, then +0.23996: break-even in month 2.
    assert spam.months[0].cumulative_savings_usd == pytest.approx(-0.06002)
    assert spam.break_even_month == 2
    assert spam.verdict == "specialise"
    assert spam.reason == "savings 9.0 % over 6 months, break-even month 2"
    # Energy: general 10 x 6 x 20 tokens x 2 Wh/1k = 2.4 Wh; portfolio 60 x (0.002 s x 10 W
    # / 3600 + 0.2 x 0.04 Wh) + 2 trainings x 360 s x 10 W / 3600 = 0.48033… + 2 Wh.
    assert spam.energy_kwh["general"] == pytest.approx(0.0024)
    portfolio_wh = 60 * (0.02 / 3600 + 0.008) + 2.0
    assert spam.energy_kwh["portfolio"] == pytest.approx(portfolio_wh / 1000)
    assert spam.emissions_gco2e["general"] == pytest.approx(1.2)
    assert spam.emissions_gco2e["portfolio"] == pytest.approx(portfolio_wh / 1000 * 500)
    assert any(s.startswith("measured: 10 records since") for s in spam.sources)
    assert "measured: tokens of 2 captured general answers" in spam.sources
    assert "measured: cascade share 0.200 (2 of 10 records)" in spam.sources
    assert "measured: training 360 CPU-s (lineage fit_seconds of v1)" in spam.sources
    assert "setting NICHE_CPU_HOUR_USD=3.6" in report.sources


def test_no_significant_gain_keeps_the_general_model_and_too_few_rows_need_more(portfolio):
    registry, now = portfolio
    report = tco(Settings(**SETTINGS), registry=registry, months=6, now=now)
    rows = {row.task: row for row in report.tasks}
    assert rows["chat"].verdict == "keep general"
    assert rows["chat"].reason == (
        "no significant gain over the general model: accuracy difference +0.050, "
        "95 % interval low -0.010 < 0"
    )
    assert rows["chat"].requests_per_month == 0
    fresh = rows["fresh"]
    assert fresh.verdict == "need more data"
    assert fresh.reason == "no champion, and 3 labelled records < loop.min_rows=200"
    assert fresh.portfolio_usd is None and fresh.break_even_month is None
    # Estimated: 3 requests x (2 + 2 tokens) x 1 USD per 1M, 6 months.
    assert fresh.general_usd == pytest.approx(3 * 4 / 1e6 * 6)
    assert (
        "estimated (MiniLM WordPiece tokens) of 3 captured inputs, output as the label"
        in fresh.sources
    )
    # The portfolio follows the verdicts: spam specialised, the others general-only.
    total = report.portfolio
    assert total["specialised"] == 1
    assert total["general_usd"] == pytest.approx(12.0 + 3 * 4 / 1e6 * 6)
    assert total["portfolio_usd"] == pytest.approx(10.92012 + 3 * 4 / 1e6 * 6)
    assert total["break_even_month"] == 2


def test_requests_per_month_overrides_the_measured_rate(portfolio):
    registry, now = portfolio
    report = tco(
        Settings(**SETTINGS),
        registry=registry,
        tasks=["spam"],
        months=6,
        requests_per_month=1000,
        now=now,
    )
    [spam] = report.tasks
    assert spam.requests_per_month == 1000
    assert "given: --requests-per-month 1,000" in spam.sources
    assert spam.general_usd == pytest.approx(1000 * 0.2 * 6)
    # 1000 x 2e-6 + 0.2 x 200 + 1.3 a month, 2 trainings of 0.36.
    assert spam.portfolio_usd == pytest.approx(6 * (0.002 + 40 + 1.3) + 0.72)
    assert spam.break_even_month == 1


def test_bad_months_are_refused(registry):
    with pytest.raises(ValidationError, match="months must be a positive integer, got 0"):
        tco(Settings(), registry=registry, months=0)


def test_the_cli_prints_the_report_as_json_and_as_a_table(portfolio, database_url, monkeypatch):
    for name, value in {**ENV, "NICHE_DATABASE_URL": database_url}.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["tco", "spam", "--requests-per-month", "1000", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [row["task"] for row in payload["tasks"]] == ["spam"]
    assert payload["tasks"][0]["general_usd"] == pytest.approx(1200.0)
    assert payload["tasks"][0]["verdict"] == "specialise"
    result = runner.invoke(app, ["tco", "--months", "6"])
    assert result.exit_code == 0, result.output
    assert "keep general" in result.output and "need more data" in result.output
    assert "portfolio (1 of 3 tasks specialised)" in result.output
    bad = runner.invoke(app, ["tco", "--months", "0"])
    assert bad.exit_code == 2
    assert "months must be a positive integer, got 0" in bad.output


def test_a_portfolio_dearer_than_the_general_model_keeps_it(registry):
    registry.tasks.create(TaskSpec(name="cheap", labels=["ham", "spam"]))  # zero-shot: free
    _champion(registry, "cheap", low=0.02, fit_seconds=None)
    report = tco(Settings(**SETTINGS), registry=registry, months=6, requests_per_month=100)
    [cheap] = report.tasks
    # 100 x 2e-6 USD + maintenance 1.3 a month; no fit_seconds: NICHE_TCO_TRAINING_CPU_S=600
    # CPU-s = 0.6 USD, in months 1 and 4.
    assert cheap.portfolio_usd == pytest.approx(6 * (2e-4 + 1.3) + 1.2)
    assert cheap.general_usd == 0
    assert cheap.verdict == "keep general"
    assert cheap.reason == "the portfolio costs $9.00 vs $0.00 general-only over 6 months"
    assert "setting NICHE_TCO_TRAINING_CPU_S=600 (lineage records no fit_seconds)" in (
        cheap.sources
    )
    # No traffic: the cascade curve at the first threshold at or above 0.5 (coverage 0.75).
    assert any(s.startswith("measured: cascade share 0.250 (evaluation #") for s in cheap.sources)


def test_a_macro_f1_task_is_judged_on_its_macro_f1_comparison(registry):
    """Accuracy says the specialist wins (the paired test's interval clears 0), macro-F1
    says it does not: the task's metric decides the verdict."""
    now = datetime.now(UTC).replace(microsecond=0)
    general = GeneralModelSpec(
        **GENERAL, price_input_per_1m_tokens_usd=1000.0, price_output_per_1m_tokens_usd=5000.0
    )
    for name, metric in (("skewed", "macro_f1"), ("plain", "accuracy")):
        registry.tasks.create(
            TaskSpec(name=name, labels=["ham", "spam"], general=general, metric=metric)
        )
        registry.models.register(
            name,
            kind="text",
            artifact_digest="ab" * 32,
            artifact_uri="file:///a",
            dataset_fingerprint="cd" * 32,
            lineage={"fit_seconds": 360.0},
        )
        comparison = {
            **_comparison(0.05, 0.02),
            "metric": metric,
            "paired_metric": {"diff": -0.04, "ci_low": -0.09, "ci_high": 0.01, "p_value": 0.2},
        }
        registry.models.record_evaluation(
            name,
            1,
            dataset_fingerprint="cd" * 32,
            split="test",
            metrics={"accuracy": 0.9, "macro_f1": 0.6},
            general={"accuracy": 0.85, "macro_f1": 0.64},
            comparison=comparison,
            usage={"compute_s": 2.0, "input_tokens": None, "output_tokens": None, "rows": 1000},
        )
        registry.promotions.move(name, "champion", 1)
        answered = {"general_label": "spam", "input_tokens": 100, "output_tokens": 20}
        at = now - timedelta(days=1)
        records = [_traffic(name, "general", at, **answered) for _ in range(2)]
        records += [_traffic(name, "specialist", at, specialist_label="ham")] * 30
        registry.traffic.record(records)
    report = tco(Settings(**SETTINGS), registry=registry, months=6, now=now)
    rows = {row.task: row for row in report.tasks}
    assert rows["skewed"].verdict == "keep general"
    assert rows["skewed"].reason == (
        "no significant gain over the general model: macro-F1 difference -0.040, "
        "95 % interval low -0.090 < 0"
    )
    # An accuracy task reads the paired test's bootstrap, as before (its paired_metric here
    # says otherwise, and is not looked at).
    assert rows["plain"].verdict == "specialise", rows["plain"].reason
