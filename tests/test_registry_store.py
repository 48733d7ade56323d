"""The registry store: one conformance suite, run on real SQLite and real PostgreSQL."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest
import sqlalchemy as sa

from niche.data import CurationReport, DatasetVersion, Rows, curate
from niche.errors import (
    AlreadyExistsError,
    ConfigurationError,
    ConflictError,
    DatabaseError,
    DatasetNotFoundError,
    DataValidationError,
    ModelNotFoundError,
    NicheError,
    TaskNotFoundError,
    ValidationError,
)
from niche.registry import Registry
from niche.registry.db import create_engine_for, current_revision, head_revision, mask_url
from niche.registry.models import Base
from niche.registry.tasks import SLA, TaskSpec
from niche.settings import Settings
from tests.clocks import START

FINGERPRINT = "f" * 64


def _spec(name: str = "tickets", **fields) -> TaskSpec:
    return TaskSpec(name=name, labels=["billing", "outage"], **fields)


def _register(registry: Registry, task: str = "tickets", n: int = 1, **overrides):
    records = []
    for _ in range(n):
        values = {
            "kind": "text",
            "artifact_digest": f"sha256-{len(records)}-{task}",
            "artifact_uri": f"file:///artifacts/{task}/{len(records)}",
            "dataset_fingerprint": FINGERPRINT,
            "lineage": {"encoder_id": "minilm-int8", "params": {"c": 10.0}},
            **overrides,
        }
        records.append(registry.models.register(task, **values))
    return records


def _dataset(fingerprint: str | None = None) -> DatasetVersion:
    texts = [f"my invoice is wrong {i}" for i in range(5)] + [
        f"the service is down again {i}" for i in range(5)
    ]
    rows = Rows(texts=texts, labels=["billing"] * 5 + ["outage"] * 5, source="mem")
    version = curate(rows, test_size=0.4, seed=0, source="tickets.csv")
    if fingerprint is None:
        return version
    return DatasetVersion(
        fingerprint=fingerprint, source=version.source, splits=version.splits, report=version.report
    )


# -- migrations ------------------------------------------------------------------------------


def test_a_fresh_database_is_migrated_on_first_use(database_url: str) -> None:
    engine = create_engine_for(database_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        with Registry(database_url) as registry:
            assert registry.tasks.all() == []
        assert current_revision(engine) == head_revision()
        assert set(Base.metadata.tables) <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op_and_returns_the_head_revision(registry: Registry) -> None:
    registry.tasks.create(_spec())
    head = head_revision()
    assert registry.upgrade() == head
    assert registry.upgrade() == head
    assert [task.name for task in registry.tasks.all()] == ["tickets"]


def test_the_migrations_build_exactly_the_models(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with Registry(database_url) as registry:
        registry.upgrade()
        engine = registry.database.engine()
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []


def test_an_unreachable_database_is_named_with_its_password_masked() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        url = f"postgresql+psycopg://niche:s3cret-pw@127.0.0.1:{port}/niche"
        registry = Registry(url)
        with pytest.raises(DatabaseError) as caught:
            registry.tasks.all()
    error = caught.value
    assert f"niche:***@127.0.0.1:{port}/niche" in str(error)
    assert "s3cret-pw" not in str(error)
    assert error.url is not None and "s3cret-pw" not in error.url
    assert "s3cret-pw" not in repr(registry)
    assert isinstance(error, NicheError) and error.http_status == 503


def test_a_sqlite_file_that_cannot_be_created_is_a_database_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DatabaseError, match="a-file"):
        Registry(f"sqlite:///{blocker}/sub/niche.db").upgrade()


def test_the_sqlite_directory_is_created_on_connect_not_before(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "niche.db"
    registry = Registry(f"sqlite:///{target}")
    engine = create_engine_for(f"sqlite:///{target}")
    engine.dispose()
    assert not target.parent.exists()
    with registry:
        registry.tasks.all()
    assert target.is_file()


def test_unsupported_and_malformed_urls_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unsupported registry database"):
        create_engine_for("mysql://root:pw@db/niche")
    with pytest.raises(ConfigurationError, match="not a database URL"):
        create_engine_for("no url at all")
    assert mask_url("postgresql+psycopg://u:pw@h/d") == "postgresql+psycopg://u:***@h/d"


def test_the_default_url_comes_from_the_settings(tmp_path: Path) -> None:
    registry = Registry(settings=Settings(home=str(tmp_path)))
    assert registry.database_url == f"sqlite:///{tmp_path / 'niche.db'}"
    with registry:
        registry.tasks.ensure(_spec())
    assert (tmp_path / "niche.db").is_file()


def test_a_registry_pickles_as_its_arguments(registry: Registry) -> None:
    registry.tasks.create(_spec())
    copy = pickle.loads(pickle.dumps(Registry(registry.url)))
    with copy:
        assert copy.database.engine_ is None
        assert copy.tasks.get("tickets").name == "tickets"


# -- tasks -----------------------------------------------------------------------------------


def test_create_get_list_and_update_tasks(registry: Registry) -> None:
    created = registry.tasks.create(_spec(sla=SLA(min_quality=0.8)))
    assert created.spec == _spec(sla=SLA(min_quality=0.8))
    assert created.created_at == created.updated_at == START
    registry.tasks.create(_spec("alerts"))
    assert [task.name for task in registry.tasks.all()] == ["alerts", "tickets"]

    updated = registry.tasks.update("tickets", sla={"latency_p95_ms": 20}, domain="support")
    assert updated.spec.sla == SLA(latency_p95_ms=20, min_quality=0.8)
    assert updated.spec.domain == "support"
    assert updated.created_at == START and updated.updated_at > START
    assert registry.tasks.get("tickets") == updated


def test_a_duplicate_task_is_refused_by_name(registry: Registry) -> None:
    registry.tasks.create(_spec())
    with pytest.raises(AlreadyExistsError, match="task 'tickets' exists already") as caught:
        registry.tasks.create(_spec(domain="other"))
    assert caught.value.exit_code == 2
    assert registry.tasks.get("tickets").spec.domain is None


def test_an_unknown_task_error_lists_the_known_ones(registry: Registry) -> None:
    with pytest.raises(TaskNotFoundError, match="none yet"):
        registry.tasks.get("tickets")
    registry.tasks.create(_spec())
    registry.tasks.create(_spec("alerts"))
    with pytest.raises(TaskNotFoundError, match=r"no task 'ticket' \(known: alerts, tickets\)"):
        registry.tasks.get("ticket")
    with pytest.raises(TaskNotFoundError) as caught:
        registry.models.register("nope", **_model_values())
    assert caught.value.task == "nope" and caught.value.http_status == 404


def _model_values() -> dict:
    return {
        "kind": "text",
        "artifact_digest": "d",
        "artifact_uri": "file:///d",
        "dataset_fingerprint": FINGERPRINT,
        "lineage": {},
    }


def test_ensure_task_creates_once_and_then_returns_the_existing_task(registry: Registry) -> None:
    first = registry.tasks.ensure(_spec(domain="support"))
    again = registry.tasks.ensure(_spec(domain="ignored"))
    assert again == first
    assert [task.name for task in registry.tasks.all()] == ["tickets"]


def test_update_task_refuses_renames_and_unknown_fields(registry: Registry) -> None:
    registry.tasks.create(_spec())
    with pytest.raises(ValidationError, match="cannot be renamed"):
        registry.tasks.update("tickets", name="other")
    with pytest.raises(ValidationError, match="unknown field"):
        registry.tasks.update("tickets", latency=3)
    with pytest.raises(ValidationError, match="unknown field"):
        registry.tasks.update("tickets", sla={"latency": 3})


# -- datasets --------------------------------------------------------------------------------


def test_dataset_registration_is_idempotent_by_fingerprint(registry: Registry) -> None:
    version = _dataset()
    first = registry.datasets.register_path(version)
    assert first.uri is None
    assert first.splits == {split: len(rows) for split, rows in version.splits.items()}
    assert CurationReport.from_dict(first.report) == version.report
    again = registry.datasets.register_path(version, uri=Path("/data/tickets"))
    assert again.uri == "/data/tickets"  # filled in, the rest untouched
    assert again.created_at == first.created_at
    assert registry.datasets.register_path(version, uri="/elsewhere").uri == "/data/tickets"
    assert [d.fingerprint for d in registry.datasets.all()] == [version.fingerprint]


def test_datasets_are_found_by_fingerprint_or_unique_prefix(registry: Registry) -> None:
    a = registry.datasets.register_path(_dataset("abcdef01" + "0" * 56))
    registry.datasets.register_path(_dataset("abcdef02" + "0" * 56))
    assert registry.datasets.get(a.fingerprint) == a
    assert registry.datasets.get("ABCDEF01") == a
    with pytest.raises(DatasetNotFoundError, match="ambiguous"):
        registry.datasets.get("abcdef")
    with pytest.raises(DatasetNotFoundError, match="at least 6 hex digits"):
        registry.datasets.get("abc")
    with pytest.raises(DatasetNotFoundError, match=r"no dataset version '123456' \(latest: "):
        registry.datasets.get("123456")


# -- model versions --------------------------------------------------------------------------


def test_versions_are_dense_per_task(registry: Registry) -> None:
    registry.tasks.create(_spec())
    registry.tasks.create(_spec("alerts"))
    assert [r.version for r in _register(registry, n=3)] == [1, 2, 3]
    assert [r.version for r in _register(registry, "alerts", n=2)] == [1, 2]
    assert [(m.task, m.version) for m in registry.models.all()] == [
        ("alerts", 1),
        ("alerts", 2),
        ("tickets", 1),
        ("tickets", 2),
        ("tickets", 3),
    ]
    assert [m.version for m in registry.models.all("alerts")] == [1, 2]


def test_get_model_by_number_text_or_alias(registry: Registry) -> None:
    registry.tasks.create(_spec())
    records = _register(registry, n=3)
    registry.promotions.move("tickets", "champion", 2, actor="test")
    for ref in (2, "2", "v2", "champion"):
        assert registry.models.get("tickets", ref) == records[1]
    with pytest.raises(ModelNotFoundError, match=r"known: v1, v2, v3, champion → v2") as caught:
        registry.models.get("tickets", "challenger")
    assert caught.value.ref == "challenger"
    with pytest.raises(ModelNotFoundError, match="no model version 9"):
        registry.models.get("tickets", 9)


def test_model_records_keep_their_lineage_as_plain_json(registry: Registry) -> None:
    registry.tasks.create(_spec())
    lineage = {"encoder_id": "minilm", "temperature": np.float32(1.5), "rows": np.int64(7)}
    (record,) = _register(registry, lineage=lineage)
    assert record.lineage == {"encoder_id": "minilm", "temperature": 1.5, "rows": 7}
    assert registry.models.get("tickets", 1) == record
    assert record.created_at.tzinfo is not None and record.created_at == START + timedelta(
        1 / 86400
    )
    orjson.dumps(record.to_dict())


def test_invalid_model_input_registers_nothing(registry: Registry) -> None:
    registry.tasks.create(_spec())
    with pytest.raises(DataValidationError, match="lineage is not JSON-serialisable"):
        _register(registry, lineage={"bad": object()})
    with pytest.raises(ValidationError, match="artifact_digest must be a non-empty string"):
        _register(registry, artifact_digest="")
    assert registry.models.all() == []
    assert [r.version for r in _register(registry)] == [1]


def test_referenced_digests_are_every_models_artifacts(registry: Registry) -> None:
    registry.tasks.create(_spec())
    _register(registry, artifact_digest="aaa")
    _register(registry, artifact_digest="bbb")
    _register(registry, artifact_digest="aaa")
    assert registry.referenced_digests() == {"aaa", "bbb"}


# -- aliases ---------------------------------------------------------------------------------


def test_alias_moves_are_recorded_with_actor_reason_and_versions(registry: Registry) -> None:
    registry.tasks.create(_spec())
    _register(registry, n=3)
    assert registry.promotions.get("tickets", "champion") is None
    registry.promotions.move(
        "tickets", "champion", 1, actor="ana", reason="first", expected_current=None
    )
    registry.promotions.move("tickets", "challenger", 3, actor="bo")
    registry.promotions.move("tickets", "champion", 2, actor="bo", reason="gate passed")
    history = registry.promotions.history("tickets", "champion")
    assert [(e.from_version, e.to_version, e.actor, e.reason) for e in history] == [
        (None, 1, "ana", "first"),
        (1, 2, "bo", "gate passed"),
    ]
    assert history[0].at < history[1].at
    assert [e.alias for e in registry.promotions.history("tickets")] == [
        "champion",
        "challenger",
        "champion",
    ]
    assert registry.promotions.aliases("tickets") == {"challenger": 3, "champion": 2}
    champion = registry.promotions.get("tickets", "champion")
    assert champion is not None and champion.version == 2
    orjson.dumps([e.to_dict() for e in history])


def test_compare_and_set_refuses_a_stale_expectation(registry: Registry) -> None:
    registry.tasks.create(_spec())
    _register(registry, n=3)
    registry.promotions.move("tickets", "champion", 1, actor="ana", expected_current=None)
    with pytest.raises(ConflictError, match="is v1, not unset as expected") as caught:
        registry.promotions.move("tickets", "champion", 2, actor="bo", expected_current=None)
    assert (caught.value.expected, caught.value.actual) == (None, 1)
    assert caught.value.http_status == 409
    with pytest.raises(ConflictError, match="is v1, not v3"):
        registry.promotions.move("tickets", "champion", 2, actor="bo", expected_current=3)
    assert registry.promotions.aliases("tickets") == {"champion": 1}
    assert len(registry.promotions.history("tickets")) == 1
    registry.promotions.move("tickets", "champion", 2, actor="bo", expected_current=1)
    assert registry.promotions.aliases("tickets") == {"champion": 2}


def test_aliases_must_name_an_existing_version_and_not_look_like_one(registry: Registry) -> None:
    registry.tasks.create(_spec())
    _register(registry)
    with pytest.raises(ModelNotFoundError):
        registry.promotions.move("tickets", "champion", 5, actor="ana")
    for bad in ("3", "Champion", ""):
        with pytest.raises(ValidationError, match="alias"):
            registry.promotions.move("tickets", bad, 1, actor="ana")
    with pytest.raises(ValidationError, match="actor"):
        registry.promotions.move("tickets", "champion", 1, actor=" ")
    assert registry.promotions.history("tickets") == []


# -- evaluations, gates, lineage -------------------------------------------------------------


def test_evaluations_are_recorded_per_model_version(registry: Registry) -> None:
    registry.tasks.create(_spec())
    _register(registry, n=2)
    recorded = registry.models.record_evaluation(
        "tickets",
        "v2",
        dataset_fingerprint=FINGERPRINT,
        split="test",
        metrics={"accuracy": np.float64(0.91), "ci": [0.88, 0.94], "latency_p95_ms": float("nan")},
        general={"accuracy": 0.85},
        comparison={"diff": 0.06, "cascade": [{"threshold": 0.5, "coverage": 0.7}]},
    )
    assert recorded.version == 2
    assert recorded.metrics == {"accuracy": 0.91, "ci": [0.88, 0.94], "latency_p95_ms": None}
    assert registry.models.evaluations("tickets", 2) == [recorded]
    assert registry.models.evaluations("tickets", 1) == []
    orjson.dumps(recorded.to_dict())


def test_gate_decisions_are_stored_whether_passed_or_failed(registry: Registry) -> None:
    from niche.registry.gates import GateCheck

    registry.tasks.create(_spec())
    _register(registry, n=2)
    failed = registry.promotions.record_gate(
        "tickets",
        1,
        alias="champion",
        passed=False,
        checks=[GateCheck("sla.min_quality", False, 0.7, 0.8, "accuracy below the SLA")],
        actor="ana",
    )
    forced = registry.promotions.record_gate(
        "tickets",
        2,
        alias="champion",
        passed=False,
        forced=True,
        why="hotfix for an outage",
        checks=[{"name": "held_out", "passed": True, "value": 0.0, "threshold": 0.0, "detail": ""}],
        actor="bo",
    )
    assert registry.promotions.gates("tickets") == [failed, forced]
    assert failed.checks == [
        {
            "name": "sla.min_quality",
            "passed": False,
            "value": 0.7,
            "threshold": 0.8,
            "detail": "accuracy below the SLA",
        }
    ]
    assert (forced.version, forced.forced, forced.why) == (2, True, "hotfix for an outage")
    with pytest.raises(ValidationError, match="needs a reason"):
        registry.promotions.record_gate(
            "tickets", 2, alias="champion", passed=False, checks=[], forced=True, actor="bo"
        )
    passed = registry.promotions.record_gate(
        "tickets", 2, alias="champion", passed=True, checks=[], actor="c"
    )
    assert [g.passed for g in registry.promotions.gates("tickets")] == [False, False, True]
    orjson.dumps(passed.to_dict())


def test_lineage_walks_from_the_model_to_its_dataset_and_evaluations(registry: Registry) -> None:
    version = _dataset()
    registry.datasets.register_path(version, uri="/data/tickets")
    registry.tasks.create(_spec())
    _register(registry, dataset_fingerprint=version.fingerprint)
    _register(registry)  # its dataset was never registered
    registry.models.record_evaluation(
        "tickets", 1, dataset_fingerprint=version.fingerprint, split="test", metrics={"a": 1}
    )
    registry.promotions.record_gate(
        "tickets", 1, alias="champion", passed=True, checks=[], actor="ana"
    )
    registry.promotions.move("tickets", "champion", 1, actor="ana")

    walked = registry.models.lineage("tickets", "champion")
    assert walked["model"]["version"] == 1
    assert walked["model"]["lineage"]["encoder_id"] == "minilm-int8"
    assert walked["dataset"]["registered"] is True
    assert walked["dataset"]["fingerprint"] == version.fingerprint
    assert walked["dataset"]["source"] == "tickets.csv"
    assert walked["dataset"]["report"] == version.report.to_dict()
    assert walked["dataset"]["uri"] == "/data/tickets"
    assert [e["metrics"] for e in walked["evaluations"]] == [{"a": 1}]
    assert walked["aliases"] == ["champion"]
    assert [g["passed"] for g in walked["gates"]] == [True]
    orjson.dumps(walked)

    unregistered = registry.models.lineage("tickets", 2)["dataset"]
    assert unregistered == {"registered": False, "fingerprint": FINGERPRINT}


def test_timestamps_come_from_the_injected_clock_in_utc(database_url: str) -> None:
    with (
        Registry(database_url, clock=lambda: datetime(2026, 1, 1, 9, 30)) as naive,
        pytest.raises(ConfigurationError, match="timezone-aware"),
    ):
        naive.tasks.create(_spec())
    plus_two = timezone(timedelta(hours=2))
    fixed = datetime(2026, 1, 1, 11, 30, tzinfo=plus_two)
    with Registry(database_url, clock=lambda: fixed) as registry:
        record = registry.tasks.create(_spec())
        assert record.created_at == fixed and record.created_at.tzinfo == UTC
        stored = registry.tasks.get("tickets").created_at
        assert stored == fixed and stored.tzinfo == UTC
        assert stored.isoformat() == "2026-01-01T09:30:00+00:00"


def test_importing_the_cli_or_the_registry_package_does_not_load_sqlalchemy() -> None:
    code = (
        "import sys\n"
        "import niche.cli, niche.registry\n"
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'psycopg') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
