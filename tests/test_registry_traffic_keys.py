"""API keys and captured traffic in the registry, on real SQLite and real PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from niche.cli import app
from niche.errors import NotFoundError, ValidationError
from niche.registry import KeyRecord, Registry, TrafficRecord
from niche.registry.models import Base
from niche.registry.since import parse_since
from tests.clocks import START

runner = CliRunner()


def _all_rows_as_text(registry: Registry) -> str:
    """Every value of every registry table, as one string (to search for leaked secrets)."""
    with registry.database.engine().connect() as connection:
        return "\n".join(
            repr(tuple(row))
            for table in Base.metadata.sorted_tables
            for row in connection.execute(sa.select(table))
        )


def _traffic(**fields: Any) -> TrafficRecord:
    values: dict[str, Any] = {
        "model": "tickets",
        "route": "specialist",
        "input": "my card has not arrived",
        "latency_ms": 3.5,
        "status": 200,
    }
    return TrafficRecord(**(values | fields))


# -- keys ------------------------------------------------------------------------------------


def test_a_created_key_verifies_and_its_secret_is_never_stored(registry: Registry) -> None:
    record, secret = registry.keys.create(scope="inference", budget_usd=5.0, name="ci")
    assert secret.startswith("nk-") and len(secret) > 40
    assert record.prefix == secret[:8]
    assert (record.name, record.scope, record.budget_usd, record.spent_usd) == (
        "ci",
        "inference",
        5.0,
        0.0,
    )
    assert record.created_at == START and not record.revoked
    assert registry.keys.verify(secret) == record
    assert registry.keys.verify(secret + "x") is None
    assert registry.keys.verify("") is None

    stored = _all_rows_as_text(registry)
    assert secret not in stored and secret[8:] not in stored
    assert registry.keys.all() == [record]
    listed = json.dumps([key.to_dict() for key in registry.keys.all()])
    assert secret not in listed and "sha256" not in listed


def test_two_keys_never_share_a_secret(registry: Registry) -> None:
    (a, secret_a), (b, secret_b) = (registry.keys.create(scope="admin") for _ in range(2))
    assert secret_a != secret_b and a.id != b.id
    assert registry.keys.verify(secret_b) == b
    assert [key.id for key in registry.keys.all()] == [a.id, b.id]


def test_revoked_keys_stop_verifying_by_id_or_prefix(registry: Registry) -> None:
    first, first_secret = registry.keys.create(scope="inference")
    second, second_secret = registry.keys.create(scope="admin")
    revoked = registry.keys.revoke(first.prefix)
    assert revoked.id == first.id and revoked.revoked_at is not None
    assert registry.keys.verify(first_secret) is None
    assert registry.keys.revoke(str(second.id)).revoked
    assert registry.keys.verify(second_secret) is None
    # Revoking again keeps the first revocation time.
    assert registry.keys.revoke(first.id).revoked_at == revoked.revoked_at
    assert all(key.revoked for key in registry.keys.all())
    with pytest.raises(NotFoundError, match="nk-nope"):
        registry.keys.revoke("nk-nope")
    with pytest.raises(NotFoundError):
        registry.keys.revoke(999)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"scope": "root"}, "scope"),
        ({"scope": "inference", "budget_usd": -1.0}, "negative"),
        ({"scope": "inference", "budget_usd": float("nan")}, "finite"),
        ({"scope": "inference", "name": "  "}, "name"),
    ],
)
def test_bad_key_settings_create_nothing(
    registry: Registry, fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        registry.keys.create(**fields)
    assert registry.keys.all() == []


def test_spend_adds_up_under_concurrent_writers(registry: Registry) -> None:
    record, _ = registry.keys.create(scope="inference", budget_usd=100.0)
    errors: list[BaseException] = []

    def spend() -> None:
        try:
            for _ in range(25):
                registry.keys.add_spend(record.id, 0.25)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    (key,) = registry.keys.all()
    assert key.spent_usd == 25.0 and key.remaining_usd == 75.0 and not key.exhausted


def test_a_key_is_exhausted_once_its_budget_is_spent(registry: Registry) -> None:
    record, secret = registry.keys.create(scope="inference", budget_usd=1.0)
    assert registry.keys.add_spend(record.id, 0.5).remaining_usd == 0.5
    spent = registry.keys.add_spend(record.id, 0.75)
    assert spent.spent_usd == 1.25 and spent.remaining_usd == 0.0 and spent.exhausted
    assert registry.keys.verify(secret) == spent  # still valid: the budget is the caller's check
    unlimited, _ = registry.keys.create(scope="admin")
    assert (
        unlimited.remaining_usd is None and not registry.keys.add_spend(unlimited.id, 1e6).exhausted
    )
    with pytest.raises(ValidationError, match="negative"):
        registry.keys.add_spend(record.id, -0.1)
    with pytest.raises(NotFoundError):
        registry.keys.add_spend(12345, 0.1)


def test_key_records_are_plain_values(registry: Registry) -> None:
    record, _ = registry.keys.create(scope="admin", budget_usd=2.0)
    assert isinstance(record, KeyRecord)
    payload = record.to_dict()
    assert payload["remaining_usd"] == 2.0 and payload["exhausted"] is False
    assert payload["created_at"] == "2026-03-01T12:00:00+00:00" and payload["revoked_at"] is None
    with pytest.raises(AttributeError):
        record.spent_usd = 1.0  # type: ignore[misc]


# -- traffic ---------------------------------------------------------------------------------


def test_a_thousand_records_are_stored_in_one_batch(registry: Registry) -> None:
    key, _ = registry.keys.create(scope="inference")
    records = [
        _traffic(
            task=("a", "b", None)[i % 3],
            route=("specialist", "specialist-fallback", "passthrough")[i % 3],
            input=[{"role": "user", "content": f"message {i}"}],
            specialist_label="billing" if i % 3 == 0 else None,
            specialist_confidence=0.9 if i % 3 == 0 else None,
            model_version=2 if i % 3 == 0 else None,
            cost_usd=0.001,
            key_id=key.id,
            at=START + timedelta(seconds=i),
        )
        for i in range(1000)
    ]
    engine = registry.database.engine()
    inserts: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement)

    sa.event.listen(engine, "before_cursor_execute", on_execute)
    try:
        assert registry.traffic.record(records) == 1000
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)
    assert len(inserts) == 1

    assert registry.traffic.count() == 1000
    assert registry.traffic.count("a") == 334 and registry.traffic.count("b") == 333
    assert registry.traffic.count("unknown") == 0
    since = START + timedelta(seconds=900)
    assert registry.traffic.count(since=since) == 100
    assert registry.traffic.count("a", since=since) == 34

    listed = registry.traffic.query("a", since=since)
    assert [r.at for r in listed] == sorted(r.at for r in listed)
    assert listed[0].at == since and listed[0].input == [{"role": "user", "content": "message 900"}]
    assert (listed[0].specialist_label, listed[0].model_version, listed[0].key_id) == (
        "billing",
        2,
        key.id,
    )
    newest = registry.traffic.query(limit=3)
    assert [r.at - START for r in newest] == [timedelta(seconds=s) for s in (997, 998, 999)]
    assert registry.traffic.query(limit=0) == []
    assert len({r.id for r in registry.traffic.query()}) == 1000


def test_records_without_a_time_take_the_registry_clock(registry: Registry) -> None:
    assert registry.traffic.record([_traffic(), _traffic(task="a", input="hello")]) == 2
    first, second = registry.traffic.query()
    assert first.at == second.at == START
    assert first.task is None and second.to_dict() == {
        "id": second.id,
        "task": "a",
        "model": "tickets",
        "route": "specialist",
        "input": "hello",
        "specialist_label": None,
        "specialist_confidence": None,
        "model_version": None,
        "general_answer": None,
        "general_label": None,
        "alias": None,
        "shadow": False,
        "latency_ms": 3.5,
        "input_tokens": None,
        "output_tokens": None,
        "cost_usd": 0.0,
        "key_id": None,
        "status": 200,
        "compute_s": None,
        "input_bytes": None,
        "cleaned": False,
        "request_id": None,
        "text": None,
        "sampled": False,
        "gold_label": None,
        "gold_at": None,
        "at": "2026-03-01T12:00:00+00:00",
    }
    assert registry.traffic.record([]) == 0


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"model": ""}, ValidationError),
        ({"latency_ms": -1.0}, ValidationError),
        ({"status": "200"}, ValidationError),
        ({"at": datetime(2026, 3, 1)}, ValidationError),
        ({"key_id": 424242}, NotFoundError),
    ],
)
def test_a_bad_record_stores_none_of_its_batch(
    registry: Registry, fields: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        registry.traffic.record([_traffic(), _traffic(**fields)])
    assert registry.traffic.count() == 0


def test_since_accepts_iso_times_and_durations_back_from_now() -> None:
    assert parse_since("90m", START) == START - timedelta(minutes=90)
    assert parse_since("2d", START) == START - timedelta(days=2)
    assert parse_since("2026-03-01T10:00:00+02:00", START) == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert parse_since("2026-03-01", START) == datetime(2026, 3, 1, tzinfo=UTC)
    for bad in ("yesterday", "1y", "-1h", ""):
        with pytest.raises(ValidationError, match="--since"):
            parse_since(bad, START)


# -- CLI -------------------------------------------------------------------------------------


def test_cli_creates_lists_and_revokes_keys() -> None:
    created = runner.invoke(
        app, ["keys", "create", "--scope", "inference", "--budget-usd", "2.5", "--name", "ci"]
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("nk-") and "cannot be shown again" in created.stderr

    as_json = runner.invoke(app, ["keys", "create", "--scope", "admin", "--json"])
    assert as_json.exit_code == 0, as_json.output
    second = json.loads(as_json.stdout)
    assert second["secret"].startswith("nk-") and second["prefix"] == second["secret"][:8]

    listed = runner.invoke(app, ["keys", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    keys = json.loads(listed.stdout)
    assert [(k["name"], k["scope"], k["budget_usd"]) for k in keys] == [
        ("ci", "inference", 2.5),
        (None, "admin", None),
    ]
    assert secret not in listed.stdout and second["secret"] not in listed.stdout
    assert runner.invoke(app, ["keys", "list"]).exit_code == 0

    revoked = runner.invoke(app, ["keys", "revoke", secret[:8]])
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in revoked.stdout
    after = json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout)
    assert after[0]["revoked_at"] is not None and after[1]["revoked_at"] is None

    missing = runner.invoke(app, ["keys", "revoke", "nk-nope"])
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1
    bad_scope = runner.invoke(app, ["keys", "create", "--scope", "root"])
    assert bad_scope.exit_code == 2 and "scope" in bad_scope.stderr


def test_cli_traffic_on_an_empty_registry() -> None:
    counted = runner.invoke(app, ["traffic", "--count"])
    assert counted.exit_code == 0, counted.output
    assert counted.stdout.strip() == "0"
    as_json = runner.invoke(app, ["traffic", "tickets", "--since", "1h", "--count", "--json"])
    assert json.loads(as_json.stdout) == {"count": 0}
    listed = runner.invoke(app, ["traffic", "--since", "2026-03-01T00:00:00Z", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []
    bad = runner.invoke(app, ["traffic", "--since", "last tuesday"])
    assert bad.exit_code == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: --since")


def test_cli_traffic_lists_each_records_request_id_sample_flag_and_gold_label() -> None:
    from niche.registry.tasks import TaskSpec
    from niche.settings import Settings

    with Registry(settings=Settings()) as registry:
        registry.tasks.create(TaskSpec(name="tickets", labels=["billing", "tech"]))
        registry.traffic.record(
            [
                _traffic(task="tickets", request_id="chatcmpl-1f", sampled=True),
                _traffic(task="tickets", request_id="chatcmpl-2e"),
            ]
        )
        assert registry.traffic.attach_labels([("chatcmpl-1f", "billing")]) == 1
    listed = runner.invoke(app, ["traffic", "tickets"], env={"COLUMNS": "300"})
    assert listed.exit_code == 0, listed.output
    first, second = (line for line in listed.stdout.splitlines() if "chatcmpl-" in line)
    assert "chatcmpl-1f" in first and "billing" in first and "sampled" in first
    assert "chatcmpl-2e" in second and "billing" not in second and "sampled" not in second


def test_routes_counts_a_tasks_records_per_route_in_one_query(registry: Registry) -> None:
    registry.traffic.record(
        [_traffic(task="a", route="specialist")] * 3
        + [_traffic(task="a", route="general"), _traffic(task="b", route="general")]
        + [_traffic(task="a", route="general", at=START - timedelta(days=2))]
    )
    assert registry.traffic.routes("a") == {"specialist": 3, "general": 2}
    assert registry.traffic.routes("a", since=START - timedelta(days=1)) == {
        "specialist": 3,
        "general": 1,
    }
    assert registry.traffic.routes() == {"specialist": 3, "general": 3}
    assert registry.traffic.routes("nosuch") == {}
