"""/metrics shows each task's latest monitoring check, through the real ASGI app and a real
registry; a registry that cannot be read leaves serving and the last values alone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from niche.errors import DatabaseError
from niche.gateway import Gateway
from niche.gateway.metrics import GatewayMetrics, MonitoringGauges
from niche.registry import Registry
from niche.settings import Settings
from tests.gateway_support import SPAM, TASK, in_process, register_portfolio, until

pytestmark = pytest.mark.anyio


def _signal(name: str, *, statistic: float | None, p_value: float | None, alarm: bool) -> dict:
    return {
        "name": name,
        "statistic": statistic,
        "p_value": p_value,
        "interval": None,
        "threshold": 0.01,
        "alarm": alarm,
        "method": "test",
    }


def _lines(metrics: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of metric ``name``'s series."""
    found = {}
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found[labels] = float(value)
    return found


async def test_a_stored_check_shows_in_metrics_and_a_signal_gone_is_removed(
    niche_home: Path, encoder_cache_dir: Path, trained, serving_encoder
) -> None:
    settings = Settings(
        home=str(niche_home), cache_dir=str(encoder_cache_dir), gateway_refresh_s=0.05
    )
    register_portfolio(settings, trained)
    app = Gateway(settings, encoder=serving_encoder)
    async with in_process(app) as http:
        metrics = (await http.get("/metrics")).text
        assert _lines(metrics, "niche_monitor_alarm") == {}
        with Registry(settings=settings) as registry:
            first, _, _ = registry.monitoring.record(
                TASK,
                model_version=1,
                window={"rows": 500},
                signals=[
                    _signal("input_drift", statistic=0.031, p_value=0.004, alarm=True),
                    _signal("agreement", statistic=0.93, p_value=None, alarm=False),
                ],
                alarm=True,
            )

        async def shown() -> bool:
            text = (await http.get("/metrics")).text
            return bool(_lines(text, "niche_monitor_alarm"))

        await until(shown)
        metrics = (await http.get("/metrics")).text
        key = f'{{signal="input_drift",task="{TASK}"}}'
        agreement = f'{{signal="agreement",task="{TASK}"}}'
        assert _lines(metrics, "niche_monitor_statistic") == {key: 0.031, agreement: 0.93}
        assert _lines(metrics, "niche_monitor_p_value") == {key: 0.004}
        assert _lines(metrics, "niche_monitor_alarm") == {key: 1.0, agreement: 0.0}
        checked = _lines(metrics, "niche_monitor_checked_timestamp_seconds")
        assert checked == {f'{{task="{TASK}"}}': first.at.timestamp()}

        # The next check has no agreement signal and input drift back in bounds.
        with Registry(settings=settings) as registry:
            registry.monitoring.record(
                TASK,
                model_version=1,
                window={"rows": 500},
                signals=[_signal("input_drift", statistic=0.002, p_value=0.61, alarm=False)],
                alarm=False,
            )

        async def updated() -> bool:
            text = (await http.get("/metrics")).text
            return _lines(text, "niche_monitor_alarm") == {key: 0.0}

        await until(updated)
        metrics = (await http.get("/metrics")).text
        assert _lines(metrics, "niche_monitor_statistic") == {key: 0.002}
        assert _lines(metrics, "niche_monitor_p_value") == {key: 0.61}
        # Serving went on meanwhile.
        predicted = await http.post(f"/v1/tasks/{TASK}/predict", json={"inputs": [SPAM]})
        assert predicted.status_code == 200


async def test_a_registry_that_cannot_be_read_keeps_the_last_values_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from datetime import UTC, datetime

    from niche.registry.records import DriftReportRecord

    report = DriftReportRecord(
        id=1,
        task="tickets",
        model_version=2,
        at=datetime(2026, 3, 1, 12, tzinfo=UTC),
        window={},
        signals=[_signal("input_drift", statistic=0.1, p_value=0.001, alarm=True)],
        alarm=True,
    )
    stored = {"tickets": report}
    reads = {"fail": False, "count": 0}

    def read() -> dict[str, DriftReportRecord]:
        reads["count"] += 1
        if reads["fail"]:
            raise DatabaseError("the registry database cannot be reached")
        return dict(stored)

    metrics = GatewayMetrics()
    gauges = MonitoringGauges(read, metrics)

    async def tick() -> None:
        gauges.tick()
        running = gauges._running
        assert running is not None
        await running

    await tick()
    reads["fail"] = True
    with caplog.at_level(logging.DEBUG, "niche.gateway"):
        await tick()
        await tick()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeps the last ones" in warnings[0].getMessage()
    text = metrics.render().decode()
    assert _lines(text, "niche_monitor_alarm") == {'{signal="input_drift",task="tickets"}': 1.0}
    # Back: the task's checks are gone now (a task removed), and so are its series.
    reads["fail"] = False
    stored.clear()
    await tick()
    assert gauges.failing is False
    text = metrics.render().decode()
    assert _lines(text, "niche_monitor_alarm") == {}
    assert _lines(text, "niche_monitor_checked_timestamp_seconds") == {}
    assert reads["count"] == 4
    await gauges.aclose()
