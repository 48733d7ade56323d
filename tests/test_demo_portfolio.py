"""``niche demo portfolio`` (what ``make demo`` runs) on small slices of the real datasets:
four tasks in three domains, each built by the quickstart, a real ``niche serve`` in a
subprocess taking their traffic, one stored monitoring check each; then the leaderboard, the
cost of ownership and the report over the same registry (SQLite, the demo's default)."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from niche.cli import app
from niche.data import resolve_dataset
from niche.errors import ValidationError
from niche.registry import Registry
from niche.reports import build_report, leaderboard, tco
from niche.settings import Settings
from niche.workflows.data import DataSpec
from niche.workflows.portfolio import PortfolioTask, build_portfolio

pytestmark = pytest.mark.slow

# Rows per label of each slice, and labels per slice: small enough to train in seconds,
# large enough for the specialist to beat the zero-shot general model on the held-out rows.
PER_LABEL = 40
LABELS = 4


def _slice(path: Path, dataset: str, labels: int = LABELS, per_label: int = PER_LABEL) -> Path:
    """``per_label`` rows of each of the first ``labels`` labels of a catalog dataset's train
    split, as a CSV with the default column names."""
    rows = resolve_dataset(dataset).train
    chosen = sorted(set(rows.labels))[:labels]
    taken = dict.fromkeys(chosen, 0)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for text, label in zip(rows.texts, rows.labels, strict=True):
            if taken.get(label, per_label) < per_label:
                taken[label] += 1
                writer.writerow([text, label])
    return path


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> list[PortfolioTask]:
    where = tmp_path_factory.mktemp("slices")

    def task(name: str, domain: str, dataset: str, requests: int, **kw: int) -> PortfolioTask:
        csv_path = _slice(where / f"{name}.csv", dataset, **kw)
        return PortfolioTask(name, domain, DataSpec(data=csv_path), requests)

    return [
        task("support", "banking", "banking77", 30),
        task("assistant.banking", "banking", "clinc150/banking", 20),
        task("spam", "messaging", "sms_spam", 20, labels=2, per_label=60),
        task("assistant.travel", "travel", "clinc150/travel", 15),
    ]


def _embedded(page: str) -> Any:
    match = re.search(
        r'<script type="application/json" id="niche-data">(.*?)</script>', page, re.DOTALL
    )
    assert match is not None
    return json.loads(match.group(1))


def test_the_portfolio_has_champions_by_domain_traffic_checks_verdicts_and_a_report(
    cli_env: Path, slices: list[PortfolioTask], tmp_path: Path
) -> None:
    settings = Settings()
    steps: list[str] = []
    result = build_portfolio(settings, portfolio=slices, on_step=lambda s: steps.append(s.name))

    assert [t.task for t in result.tasks] == [t.name for t in slices]
    assert {t.built for t in result.tasks} == {"trained"}
    champions = [t for t in result.tasks if t.champion is not None]
    assert len(champions) >= 3, [t.to_dict() for t in result.tasks]
    assert len({t.domain for t in champions}) >= 2
    assert steps == ["task"] * 4 + ["gateway"] + ["traffic"] * 4 + ["monitor"] * len(champions)
    for task, item in zip(result.tasks, slices, strict=True):
        assert task.traffic["sent"] == item.requests
        assert task.traffic["errors"] == {}
    assert set(result.timings_s) == {"build", "gateway", "traffic", "monitor"}

    now = datetime.now(UTC)
    with Registry(settings=settings) as registry:
        board = leaderboard(settings, registry=registry, now=now).to_dict()
        costs = tco(settings, registry=registry, now=now).to_dict()
        report = build_report(settings, registry=registry, now=now)
        stored = {task: len(registry.monitoring.reports(task)) for task in ("support", "spam")}
    by_domain = {d["name"]: [row["task"] for row in d["tasks"]] for d in board["domains"]}
    assert by_domain == {
        "banking": ["assistant.banking", "support"],
        "messaging": ["spam"],
        "travel": ["assistant.travel"],
    }
    rows = {row["task"]: row for d in board["domains"] for row in d["tasks"]}
    # The traffic went through the gateway: shares as sent (85 requests in all).
    assert rows["support"]["traffic_share"] == pytest.approx(30 / 85)
    assert rows["assistant.travel"]["traffic_share"] == pytest.approx(15 / 85)
    assert all(row["cascade_rate"] is not None for row in rows.values())
    verdicts = {row["task"]: row["verdict"] for row in costs["tasks"]}
    assert set(verdicts) == set(rows)
    assert set(verdicts.values()) <= {"specialise", "keep general", "need more data"}
    assert all(row["reason"] for row in costs["tasks"])
    # Priced as a hosted frontier model (the zero-shot stand-in costs nothing), said as a source.
    price = "general.price_input/output_per_1m_tokens_usd=2.5/10 USD per 1M"
    assert all(any(price in source for source in row["sources"]) for row in costs["tasks"])
    assert "specialise" in verdicts.values(), costs["tasks"]
    # The report's embedded JSON is exactly the two views, and shows each check's timeline.
    data = _embedded(report.html)
    assert data["leaderboard"] == board
    assert data["tco"] == costs
    assert {t.task for t in champions} <= set(data["timelines"])
    assert stored == {"support": 1, "spam": 1}
    path = report.write(tmp_path / "report.html")
    assert _embedded(path.read_text(encoding="utf-8")) == data

    # A re-run reuses each champion: no new version, one more check, the same tags.
    again = build_portfolio(settings, portfolio=slices)
    assert [(t.task, t.built, t.champion) for t in again.tasks if t.champion] == [
        (t.task, "reused", t.champion) for t in champions
    ]
    with Registry(settings=settings) as registry:
        assert len(registry.monitoring.reports("support")) == 2
        assert registry.models.get("support", "champion").version == 1
        assert [r.spec.domain for r in registry.tasks.all()] == [
            "banking",
            "travel",
            "messaging",
            "banking",
        ]


def test_bad_input_is_refused_before_any_work(
    slices: list[PortfolioTask], niche_home: Path
) -> None:
    with pytest.raises(ValidationError, match="at least one task"):
        build_portfolio(Settings(), portfolio=[])
    with pytest.raises(ValidationError, match="lists support more than once"):
        build_portfolio(Settings(), portfolio=[slices[0], slices[0]])
    with pytest.raises(ValidationError, match=re.escape("feedback share must be in [0, 1]")):
        build_portfolio(Settings(), portfolio=slices, feedback_share=1.5)
    with pytest.raises(ValidationError, match=re.escape("got (-1.0, 10.0)")):
        build_portfolio(Settings(), portfolio=slices, general_prices=(-1.0, 10.0))
    assert not (niche_home / "niche.db").exists()


def test_the_cli_prints_the_leaderboard_the_verdicts_and_the_report_path(
    cli_env: Path, slices: list[PortfolioTask], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from niche.workflows import quickstart

    support, assistant = slices[:2]
    # Built by an earlier `niche quickstart`: a champion, no domain tag.
    quickstart(assistant.data, Settings(), task=assistant.name)
    monkeypatch.setattr("niche.workflows.portfolio.DEFAULT_PORTFOLIO", (support, assistant))
    runner = CliRunner()
    out = tmp_path / "portfolio.html"
    result = runner.invoke(app, ["demo", "portfolio", "--json", "--report", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [(t["task"], t["built"], t["domain"]) for t in payload["tasks"]] == [
        ("support", "trained", "banking"),
        ("assistant.banking", "reused", "banking"),  # tagged with the portfolio's domain
    ]
    assert payload["report"] == str(out)
    assert set(payload["timings_s"]) == {"build", "gateway", "traffic", "monitor", "report"}
    data = _embedded(out.read_text(encoding="utf-8"))
    assert data["leaderboard"] == payload["leaderboard"]
    assert data["tco"] == payload["tco"]

    # A domain the user gives a task stays; the report goes to $NICHE_HOME/report.html.
    with Registry(settings=Settings()) as registry:
        registry.tasks.update("support", domain="support-desk")
    result = runner.invoke(app, ["demo", "portfolio"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "banking — score" in text and "support-desk — score" in text
    assert re.search(r"^support: (specialise|keep general|need more data) — ", text, re.M), text
    assert text.rstrip().endswith(str(cli_env / "report.html"))
    assert (cli_env / "report.html").is_file()
