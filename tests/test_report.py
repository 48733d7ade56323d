"""`niche report`: the self-contained HTML page over a real registry (SQLite and PostgreSQL).

Two tasks: ``spam`` (domain ``<script>alert(1)</script>``, a champion that beats the general
model) and ``chat`` (domain ``banking``, no significant gain: keep general). Settings from
tests/test_tco.py: $0.001 a CPU-second, trained in months 1 and 4, $1.3 maintenance a month.

spam, 10 records this month (2 general answers of 100 + 20 tokens at $1000/$5000 per 1M:
$0.2 each): general-only 10 x 0.2 = $2 a month, $12 over 6. Portfolio a month: specialist
10 x 0.002 CPU-s x $0.001 = $0.00002, cascade 2/10 x $2 = $0.4, maintenance $1.3, training
360 CPU-s = $0.36 in months 1 and 4: 6 x 1.70002 + 0.72 = $10.92012; savings $1.07988.
chat: 2 general records, $0.4 a month, $2.4 general-only (kept general). The portfolio:
$14.4 general-only, $13.32012 following the verdicts, savings $1.07988 = 7.499 %.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from niche.cli import app
from niche.errors import ValidationError
from niche.registry import Registry
from niche.registry.tasks import GeneralModelSpec, TaskSpec
from niche.reports import build_report, leaderboard, tco
from niche.settings import Settings
from tests.test_tco import ENV, GENERAL, SETTINGS, _comparison, _traffic

runner = CliRunner()
HOSTILE = "<script>alert(1)</script>"


def _champion(registry: Registry, task: str, *, accuracy: float, low: float) -> None:
    registry.models.register(
        task,
        kind="text",
        artifact_digest="ab" * 32,
        artifact_uri="file:///a",
        dataset_fingerprint="cd" * 32,
        lineage={"fit_seconds": 360.0},
    )
    registry.models.record_evaluation(
        task,
        1,
        dataset_fingerprint="cd" * 32,
        split="test",
        metrics={"n": 1000, "accuracy": accuracy, "accuracy_ci": [accuracy - 0.05, 0.94]},
        general={"accuracy": 0.85, "accuracy_ci": [0.8, 0.9]},
        comparison=_comparison(0.05, low),
        usage={"compute_s": 2.0, "input_tokens": None, "output_tokens": None, "rows": 1000},
    )
    registry.promotions.move(task, "champion", 1)


@pytest.fixture
def portfolio(registry: Registry) -> tuple[Registry, datetime]:
    now = datetime.now(UTC).replace(microsecond=0)
    general = GeneralModelSpec(
        **GENERAL, price_input_per_1m_tokens_usd=1000.0, price_output_per_1m_tokens_usd=5000.0
    )
    registry.tasks.create(
        TaskSpec(name="spam", labels=["ham", "spam"], domain=HOSTILE, general=general)
    )
    registry.tasks.create(
        TaskSpec(name="chat", labels=["ham", "spam"], domain="banking", general=general)
    )
    _champion(registry, "spam", accuracy=0.9, low=0.02)
    _champion(registry, "chat", accuracy=0.87, low=-0.01)
    day = timedelta(days=1)
    answered = {"general_label": "spam", "input_tokens": 100, "output_tokens": 20}
    records = [_traffic("spam", "general", now - 2 * day, **answered) for _ in range(2)]
    records += [_traffic("spam", "specialist", now - 3 * day, specialist_label="ham")] * 8
    records += [_traffic("chat", "general", now - 2 * day, **answered) for _ in range(2)]
    registry.traffic.record(records)
    return registry, now


def _embedded(page: str) -> Any:
    match = re.search(
        r'<script type="application/json" id="niche-data">(.*?)</script>', page, re.DOTALL
    )
    assert match is not None
    return json.loads(match.group(1))


def test_the_page_shows_the_two_views_with_plots_and_their_numbers(portfolio) -> None:
    registry, now = portfolio
    settings = Settings(**SETTINGS)
    report = build_report(settings, registry=registry, since="7d", months=6, now=now)
    board = leaderboard(settings, registry=registry, since="7d", now=now).to_dict()
    costs = tco(settings, registry=registry, months=6, now=now).to_dict()
    curve = [
        {"threshold": 0.3, "coverage": 0.9, "accuracy": 0.9},
        {"threshold": 0.5, "coverage": 0.75, "accuracy": 0.92},
    ]
    assert report.data == {
        "leaderboard": board,
        "tco": costs,
        "cascade": {"chat": curve, "spam": curve},  # as stored by tests/test_tco.py's helper
        "timelines": {},  # no monitoring check stored yet
        "alerts": [],
    }
    assert _embedded(report.html) == report.data
    # The hand-computed figures behind the tables.
    spam = next(row for row in costs["tasks"] if row["task"] == "spam")
    assert spam["verdict"] == "specialise"
    assert spam["portfolio_usd"] == pytest.approx(10.92012, rel=1e-9)
    total = costs["portfolio"]
    assert (total["general_usd"], total["specialised"]) == (pytest.approx(14.4), 1)
    assert total["savings_pct"] == pytest.approx(1.07988 / 14.4 * 100, rel=1e-9)
    page = report.html
    # Formatted in the tables: the accuracy with its interval, savings in $ and %.
    assert "<td>0.900 [0.850, 0.940]</td>" in page
    assert "<td>0.870 [0.820, 0.940]</td>" in page
    assert "<td>$12.00</td><td>$10.92</td><td>$1.08</td><td>9.0 %</td>" in page
    assert "savings <b>$1.08</b> (<b>7.5 %</b>)" in page
    assert "<td>keep general</td>" in page.replace('<td class="text">', "<td>")
    assert "<td>0.5</td><td>75.0%</td><td>0.920</td>" in page  # a cascade point
    # One plot per domain with a scored task, the cascade curves, the cost over the months.
    assert page.count("<svg") == 4
    assert page.count("</svg>") == 4
    # Self-contained: nothing to load from anywhere.
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""\b(src|href)\s*=\s*(?!["']?#)""", page)
    assert "<link" not in page and "@import" not in page


def test_registry_strings_are_escaped(portfolio) -> None:
    registry, now = portfolio
    page = build_report(Settings(**SETTINGS), registry=registry, now=now).html
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script") == 1  # only the JSON block
    # In the JSON block, the domain cannot end the script element, and still reads back.
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page
    assert _embedded(page)["tco"]["tasks"][0]["domain"] in (HOSTILE, "banking")


def test_write_is_atomic_and_refuses_a_missing_directory(portfolio, tmp_path) -> None:
    registry, now = portfolio
    report = build_report(Settings(**SETTINGS), registry=registry, now=now)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "report.html"
    target.write_text("old")
    assert report.write(target) == target
    assert target.read_text(encoding="utf-8") == report.html
    assert [p.name for p in out.iterdir()] == ["report.html"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # shareable, not mkstemp's 0600
    with pytest.raises(ValidationError, match="no directory"):
        report.write(tmp_path / "missing" / "report.html")
    with pytest.raises(ValidationError, match="is a directory"):
        report.write(tmp_path)


def test_the_cli_writes_the_file_and_prints_its_path(
    portfolio, database_url, monkeypatch, tmp_path
) -> None:
    for name, value in {**ENV, "NICHE_DATABASE_URL": database_url}.items():
        monkeypatch.setenv(name, value)
    target = tmp_path / "report.html"
    result = runner.invoke(app, ["report", "--out", str(target), "--since", "7d"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(target)
    data = _embedded(target.read_text(encoding="utf-8"))
    assert data["tco"]["months"] == 6
    assert data["tco"]["portfolio"]["savings_pct"] == pytest.approx(1.07988 / 14.4 * 100, 1e-3)
    assert data["leaderboard"]["portfolio"]["tasks"] == 2
    bad = runner.invoke(app, ["report", "--out", str(tmp_path / "no" / "r.html")])
    assert bad.exit_code == 2
    assert f"no directory '{tmp_path / 'no'}'" in bad.output


def _signal(name: str, alarm: bool, **figures: Any) -> dict[str, Any]:
    base = {"statistic": None, "p_value": None, "interval": None, "threshold": 0.01, "n": 80}
    return {"name": name, "alarm": alarm, "method": "test", "detail": {}, **base, **figures}


def test_drift_and_agreement_timelines_and_open_alerts(portfolio) -> None:
    registry, now = portfolio
    quiet = [
        _signal("input_drift", False, statistic=0.1, p_value=0.4),
        _signal("agreement", False, statistic=0.91, interval=[0.85, 0.95], threshold=0.8),
        _signal("prediction_drift", False, detail={"insufficient": "too few rows"}),
    ]
    drifted = [
        _signal("input_drift", True, statistic=9.0, p_value=1e-6),
        _signal("agreement", True, statistic=0.62, interval=[0.55, 0.69], threshold=0.8),
    ]
    for at, signals in ((now - timedelta(days=2), quiet), (now - timedelta(days=1), drifted)):
        alarm = any(s["alarm"] for s in signals)
        registry.monitoring.record(
            "spam", model_version=1, window={"rows": 80}, signals=signals, alarm=alarm, at=at
        )
    report = build_report(Settings(**SETTINGS), registry=registry, now=now)
    points = report.data["timelines"]["spam"]
    assert [p["alarm"] for p in points] == [False, True]  # oldest first
    assert points[0]["signals"]["agreement"]["interval"] == [0.85, 0.95]
    assert "prediction_drift" not in points[0]["signals"]  # too little data to plot
    assert points[1]["signals"]["input_drift"]["p_value"] == 1e-6
    assert list(report.data["timelines"]) == ["spam"]  # chat has no check
    assert sorted(a["signal"] for a in report.data["alerts"]) == ["agreement", "input_drift"]
    page = report.html
    assert _embedded(page) == report.data
    assert "<h2>Drift and agreement</h2>" in page
    assert 'aria-label="drift and agreement of spam"' in page
    assert page.count("<svg") == 5  # the four of the first test and the timeline
    assert "<td>1e-06 ⚠</td>" in page  # the alarmed p-value in the timeline's table
    assert "<h3>Open alerts</h3>" in page
