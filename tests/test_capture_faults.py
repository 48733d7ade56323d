"""Capture that one record cannot stop, on a real SQLite and a real PostgreSQL registry.

Poison requests (a blank model, a model longer than its column, NUL bytes) are cleaned when
their records are built; a record the database still refuses is split out of its batch into
the dead-letter file; a database outage keeps records queued (bounded, then dead-lettered);
spend is written whatever the records do; old records are pruned in batches. Through the real
gateway in-process (httpx2's ASGI transport) with real specialists, or the real capture writer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from niche.cli import app as cli
from niche.errors import DatabaseError, ValidationError
from niche.gateway import Gateway
from niche.gateway.capture import CaptureWriter, is_transient
from niche.registry import Registry, TrafficRecord
from niche.registry.clipping import BLANK_MODEL, clean_traffic
from niche.registry.deadletters import DeadLetterFile
from niche.settings import Settings
from tests.clocks import START
from tests.gateway_support import (
    HAM,
    SPAM,
    TASK,
    in_process,
    register_portfolio,
    until,
)

runner = CliRunner()
ARRIVAL = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOO_BIG = 2**63  # no database integer column holds it: a data error that cleaning lets pass

REDACTOR = (
    "import dataclasses\n"
    "def poison(record):\n"
    "    # An upstream-style bad value the database refuses (integer out of range).\n"
    "    if 'POISON' in str(record.input):\n"
    f"        return dataclasses.replace(record, input_tokens={TOO_BIG})\n"
    "    return record\n"
)


@pytest.fixture
def settings_for(niche_home: Path, encoder_cache_dir: Path, database_url: str, trained):
    base = {
        "home": str(niche_home),
        "cache_dir": str(encoder_cache_dir),
        "database_url": database_url,
    }
    register_portfolio(Settings(**base), trained)

    def make(**overrides: Any) -> Settings:
        # A long flush interval: the test flushes explicitly, so a whole run is one batch.
        return Settings(**{**base, "gateway_capture_flush_ms": 60_000.0, **overrides})

    return make


def _chat(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def _metric(body: bytes, name: str) -> float:
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
@pytest.mark.anyio
async def test_poison_requests_then_100_good_ones_all_recorded_with_arrival_and_compute(
    settings_for, serving_encoder
):
    settings = settings_for(gateway_capture_max_input_bytes=4096)
    app = Gateway(settings, encoder=serving_encoder, wall_clock=ARRIVAL.timestamp)
    long_model = "m" * 300
    async with in_process(app) as http:
        poisons = [
            _chat("   ", "a blank model"),  # refused by the store's check on main (SQLite too)
            _chat(long_model, "a model longer than its column"),  # PostgreSQL: value too long
            _chat("gpt\x00nul", "a NUL byte in the model"),  # PostgreSQL: NUL in text
            _chat(TASK, f"{SPAM}\x00 and a NUL byte in the text"),
            _chat(TASK, SPAM + " x" * 100_000),  # a 200 KB input, clipped to 4 KB
        ]
        statuses = [
            (await http.post("/v1/chat/completions", json=body)).status_code for body in poisons
        ]
        assert statuses == [404, 404, 404, 200, 200]
        for i in range(100):
            answered = await http.post("/v1/chat/completions", json=_chat(TASK, f"{HAM} {i}"))
            assert answered.status_code == 200
        await app.capture.flush()
        assert app.capture.pending == 0 and app.capture.failures == 0
        metrics = (await http.get("/metrics")).content
    assert _metric(metrics, "niche_capture_cleaned_total") == 5.0  # counted, none lost
    assert _metric(metrics, "niche_capture_dead_letters_total") == 0.0
    with Registry(settings=settings) as registry:
        records = sorted(registry.traffic.query(), key=lambda r: r.id)
    good = [r for r in records if r.task == TASK and f"{HAM} " in str(r.input)]
    assert len(good) == 100 and all(not r.cleaned for r in good)
    # Arrival time (the injected wall clock, less each request's duration), not write time.
    assert all(ARRIVAL - timedelta(seconds=5) < r.at <= ARRIVAL for r in records)
    # Usage on the record: the specialist's compute seconds, which its cost derives from.
    assert all(r.compute_s is not None and r.compute_s > 0 for r in good)
    cpu_hour_usd = settings.get("NICHE_CPU_HOUR_USD")
    assert all(r.cost_usd == pytest.approx(r.compute_s * cpu_hour_usd / 3600) for r in good)
    blank, long_, nul, nul_text, big = records[:5]
    assert (blank.model, blank.route, blank.status, blank.cleaned) == (
        BLANK_MODEL,
        "error",
        404,
        True,
    )
    assert long_.model == "m" * 200 and long_.cleaned
    assert nul.model == "gptnul" and nul.cleaned
    assert "\x00" not in nul_text.input[0]["content"] and nul_text.cleaned
    assert nul_text.input_bytes is None  # not clipped
    assert nul_text.specialist_label == "spam"
    assert big.cleaned and big.input_bytes > 200_000
    assert len(orjson.dumps(big.input)) <= 4096
    assert big.input[0]["content"].startswith(SPAM)


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_record_the_database_refuses_is_split_out_dead_lettered_counted_and_listed(
    settings_for, serving_encoder, monkeypatch, tmp_path
):
    (tmp_path / "poisoner.py").write_text(REDACTOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = settings_for(gateway_redact="poisoner:poison")
    app = Gateway(settings, encoder=serving_encoder)
    engine = app.registry.database.engine()
    inserts: list[int] = []

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TRAFFIC"):
            inserts.append(len(parameters))

    sa.event.listen(engine, "before_cursor_execute", on_execute)
    async with in_process(app) as http:
        for i in range(101):
            text = f"{HAM} POISON" if i == 40 else f"{HAM} {i}"
            assert (
                await http.post("/v1/chat/completions", json=_chat(TASK, text))
            ).status_code == 200
        assert await app.capture.flush() == 100  # one batch of 101, split around the bad one
        assert (app.capture.pending, app.capture.dead_lettered) == (0, 1)
        # Capture goes on: later requests are written at the next flush.
        assert (await http.post("/v1/chat/completions", json=_chat(TASK, HAM))).status_code == 200
        assert await app.capture.flush() == 1
        metrics = (await http.get("/metrics")).content
    sa.event.remove(engine, "before_cursor_execute", on_execute)
    assert inserts[0] == 101 and len(inserts) > 3 and sum(inserts) > 101  # bisection
    assert _metric(metrics, 'niche_capture_dead_letters_total{reason="data-error"}') == 1.0
    with Registry(settings=settings) as registry:
        stored = [
            r.input[0]["content"] for r in sorted(registry.traffic.query(TASK), key=lambda r: r.id)
        ]
    assert stored == [f"{HAM} {i}" for i in range(101) if i != 40] + [HAM]

    listed = runner.invoke(cli, ["traffic", "dead-letters", "--json"])
    assert listed.exit_code == 0, listed.output
    (letter,) = json.loads(listed.stdout)
    assert (letter["kind"], letter["reason"]) == ("record", "data-error")
    assert letter["error"] in ("DataError", "OverflowError")  # PostgreSQL / SQLite's driver
    assert letter["record"]["input"] == [{"role": "user", "content": f"{HAM} POISON"}]
    assert letter["record"]["input_tokens"] == TOO_BIG
    table = runner.invoke(cli, ["traffic", "dead-letters"])
    assert table.exit_code == 0 and "dead letters" in table.stdout and "record" in table.stdout


# -- the capture writer on a real registry -------------------------------------------------------


def _traffic(i: int, **fields: Any) -> TrafficRecord:
    return TrafficRecord(
        model="t", route="specialist", input=f"text {i}", latency_ms=1.0, status=200, **fields
    )


def test_spend_is_written_although_every_record_of_the_batch_is_refused(registry, tmp_path):
    key, _ = registry.keys.create(scope="inference", budget_usd=1.0)
    letters = DeadLetterFile(tmp_path / "dead")

    async def main() -> CaptureWriter:
        writer = CaptureWriter(registry, flush_s=60.0, dead_letters=letters)
        writer.submit(_traffic(0, input_tokens=TOO_BIG), spend=(key.id, 0.25))
        writer.submit(_traffic(1, output_tokens=TOO_BIG), spend=(key.id, 0.25))
        assert await writer.flush() == 0
        writer.submit(_traffic(2), spend=(key.id, 0.125))
        assert await writer.flush() == 1
        return writer

    writer = asyncio.run(main())
    assert registry.keys.all()[0].spent_usd == 0.625
    assert [r.input for r in registry.traffic.query()] == ["text 2"]
    assert [(d.reason, d.record["input"]) for d in letters.read()] == [
        ("data-error", "text 0"),
        ("data-error", "text 1"),
    ]
    assert (writer.pending, writer.dead_lettered, writer.pending_spend(key.id)) == (0, 2, 0.0)


class _Outage:
    """The real registry's traffic store behind a switch: while ``down``, every write fails as
    an unreachable database does."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.down = True
        self.attempts = 0

    def record(self, records):
        self.attempts += 1
        if self.down:
            raise DatabaseError("cannot use the registry database: connection refused")
        return self.registry.traffic.record(records)


def test_an_outage_keeps_records_queued_overflow_and_shutdown_go_to_the_dead_letter_file(
    registry, tmp_path
):
    letters = DeadLetterFile(tmp_path / "dead")
    outage = _Outage(registry)
    store = SimpleNamespace(traffic=outage, keys=registry.keys)

    async def main() -> CaptureWriter:
        writer = CaptureWriter(store, flush_s=60.0, dead_letters=letters, max_pending=5)
        for i in range(8):
            writer.submit(_traffic(i))
        assert await writer.flush() == 0  # transient: kept, not split, not dead-lettered
        assert (writer.pending, writer.failures) == (5, 1)
        assert [d.record["input"] for d in letters.read()] == ["text 0", "text 1", "text 2"]
        outage.down = False
        assert await writer.flush() == 5  # the database is back: the queue drains
        outage.down = True
        writer.submit(_traffic(8))
        await writer.aclose(attempts=2)  # still down at shutdown: into the file, not lost
        return writer

    writer = asyncio.run(main())
    assert [r.input for r in registry.traffic.query()] == [f"text {i}" for i in range(3, 8)]
    assert [(d.reason, d.record["input"]) for d in letters.read()] == [
        ("queue-full", "text 0"),
        ("queue-full", "text 1"),
        ("queue-full", "text 2"),
        ("shutdown", "text 8"),
    ]
    assert (writer.pending, writer.dead_lettered) == (0, 4)


def test_the_background_writer_backs_off_and_writes_once_the_database_returns(registry, tmp_path):
    outage = _Outage(registry)
    store = SimpleNamespace(traffic=outage, keys=registry.keys)

    async def main() -> CaptureWriter:
        writer = CaptureWriter(store, flush_s=0.01, backoff_max_s=0.05, dead_letters=None)
        writer.start()
        writer.submit(_traffic(0))
        while outage.attempts < 4:  # retried with backoff, never split nor dropped
            await asyncio.sleep(0.01)
        assert writer.pending == 1 and writer.dead_lettered == 0
        outage.down = False
        while writer.pending:
            await asyncio.sleep(0.01)
        await writer.aclose()
        return writer

    writer = asyncio.run(main())
    assert [r.input for r in registry.traffic.query()] == ["text 0"]
    assert writer.written == 1


def test_only_connection_errors_are_transient():
    assert is_transient(DatabaseError("cannot use the registry database: locked"))
    assert is_transient(ConnectionResetError())
    assert is_transient(sa.exc.OperationalError("INSERT", {}, Exception("server closed")))
    assert not is_transient(sa.exc.IntegrityError("INSERT", {}, Exception("FOREIGN KEY")))
    assert not is_transient(sa.exc.DataError("INSERT", {}, Exception("value too long")))
    assert not is_transient(ValidationError("model must be a non-empty string"))


def test_cleaning_cuts_strings_to_their_columns_and_the_input_to_its_cap():
    record = TrafficRecord(
        task="t",
        model=" \t ",
        route="passthrough",
        input={"messages": [{"role": "user", "content": "é" * 5000}], "nul\x00key": "a\x00b"},
        latency_ms=1.0,
        status=200,
        general_answer="answer\x00" * 10_000,
        specialist_label="ok",
    )
    cleaned = clean_traffic(record, max_input_bytes=1000)
    assert cleaned.model == BLANK_MODEL and cleaned.cleaned
    assert cleaned.input_bytes == len(orjson.dumps(record.input))
    assert len(orjson.dumps(cleaned.input)) <= 1000
    assert cleaned.input["nulkey"] == "ab"
    assert "\x00" not in cleaned.general_answer
    assert len(cleaned.general_answer.encode()) <= 1000
    untouched = clean_traffic(_traffic(1, specialist_label="ok"))
    assert untouched == _traffic(1, specialist_label="ok") and untouched.input_bytes is None
    nul = clean_traffic(
        dataclasses.replace(_traffic(1), general_answer="yes\x00", input=["\x00", "\ud800"])
    )
    assert (nul.general_answer, nul.input, nul.input_bytes, nul.cleaned) == (
        "yes",
        ["", "?"],
        None,
        True,
    )


# -- retention ----------------------------------------------------------------------------------


def test_prune_deletes_old_records_in_batches(registry):
    old = [_traffic(i, at=START - timedelta(days=40, seconds=i)) for i in range(25)]
    new = [_traffic(100 + i, at=START - timedelta(days=1)) for i in range(3)]
    registry.traffic.record(old + new)
    engine = registry.database.engine()
    deletes: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement)

    sa.event.listen(engine, "before_cursor_execute", on_execute)
    try:
        assert registry.traffic.prune(START - timedelta(days=30), batch_size=10) == 25
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)
    assert len(deletes) == 3  # 10, 10, then the last 5
    assert [r.input for r in registry.traffic.query()] == ["text 100", "text 101", "text 102"]
    assert registry.traffic.prune(START - timedelta(days=30)) == 0
    with pytest.raises(ValidationError, match="batch_size"):
        registry.traffic.prune(START, batch_size=0)


def test_cli_prunes_by_age_or_retention_setting_and_says_what_it_deleted(niche_home, monkeypatch):
    now = datetime.now(UTC)
    with Registry(settings=Settings()) as registry:
        registry.traffic.record(
            [_traffic(i, at=now - timedelta(days=d)) for i, d in enumerate((90, 45, 10, 0))]
        )
    pruned = runner.invoke(cli, ["traffic", "prune", "--older-than", "60d", "--json"])
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.stdout)["deleted"] == 1
    monkeypatch.setenv("NICHE_TRAFFIC_RETENTION_DAYS", "30")
    by_setting = runner.invoke(cli, ["traffic", "prune", "--batch-size", "1"])
    assert by_setting.exit_code == 0, by_setting.output
    assert by_setting.stdout.startswith("deleted 1 traffic record(s) from before ")
    listed = runner.invoke(cli, ["traffic", "--json"])
    assert [r["input"] for r in json.loads(listed.stdout)] == ["text 2", "text 3"]


def test_with_a_retention_the_gateway_writer_prunes_old_records(registry):
    old = [_traffic(i, at=START - timedelta(days=40)) for i in range(3)]
    registry.traffic.record([*old, _traffic(9, at=START - timedelta(days=1))])

    async def main() -> CaptureWriter:
        writer = CaptureWriter(
            registry,
            flush_s=0.01,
            retention_s=30 * 86_400.0,
            prune_every_s=60.0,
            clock=lambda: START,
        )
        writer.start()
        await until(lambda: writer.pruned == 3)
        await writer.aclose()
        return writer

    asyncio.run(main())
    assert [r.input for r in registry.traffic.query()] == ["text 9"]
