"""Gold labels that arrive late: ``registry.traffic.attach_labels``, the feedback workflow and
``niche feedback --file``, on real SQLite and real PostgreSQL."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from niche.cli import app
from niche.errors import DataValidationError, NotFoundError, ValidationError
from niche.registry import Registry, TrafficRecord
from niche.registry.stores.traffic import MAX_LABELS
from niche.registry.tasks import TaskSpec
from niche.workflows import read_labels_file, send_feedback, send_feedback_file
from tests.clocks import START

runner = CliRunner()


def _record(request_id: str | None, task: str | None = "tickets", **fields: Any) -> TrafficRecord:
    values: dict[str, Any] = {
        "task": task,
        "model": task or "gpt-vendor",
        "route": "specialist" if task else "passthrough",
        "input": [{"role": "user", "content": "my card has not arrived"}],
        "text": "my card has not arrived",
        "latency_ms": 3.5,
        "status": 200,
        "request_id": request_id,
    }
    return TrafficRecord(**(values | fields))


@pytest.fixture
def captured(registry: Registry) -> Registry:
    """Tasks ``tickets`` (billing, outage) and ``intents`` (card, pin), five task requests
    and a pass-through one, and a task ``free`` without a label set."""
    registry.tasks.create(TaskSpec(name="tickets", labels=["billing", "outage"]))
    registry.tasks.create(TaskSpec(name="intents", labels=["card", "pin"]))
    registry.tasks.create(TaskSpec(name="free"))
    registry.traffic.record(
        [
            _record("chatcmpl-1"),
            _record("chatcmpl-2"),
            _record("pred-3", task="intents"),
            _record("pred-4", task="intents"),
            _record("chatcmpl-5", task="free"),
            _record("req-6", task=None),
        ]
    )
    return registry


def _gold(registry: Registry) -> dict[str, str | None]:
    return {r.request_id: r.gold_label for r in registry.traffic.query() if r.request_id}


def _labelled_events(registry: Registry) -> list[Any]:
    return [e for e in registry.audit.events() if e.action == "traffic.labelled"]


def test_labels_attach_to_records_of_several_tasks_in_one_audited_transaction(captured):
    attached = captured.traffic.attach_labels(
        [("chatcmpl-1", "outage"), ("pred-3", "pin")], actor="test"
    )
    assert attached == 2
    records = {r.request_id: r for r in captured.traffic.query()}
    assert (records["chatcmpl-1"].gold_label, records["pred-3"].gold_label) == ("outage", "pin")
    assert records["chatcmpl-1"].gold_at is not None and records["chatcmpl-1"].gold_at > START
    assert records["chatcmpl-2"].gold_label is None and records["chatcmpl-2"].gold_at is None
    (event,) = _labelled_events(captured)
    assert (event.actor, event.task) == ("test", None)
    assert event.detail == {"count": 2, "relabelled": 0, "tasks": {"tickets": 1, "intents": 1}}
    # Labelled records count as labelled for the loop's reads.
    assert captured.traffic.count("intents", labelled=True) == 1


def test_relabelling_overwrites_and_a_repeated_id_keeps_its_last_label(captured):
    captured.traffic.attach_labels([("chatcmpl-1", "outage")], actor="test")
    attached = captured.traffic.attach_labels(
        [("chatcmpl-1", "billing"), ("chatcmpl-2", "outage"), ("chatcmpl-2", "billing")],
        actor="test",
    )
    assert attached == 2
    gold = _gold(captured)
    assert (gold["chatcmpl-1"], gold["chatcmpl-2"]) == ("billing", "billing")
    last = _labelled_events(captured)[-1]
    assert (last.task, last.subject) == ("tickets", "2 requests")
    assert last.detail == {"count": 2, "relabelled": 1, "tasks": {"tickets": 2}}


def test_an_unknown_request_id_is_named_and_nothing_changes(captured):
    with pytest.raises(NotFoundError, match="no captured request has the request id 'nope'"):
        captured.traffic.attach_labels([("chatcmpl-1", "outage"), ("nope", "billing")])
    with pytest.raises(NotFoundError, match=r"12 of 13 request ids name no captured request: "):
        captured.traffic.attach_labels(
            [("chatcmpl-1", "outage"), *((f"missing-{i}", "billing") for i in range(12))]
        )
    assert _gold(captured)["chatcmpl-1"] is None and _labelled_events(captured) == []


def test_a_label_outside_the_tasks_set_is_named_with_the_labels_and_nothing_changes(captured):
    with pytest.raises(ValidationError) as refused:
        captured.traffic.attach_labels([("chatcmpl-1", "outage"), ("pred-3", "billing")])
    message = refused.value.message
    assert "'billing' (request id 'pred-3', task intents)" in message
    assert "labels of intents: card, pin" in message and refused.value.param == "label"
    many = [(f"chatcmpl-{i}", "refund") for i in (1, 2)] + [("pred-3", "x"), ("pred-4", "y")]
    with pytest.raises(ValidationError, match=r"… \(4 in all\)"):
        captured.traffic.attach_labels(many)
    assert set(_gold(captured).values()) == {None} and _labelled_events(captured) == []


def test_pass_through_requests_and_tasks_without_labels_take_no_gold_label(captured):
    with pytest.raises(ValidationError, match=r"'req-6'.* pass-through"):
        captured.traffic.attach_labels([("req-6", "billing")])
    with pytest.raises(ValidationError, match=r"task\(s\) 'free' have no label set"):
        captured.traffic.attach_labels([("chatcmpl-5", "anything")])
    captured.traffic.record([_record("chatcmpl-7", task="retired")])  # records outlive tasks
    with pytest.raises(ValidationError, match=r"'retired' no longer exist.*'chatcmpl-7'"):
        captured.traffic.attach_labels([("chatcmpl-7", "billing")])


def test_malformed_items_and_oversized_batches_are_refused(captured):
    for items, match in [
        ("chatcmpl-1,outage", "list of \\(request_id, label\\) pairs"),
        ([("chatcmpl-1",)], "label 1 must be a \\(request_id, label\\) pair"),
        ([("", "outage")], "label 1: request_id must be a non-empty string"),
        ([("chatcmpl-1", " ")], "request id 'chatcmpl-1'\\): label must be a non-empty"),
        ([("chatcmpl-1", 3)], "label must be a non-empty string, got 3"),
    ]:
        with pytest.raises(ValidationError, match=match):
            captured.traffic.attach_labels(items)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="10,001 labels in one call, over the limit"):
        captured.traffic.attach_labels([("chatcmpl-1", "outage")] * (MAX_LABELS + 1))
    assert captured.traffic.attach_labels([]) == 0 and _labelled_events(captured) == []


def test_a_key_labels_only_the_requests_made_with_it(captured):
    mine, _ = captured.keys.create(scope="inference")
    other, _ = captured.keys.create(scope="inference")
    captured.traffic.record([_record("chatcmpl-8", key_id=mine.id)])
    with pytest.raises(NotFoundError, match="'chatcmpl-8'"):
        captured.traffic.attach_labels([("chatcmpl-8", "outage")], key_id=other.id)
    with pytest.raises(NotFoundError, match="'chatcmpl-1'"):  # made without a key
        captured.traffic.attach_labels([("chatcmpl-1", "outage")], key_id=mine.id)
    assert captured.traffic.attach_labels([("chatcmpl-8", "outage")], key_id=mine.id) == 1


def test_concurrent_labellers_both_land_and_the_audit_counts_each(captured):
    errors: list[BaseException] = []

    def label(request_id: str, value: str) -> None:
        try:
            for _ in range(5):
                captured.traffic.attach_labels([(request_id, value)], actor="test")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=label, args=("chatcmpl-1", "outage")),
        threading.Thread(target=label, args=("pred-3", "card")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    gold = _gold(captured)
    assert (gold["chatcmpl-1"], gold["pred-3"]) == ("outage", "card")
    assert len(_labelled_events(captured)) == 10


def test_the_lookup_by_request_id_uses_its_index(captured):
    from sqlalchemy import text

    with captured.database.engine().connect() as connection:
        if connection.dialect.name == "sqlite":
            plan = connection.execute(
                text("EXPLAIN QUERY PLAN SELECT id FROM traffic_records WHERE request_id IN ('a')")
            ).all()
            assert "ix_traffic_records_request_id" in " ".join(str(row) for row in plan)
        else:
            connection.execute(text("SET enable_seqscan = off"))
            plan = connection.execute(
                text("EXPLAIN SELECT id FROM traffic_records WHERE request_id IN ('a', 'b')")
            ).all()
            assert "ix_traffic_records_request_id" in " ".join(str(row) for row in plan)


# -- the workflow and the labels file ----------------------------------------------------------


def test_a_labels_file_is_read_in_order_stripped_with_its_lines(tmp_path: Path):
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label,note\n chatcmpl-1 ,outage,late\n\npred-3,pin,\n")
    assert read_labels_file(path) == [("chatcmpl-1", "outage"), ("pred-3", "pin")]
    (tmp_path / "labels.jsonl").write_text('{"request_id": "pred-3", "label": "pin"}\n')
    assert read_labels_file(tmp_path / "labels.jsonl")[0].label == "pin"
    (tmp_path / "labels.txt").write_text("request_id,label\npred-3,pin\n")  # read as CSV
    assert read_labels_file(tmp_path / "labels.txt") == [("pred-3", "pin")]


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("id,label\nchatcmpl-1,outage\n", "line 1, column 'request_id': missing column"),
        ("request_id,label\nchatcmpl-1,\n", "line 2, column 'label': empty label"),
        ("request_id,label\nchatcmpl-1,outage\n,billing\n", "line 3, column 'request_id'"),
        ("request_id,label\n" + "x" * 65 + ",outage\n", "line 2, column 'request_id': a request"),
        ('request_id,label\n"chatcmpl-1,outage\n', "line 2"),
        ("request_id,label\n", "no rows after the header"),
    ],
)
def test_a_bad_labels_file_names_its_line_and_column(tmp_path: Path, content: str, where: str):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(DataValidationError) as refused:
        read_labels_file(path)
    assert str(refused.value).startswith(str(path)) and where in str(refused.value)


def test_a_missing_labels_file_is_named(tmp_path: Path):
    with pytest.raises(DataValidationError, match=r"labels\.csv: no such file"):
        read_labels_file(tmp_path / "labels.csv")


def test_send_feedback_file_names_the_lines_of_bad_ids(captured, tmp_path: Path):
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\nchatcmpl-1,outage\nnope,billing\npred-3,billing\n")
    with pytest.raises(NotFoundError, match=f"^{path}, line 3: no captured request"):
        send_feedback_file(path, registry=captured)
    path.write_text("request_id,label\nchatcmpl-1,outage\npred-3,billing\n")
    with pytest.raises(ValidationError, match=f"^{path}, line 3: not a label of its task"):
        send_feedback_file(path, registry=captured)
    assert set(_gold(captured).values()) == {None}
    path.write_text("request_id,label\nchatcmpl-1,outage\npred-3,card\nchatcmpl-1,billing\n")
    result = send_feedback_file(path, registry=captured, actor="test")
    assert result.to_dict() == {"attached": 2, "labels": 3, "repeated": 1, "source": str(path)}
    assert _gold(captured)["chatcmpl-1"] == "billing"
    assert send_feedback([("pred-4", "pin")], registry=captured).attached == 1


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_feedback_attaches_a_file_or_exits_2_naming_the_problem(
    captured, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NICHE_DATABASE_URL", database_url)
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\nchatcmpl-1,outage\nnope,billing\n")
    refused = runner.invoke(app, ["feedback", "--file", str(path)])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"error: {path}, line 3: no captured request has the request")
    path.write_text("request_id,label\nchatcmpl-1,refund\n")
    refused = runner.invoke(app, ["feedback", "--file", str(path)])
    assert refused.exit_code == 2 and "'refund'" in refused.stderr
    assert "labels of tickets: billing, outage" in refused.stderr
    path.write_text("request_id\nchatcmpl-1\n")
    refused = runner.invoke(app, ["feedback", "--file", str(path)])
    assert refused.exit_code == 2 and "column 'label': missing column" in refused.stderr
    assert set(_gold(captured).values()) == {None}

    path.write_text("request_id,label\nchatcmpl-1,outage\npred-3,pin\n")
    done = runner.invoke(app, ["feedback", "--file", str(path)])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == f"attached 2 gold label(s) from {path}"
    as_json = runner.invoke(app, ["feedback", "-f", str(path), "--json"])
    assert json.loads(as_json.stdout) == {
        "attached": 2,
        "labels": 2,
        "repeated": 0,
        "source": str(path),
    }
    assert _gold(captured)["pred-3"] == "pin"
    actors = {e.actor for e in _labelled_events(captured)}
    assert len(actors) == 1 and actors.pop().startswith("cli:")
