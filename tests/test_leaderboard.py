"""The leaderboard over a real registry (SQLite and PostgreSQL): two domains, three tasks (one
without a champion), stored evaluations and captured traffic, every number worked out by hand.

Traffic since 2026-03-03 (the window): cards 6 records (2 cascaded), loans 2 (none), spam 2
(1 cascaded); 2 older cards records and 5 pass-through requests (no task) fall outside the
task total of 10. Shares: cards 0.6, loans 0.2, spam 0.2.
Banking weights: cards 2 x 0.6 = 1.2, loans 1 x 0.2 = 0.2, so
score = (1.2 x 0.92 + 0.2 x 0.80) / 1.4 = 1.264 / 1.4 and
quality vs general = (1.2 x 0.07 + 0.2 x -0.02) / 1.4 = 0.08 / 1.4.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from niche.cli import app
from niche.errors import ValidationError
from niche.registry import Registry
from niche.registry.records import TrafficRecord
from niche.registry.tasks import SLA, GeneralModelSpec, TaskSpec
from niche.reports import FORMULA, NO_DOMAIN, leaderboard

runner = CliRunner()

NOW = datetime(2026, 3, 10, tzinfo=UTC)
WINDOW_START = datetime(2026, 3, 3, tzinfo=UTC)
INSIDE = datetime(2026, 3, 5, tzinfo=UTC)
BEFORE = datetime(2026, 3, 1, 6, tzinfo=UTC)
BANKING_SCORE = 1.264 / 1.4
BANKING_VS_GENERAL = 0.08 / 1.4


def _comparison(diff: float, low: float, high: float, p: float) -> dict[str, Any]:
    return {
        "paired_test": {
            "p_value": p,
            "mcnemar": {"b": 20, "c": 6, "statistic": 6, "p_value": p},
            "bootstrap": {"diff": diff, "ci_low": low, "ci_high": high, "p_value": p},
        },
        "cascade": [],
    }


def _metrics(accuracy: float, ci: list[float], p95: float | None) -> dict[str, Any]:
    # cost_per_1m_usd and wh_per_query as stored are stale on purpose: the board recomputes
    # both from the stored usage.
    return {
        "n": 200,
        "accuracy": accuracy,
        "accuracy_ci": ci,
        "latency_p95_ms": p95,
        "cost_per_1m_usd": 999.0,
        "wh_per_query": 999.0,
    }


def _model(registry: Registry, task: str) -> int:
    return registry.models.register(
        task,
        kind="text",
        artifact_digest="a" * 64,
        artifact_uri="file:///a",
        dataset_fingerprint="f" * 64,
        lineage={},
    ).version


def _traffic(task: str | None, route: str, at: datetime) -> TrafficRecord:
    return TrafficRecord(
        task=task, model=task or "gpt", route=route, input="hi", latency_ms=3.0, status=200, at=at
    )


@pytest.fixture
def portfolio(registry: Registry) -> Registry:
    registry.tasks.create(
        TaskSpec(
            name="cards",
            labels=["a", "b"],
            domain="banking",
            leaderboard_weight=2.0,
            general=GeneralModelSpec(
                price_input_per_1m_tokens_usd=1.0, price_output_per_1m_tokens_usd=2.0
            ),
            sla=SLA(latency_p95_ms=50.0, min_quality=0.9),
        )
    )
    registry.tasks.create(
        TaskSpec(
            name="loans",
            labels=["a", "b"],
            domain="banking",
            sla=SLA(max_cost_per_1k_usd=0.00001),
        )
    )
    registry.tasks.create(TaskSpec(name="spam", labels=["ham", "spam"]))
    # cards: an older test evaluation, the latest test one, then a validation one after it.
    version = _model(registry, "cards")
    registry.models.record_evaluation(
        "cards",
        version,
        dataset_fingerprint="f" * 64,
        split="test",
        metrics=_metrics(0.5, [0.4, 0.6], 9.0),
        general=_metrics(0.5, [0.4, 0.6], 9.0),
        comparison=_comparison(0.0, -0.1, 0.1, 1.0),
    )
    registry.models.record_evaluation(
        "cards",
        version,
        dataset_fingerprint="f" * 64,
        split="test",
        metrics=_metrics(0.92, [0.88, 0.95], 4.0),
        general=_metrics(0.85, [0.80, 0.90], 300.0),
        comparison=_comparison(0.07, 0.02, 0.12, 0.004),
        # 0.72 CPU-s for 200 rows: 3600 s (1 h at $0.045) per 1M; 10 W x 0.0036 s = 1e-5 Wh.
        usage={"compute_s": 0.72, "input_tokens": None, "output_tokens": None, "rows": 200},
        # 40M input tokens ($40) + 5M output tokens ($10) per 1M.
        general_usage={"compute_s": 0.0, "input_tokens": 8000, "output_tokens": 1000, "rows": 200},
    )
    registry.models.record_evaluation(
        "cards",
        version,
        dataset_fingerprint="f" * 64,
        split="validation",
        metrics=_metrics(0.1, [0.0, 0.2], 1.0),
    )
    registry.promotions.move("cards", "champion", version, actor="test", reason="fixture")
    version = _model(registry, "loans")
    registry.models.record_evaluation(
        "loans",
        version,
        dataset_fingerprint="f" * 64,
        split="test",
        metrics=_metrics(0.80, [0.74, 0.85], 5.0),
        general={**_metrics(0.82, [0.76, 0.87], None), "cost_per_1m_usd": 7.5},
        comparison=_comparison(-0.02, -0.06, 0.02, 0.5),
        # 1800 CPU-s per 1M: $0.0225, $2.25e-5 per 1k, over the SLA's $1e-5.
        usage={"compute_s": 0.36, "input_tokens": None, "output_tokens": None, "rows": 200},
    )
    registry.promotions.move("loans", "champion", version, actor="test", reason="fixture")
    _model(registry, "spam")  # a version, but no champion
    routes = ["specialist"] * 4 + ["general-fallback", "general"]
    records = [_traffic("cards", route, INSIDE) for route in routes]
    records += [_traffic("cards", "general", BEFORE) for _ in range(2)]
    records += [_traffic("loans", "specialist", INSIDE) for _ in range(2)]
    records += [_traffic("spam", r, INSIDE) for r in ("specialist-fallback", "specialist")]
    records += [_traffic(None, "passthrough", INSIDE) for _ in range(5)]
    assert registry.traffic.record(records) == len(records)
    signal = {"name": "input_drift", "p_value": 0.001, "threshold": 0.01, "alarm": True}
    registry.monitoring.record("cards", model_version=1, window={}, signals=[signal], alarm=True)
    return registry


def test_rows_scores_and_shares_are_the_hand_computed_ones(portfolio: Registry) -> None:
    board = leaderboard(registry=portfolio, since="7d", now=NOW)
    assert board.since == WINDOW_START
    assert [d.name for d in board.domains] == ["banking", NO_DOMAIN]
    banking, none = board.domains
    cards, loans = banking.rows
    assert (cards.task, cards.champion, cards.score) == ("cards", 1, 0.92)
    assert cards.specialist is not None and cards.general is not None
    assert cards.specialist.accuracy_ci == (0.88, 0.95)
    assert (cards.general.accuracy, cards.general.accuracy_ci) == (0.85, (0.80, 0.90))
    assert (cards.difference, cards.difference_ci, cards.p_value) == (0.07, (0.02, 0.12), 0.004)
    assert (cards.specialist.latency_p95_ms, cards.general.latency_p95_ms) == (4.0, 300.0)
    assert cards.specialist.cost_per_1m_usd == pytest.approx(0.045, rel=1e-12)
    assert cards.general.cost_per_1m_usd == pytest.approx(50.0, rel=1e-12)
    assert cards.specialist.wh_per_query == pytest.approx(1e-5, rel=1e-12)
    assert cards.general.wh_per_query == 0.0
    assert (cards.requests, cards.traffic_share) == (6, 0.6)
    assert cards.cascade_rate == pytest.approx(2 / 6, rel=1e-12)
    assert cards.sla == {
        "latency_p95_ms": "met",
        "min_quality": "met",
        "min_quality_vs_general": "met",
        "max_cost_per_1k_usd": "unchecked",
    }
    assert cards.open_alerts == 1
    assert (loans.score, loans.difference, loans.traffic_share, loans.cascade_rate) == (
        0.80,
        -0.02,
        0.2,
        0.0,
    )
    assert loans.specialist is not None and loans.general is not None
    assert loans.specialist.cost_per_1m_usd == pytest.approx(0.0225, rel=1e-12)
    assert loans.general.cost_per_1m_usd == 7.5  # no general usage stored: the stored figure
    assert loans.sla == {
        "latency_p95_ms": "unchecked",
        "min_quality": "unchecked",
        "min_quality_vs_general": "not met",
        "max_cost_per_1k_usd": "not met",
    }
    assert loans.open_alerts == 0
    (spam,) = none.rows
    assert (spam.champion, spam.score, spam.note, spam.specialist, spam.sla) == (
        None,
        None,
        "no champion",
        None,
        {},
    )
    assert (spam.traffic_share, spam.cascade_rate) == (0.2, 0.5)
    assert banking.score == pytest.approx(BANKING_SCORE, rel=1e-12)
    assert banking.quality_vs_general == pytest.approx(BANKING_VS_GENERAL, rel=1e-12)
    assert (banking.requests, banking.traffic_share) == (8, 0.8)
    assert (none.score, none.quality_vs_general, none.traffic_share) == (None, None, 0.2)
    assert board.score == pytest.approx(BANKING_SCORE, rel=1e-12)
    assert board.quality_vs_general == pytest.approx(BANKING_VS_GENERAL, rel=1e-12)
    assert board.requests == 10


def test_without_traffic_in_the_window_the_weights_alone_count(portfolio: Registry) -> None:
    board = leaderboard(registry=portfolio, since="1d", now=NOW)
    banking = board.domains[0]
    assert [(r.requests, r.traffic_share, r.cascade_rate) for r in banking.rows] == [
        (0, None, None),
        (0, None, None),
    ]
    # (2 x 0.92 + 1 x 0.80) / 3 and (2 x 0.07 + 1 x -0.02) / 3
    assert banking.score == pytest.approx(2.64 / 3, rel=1e-12)
    assert banking.quality_vs_general == pytest.approx(0.12 / 3, rel=1e-12)
    # All traffic (no window): cards has 8 of 12 records.
    everything = leaderboard(registry=portfolio, now=NOW)
    assert everything.since is None and everything.requests == 12
    assert everything.domains[0].rows[0].traffic_share == pytest.approx(8 / 12, rel=1e-12)


def test_a_domain_filter_keeps_its_rows_and_the_portfolio_shares(portfolio: Registry) -> None:
    board = leaderboard(registry=portfolio, domain=NO_DOMAIN, since="7d", now=NOW)
    assert [d.name for d in board.domains] == [NO_DOMAIN]
    assert board.domains[0].rows[0].traffic_share == 0.2  # still over every task's records
    assert (board.score, board.requests) == (None, 2)
    banking = leaderboard(registry=portfolio, domain="banking", since="7d", now=NOW)
    assert [r.task for d in banking.domains for r in d.rows] == ["cards", "loans"]
    assert banking.score == pytest.approx(BANKING_SCORE, rel=1e-12)
    with pytest.raises(ValidationError, match=r"no domain 'retail' \(known: banking, \(none\)\)"):
        leaderboard(registry=portfolio, domain="retail")


def _cli(portfolio: Registry, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setenv("NICHE_DATABASE_URL", portfolio.database_url)
    return runner.invoke(app, ["leaderboard", *args])


def test_cli_json_is_the_board_dict(portfolio: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    since = WINDOW_START.isoformat()
    result = _cli(portfolio, monkeypatch, "--since", since, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"since", "formula", "domains", "portfolio"}
    assert payload["formula"] == FORMULA and payload["since"] == since
    assert [d["name"] for d in payload["domains"]] == ["banking", NO_DOMAIN]
    cards = payload["domains"][0]["tasks"][0]
    assert set(cards) >= {"champion", "specialist", "general", "difference", "p_value", "sla"}
    assert cards["specialist"]["accuracy_ci"] == [0.88, 0.95]
    assert (cards["traffic_share"], cards["open_alerts"], cards["score"]) == (0.6, 1, 0.92)
    assert payload["portfolio"]["score"] == pytest.approx(BANKING_SCORE, rel=1e-12)
    assert payload["portfolio"]["tasks"] == 3 and payload["portfolio"]["requests"] == 10
    assert payload == leaderboard(registry=portfolio, since=since).to_dict()
    only = json.loads(_cli(portfolio, monkeypatch, "--domain", "banking", "--json").stdout)
    assert [d["name"] for d in only["domains"]] == ["banking"]


def test_cli_table_and_unknown_domain(portfolio: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _cli(portfolio, monkeypatch, "--since", WINDOW_START.isoformat())
    assert result.exit_code == 0, result.output
    for text in ("banking — score 90.3%", "(none)", "cards", "no champion", "0.920 [0.880,"):
        assert text in result.stdout, text
    assert "portfolio: score 90.3%, vs general +5.7 pts, 3 tasks, 10 requests" in result.stdout
    refused = _cli(portfolio, monkeypatch, "--domain", "retail")
    assert refused.exit_code == 2
    assert "no domain 'retail' (known: banking, (none))" in refused.stderr
