"""Distillation from captured traffic: real records of real BANKING77 texts stored in a real
registry (SQLite and PostgreSQL), curated and registered; lineage and evaluation of a model
trained on them with the real encoder; the ``niche distil`` command."""

from __future__ import annotations

import csv
import importlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from niche.cli import app
from niche.data import CurationReport, normalise_text
from niche.data.version import fingerprint_splits
from niche.errors import DataValidationError, NotEnoughDataError, ValidationError
from niche.registry import Registry, TrafficRecord
from niche.registry.tasks import TaskSpec
from niche.settings import Settings
from niche.workflows import distil, evaluate_registered, lineage, promote, train_and_register
from tests.clocks import START
from tests.conftest import FOUR_INTENTS

TASK = "intents"
runner = CliRunner()


def _texts(datasets_dir: Path, per_label: int) -> list[tuple[str, str]]:
    """``per_label`` BANKING77 training texts of each of :data:`FOUR_INTENTS`, interleaved
    (so every stretch of arrivals holds every label), as ``(text, label)``."""
    by_label: dict[str, list[str]] = {label: [] for label in FOUR_INTENTS}
    with open(datasets_dir / "banking77" / "train.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            texts = by_label.get(row["category"])
            if texts is not None and len(texts) < per_label:
                texts.append(row["text"])
    return [(by_label[label][i], label) for i in range(per_label) for label in FOUR_INTENTS]


def _record(i: int, said: str, label: str, **changes: Any) -> TrafficRecord:
    """Request ``i`` (text ``said``) as the gateway captures it when the general model
    answered ``label``; ``changes`` override any field."""
    fields: dict[str, Any] = {
        "task": TASK,
        "model": TASK,
        "route": "general",
        "input": [{"role": "system", "content": "classify"}, {"role": "user", "content": said}],
        "text": said,
        "general_answer": label,
        "general_label": label,
        "status": 200,
        "latency_ms": 1.0,
        "request_id": f"req-{i}",
        "at": START + timedelta(minutes=i),
    }
    return TrafficRecord(**(fields | changes))


def _task(registry: Registry, **loop: Any) -> None:
    spec = TaskSpec(name=TASK, labels=list(FOUR_INTENTS))
    registry.tasks.create(spec.with_changes(loop=loop) if loop else spec)


def _ids_by_text(registry: Registry) -> dict[str, int]:
    return {normalise_text(r.text): r.id for r in registry.traffic.window(TASK) if r.text}


def test_teacher_labels_become_rows_and_the_newest_rows_are_the_test_split(
    registry: Registry, datasets_dir: Path
):
    _task(registry)
    pairs = _texts(datasets_dir, 25)
    registry.traffic.record([_record(i, text, label) for i, (text, label) in enumerate(pairs)])

    distilled = distil(TASK, registry=registry, min_rows=50, seed=0)

    version, origin = distilled.version, distilled.origin
    ids = _ids_by_text(registry)
    first, last = min(ids.values()), max(ids.values())
    assert (origin["first_id"], origin["last_id"], origin["records_read"]) == (first, last, 100)
    assert origin["rows"] == {"teacher": 100, "gold": 0}
    assert origin["routes"] == {"general": 100} and origin["skipped"] == {}
    assert version.source == f"traffic:{TASK}#ids={first}-{last}"
    # Every row carries the general model's label for that text.
    label_of = {normalise_text(text): label for text, label in pairs}
    for split in ("train", "test"):
        rows = version.splits[split]
        assert all(label_of[t] == label for t, label in zip(rows.texts, rows.labels, strict=True))
    # The newest 20 records are test (curation may drop a few), the rest train.
    cut = origin["test_from_id"]
    assert cut == last - 19
    assert all(ids[t] >= cut for t in version.splits["test"].texts)
    assert all(ids[t] < cut for t in version.splits["train"].texts)
    assert 15 <= len(version.splits["test"]) <= 20 and len(version.splits["train"]) >= 70
    assert origin["gold_test"] == []

    stored = registry.datasets.get(version.fingerprint)
    assert stored.report["origin"] == origin
    assert stored.source == version.source
    # The fingerprint is the rows' content only: the origin is not in it.
    assert version.fingerprint == fingerprint_splits(version.splits)
    assert registry.datasets.load(version.fingerprint).report == version.report
    payload = distilled.to_dict()
    assert payload["splits"] == version.report.rows_out
    assert payload["window"]["records_read"] == 100 and payload["already_registered"] is False
    assert json.loads(json.dumps(payload)) == payload

    again = distil(TASK, registry=registry, min_rows=50, seed=0)
    assert (again.version.fingerprint, again.already) == (version.fingerprint, True)
    assert len(registry.datasets.all()) == 1


def test_a_gold_label_overrides_the_teacher_and_is_counted_apart(
    registry: Registry, datasets_dir: Path
):
    _task(registry)
    pairs = _texts(datasets_dir, 15)
    wrong = {label: FOUR_INTENTS[(i + 1) % 4] for i, label in enumerate(FOUR_INTENTS)}
    records = []
    for i, (text, label) in enumerate(pairs):
        if i % 5 == 0:  # the teacher was wrong; the application told the truth later
            records.append(_record(i, text, wrong[label], gold_label=label, gold_at=START))
        elif i % 7 == 0:  # the specialist answered alone; only feedback labelled it
            records.append(
                _record(
                    i,
                    text,
                    label,
                    route="specialist",
                    general_answer=None,
                    general_label=None,
                    specialist_label=label,
                    gold_label=label,
                )
            )
        else:
            records.append(_record(i, text, label))
    registry.traffic.record(records)
    gold_texts = {normalise_text(pairs[i][0]) for i in range(60) if i % 5 == 0 or i % 7 == 0}

    distilled = distil(TASK, registry=registry, min_rows=30)

    origin = distilled.origin
    assert origin["rows"] == {"teacher": 60 - len(gold_texts), "gold": len(gold_texts)}
    assert origin["routes"]["specialist"] == sum(1 for i in range(60) if i % 7 == 0 and i % 5)
    label_of = {normalise_text(text): label for text, label in pairs}
    test = distilled.version.splits["test"]
    for split in distilled.version.splits.values():  # the gold label, never the teacher's
        assert all(label_of[t] == label for t, label in zip(split.texts, split.labels, strict=True))
    assert origin["gold_test"] == [i for i, t in enumerate(test.texts) if t in gold_texts]
    assert origin["gold_test"]  # the newest 12 records hold gold ones
    shown = distilled.to_dict()["test_rows"]
    assert shown == {
        "teacher": len(test) - len(origin["gold_test"]),
        "gold": len(origin["gold_test"]),
    }


def test_records_that_give_no_row_are_skipped_with_their_reason_and_others_are_not_read(
    registry: Registry, datasets_dir: Path
):
    _task(registry)
    registry.tasks.create(TaskSpec(name="other", labels=list(FOUR_INTENTS)))
    pairs = _texts(datasets_dir, 10)
    (a, la), (b, lb), (_c, lc), (d, ld), (e, le), (f, lf), (g, lg) = pairs[-7:]
    chat = [{"role": "user", "content": [{"type": "text", "text": e}]}]
    records = [_record(i, text, label) for i, (text, label) in enumerate(pairs[:-7])]
    records += [
        _record(40, a, "not_a_label"),  # the general model named no label of the task
        _record(41, b, lb, status=502),  # the request failed
        _record(42, "   \u200b ", lc),  # nothing to learn from
        _record(43, d, ld, text=None, input="x" * 10, input_bytes=90_000),  # capture cut it
        _record(44, e, le, text=None, input=chat),  # stored before the text column: fallback
        _record(45, f, lf, text=None, input=f),
        _record(46, g, lg, gold_label="closed_account"),  # a label the task no longer has
        # Never read: another task's, a pass-through, and a specialist answer nobody labelled.
        _record(47, a, la, task="other"),
        _record(48, a, la, task=None, model="gpt-4o", route="passthrough", general_label=None),
        _record(49, a, la, route="specialist", general_label=None, specialist_label=la),
    ]
    registry.traffic.record(records)

    distilled = distil(TASK, registry=registry, min_rows=20)

    origin = distilled.origin
    assert origin["records_read"] == 40
    assert origin["skipped"] == {
        "invalid_gold_label": 1,
        "failed_request": 1,
        "invalid_teacher_label": 1,
        "clipped_input": 1,
        "blank_text": 1,
    }
    assert origin["rows"] == {"teacher": 35, "gold": 0}
    texts = {t for split in distilled.version.splits.values() for t in split.texts}
    assert normalise_text(e) in texts and normalise_text(f) in texts  # from the input
    assert not {normalise_text(x) for x in (b, d, g)} & texts


def test_a_train_row_equal_to_a_test_row_is_removed_as_a_leak(
    registry: Registry, datasets_dir: Path
):
    _task(registry)
    pairs = _texts(datasets_dir, 10)
    newest_text, newest_label = pairs[-1]
    records = [_record(i, text, label) for i, (text, label) in enumerate(pairs)]
    records.insert(0, _record(-1, newest_text, newest_label))  # asked again later
    registry.traffic.record(records)

    distilled = distil(TASK, registry=registry, min_rows=20)

    version = distilled.version
    assert version.report.leaks_removed >= 1
    assert normalise_text(newest_text) in version.splits["test"].texts
    assert normalise_text(newest_text) not in version.splits["train"].texts


def test_a_window_reads_only_its_records_through_pages(
    registry: Registry, datasets_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    module = importlib.import_module("niche.workflows.distil")
    monkeypatch.setattr(module, "PAGE_RECORDS", 7)  # many pages for 100 records
    _task(registry)
    pairs = _texts(datasets_dir, 25)
    registry.traffic.record([_record(i, text, label) for i, (text, label) in enumerate(pairs)])
    ids = [record.id for record in registry.traffic.window(TASK)]

    whole = distil(TASK, registry=registry, min_rows=50).origin
    assert (whole["records_read"], whole["first_id"], whole["last_id"]) == (100, ids[0], ids[-1])

    # Minutes 40-69, as datetimes; then the last 30 minutes before "now" as a duration.
    window = distil(
        TASK,
        registry=registry,
        min_rows=20,
        since=START + timedelta(minutes=40),
        until=START + timedelta(minutes=70),
    ).origin
    assert (window["records_read"], window["first_id"], window["last_id"]) == (
        30,
        ids[40],
        ids[69],
    )
    assert window["since"] == (START + timedelta(minutes=40)).isoformat()
    recent = distil(
        TASK, registry=registry, min_rows=20, since="30m", now=START + timedelta(minutes=100)
    ).origin
    assert (recent["records_read"], recent["first_id"]) == (30, ids[70])
    after = distil(TASK, registry=registry, min_rows=20, after_id=ids[59]).origin
    assert (after["records_read"], after["first_id"], after["after_id"]) == (40, ids[60], ids[59])
    with pytest.raises(ValidationError, match="--until 'later'"):
        distil(TASK, registry=registry, until="later")


def test_too_few_rows_raise_not_enough_data_naming_the_counts_and_write_nothing(
    registry: Registry, datasets_dir: Path, niche_home: Path
):
    _task(registry, min_rows=60)
    pairs = _texts(datasets_dir, 10)
    registry.traffic.record([_record(i, text, label) for i, (text, label) in enumerate(pairs)])

    with pytest.raises(NotEnoughDataError) as caught:
        distil(TASK, registry=registry)  # loop.min_rows: 60
    error = caught.value
    assert (error.task, error.rows, error.needed, error.exit_code) == (TASK, 40, 60, 2)
    message = str(error)
    for part in ("40 labelled rows", "40 teacher, 0 gold", "at least 60", "shadow_fraction"):
        assert part in message, message
    assert "/v1/feedback" in message

    # Enough records, but one text asked over and over: curation leaves too few.
    text, label = pairs[0]
    registry.traffic.record([_record(100 + i, text, label) for i in range(30)])
    with pytest.raises(NotEnoughDataError, match="usable rows left after curation"):
        distil(TASK, registry=registry, min_rows=45)
    with pytest.raises(NotEnoughDataError, match="0 labelled rows"):
        distil(TASK, registry=registry, since=START + timedelta(days=1))
    assert registry.datasets.all() == []
    assert [p for p in niche_home.rglob("*") if p.is_file() and "artifacts" in p.parts] == []
    with pytest.raises(ValidationError, match="min_rows"):
        distil(TASK, registry=registry, min_rows=1)


def test_a_labels_file_overrides_as_gold_for_this_dataset_only(
    registry: Registry, datasets_dir: Path, tmp_path: Path
):
    _task(registry)
    pairs = _texts(datasets_dir, 10)
    records = [_record(i, text, label) for i, (text, label) in enumerate(pairs[:-5])]
    # Answered by the specialist alone: no teacher label, so only the file labels them.
    records += [
        _record(i, text, label, route="specialist", general_label=None, specialist_label=label)
        for i, (text, label) in enumerate(pairs[-5:], start=35)
    ]
    registry.traffic.record(records)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "request_id,label\n"
        + "".join(f"req-{i},{pairs[i][1]}\n" for i in range(35, 40))
        + "req-0,exchange_rate\nreq-unknown,pin_blocked\n",
        encoding="utf-8",
    )

    distilled = distil(TASK, registry=registry, min_rows=20, with_labels=labels)

    origin = distilled.origin
    assert origin["rows"] == {"teacher": 34, "gold": 6}
    assert origin["labels_file"] == {"path": str(labels), "labels": 7, "used": 6}
    first = normalise_text(pairs[0][0])
    rows = distilled.version.splits["train"]
    assert dict(zip(rows.texts, rows.labels, strict=True))[first] == "exchange_rate"
    assert all(r.gold_label is None for r in registry.traffic.window(TASK))  # nothing stored

    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,label\nreq-1,card_arrival\nreq-2,refund\n", encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        distil(TASK, registry=registry, min_rows=20, with_labels=bad)
    assert all(part in str(caught.value) for part in (str(bad), "line 3", "'refund'"))
    blank = tmp_path / "blank.csv"
    blank.write_text("request_id,label\nreq-1,\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match="line 2"):
        distil(TASK, registry=registry, min_rows=20, with_labels=blank)
    with pytest.raises(DataValidationError, match="no such file"):
        distil(TASK, registry=registry, with_labels=tmp_path / "missing.csv")
    assert len(registry.datasets.all()) == 1


def test_a_report_saved_before_origin_existed_still_loads_and_unknown_fields_are_refused():
    old = CurationReport(rows_in=3).to_dict()
    del old["origin"]
    assert CurationReport.from_dict(old) == CurationReport(rows_in=3)
    with pytest.raises(DataValidationError, match="unknown field"):
        CurationReport.from_dict({**old, "surprise": 1})
    with pytest.raises(DataValidationError, match="origin"):
        CurationReport.from_dict({**old, "origin": "traffic"})
    with pytest.raises(DataValidationError, match="lacks field"):
        CurationReport.from_dict({k: v for k, v in old.items() if k != "seed"})


@pytest.mark.slow
def test_a_model_trained_on_distilled_data_traces_back_to_the_traffic_and_is_measured_on_both(
    registry: Registry, datasets_dir: Path, encoder, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NICHE_BOOTSTRAP_RESAMPLES", "200")
    settings = Settings()
    _task(registry)
    pairs = _texts(datasets_dir, 25)
    records = [
        _record(i, text, label, gold_label=label if i % 4 == 0 else None)
        for i, (text, label) in enumerate(pairs)
    ]
    registry.traffic.record(records)
    distilled = distil(TASK, settings, registry=registry, min_rows=50)

    model = train_and_register(
        distilled.version.fingerprint[:12], settings, encoder=encoder, registry=registry
    )
    assert model.task == TASK  # named after the traffic's task, not its source string
    traced = lineage(TASK, model.version, registry=registry)
    assert traced["model"]["dataset_fingerprint"] == distilled.version.fingerprint
    origin = traced["dataset"]["report"]["origin"]
    assert origin == distilled.origin
    assert (origin["kind"], origin["task"], origin["records_read"]) == ("traffic", TASK, 100)
    assert traced["dataset"]["source"] == distilled.version.source

    report = evaluate_registered(TASK, model.version, settings, encoder=encoder, registry=registry)
    metrics = report.to_dict()["specialist"]
    teacher, gold = metrics["teacher_agreement"], metrics["gold_accuracy"]
    assert gold["n"] == len(origin["gold_test"]) > 0
    assert teacher["n"] + gold["n"] == report.rows == metrics["n"]
    weighted = (teacher["accuracy"] * teacher["n"] + gold["accuracy"] * gold["n"]) / report.rows
    assert weighted == pytest.approx(metrics["accuracy"])
    for part in (teacher, gold):
        low, high = part["accuracy_ci"]
        assert 0 <= low <= part["accuracy"] <= high <= 1
    stored = registry.models.evaluations(TASK, model.version)[-1].metrics
    assert stored["teacher_agreement"] == teacher and stored["gold_accuracy"] == gold

    # The general model is not asked again: its recorded answers are the teacher, and the
    # gate holds the candidate to agreeing with them (too few gold rows to compare on).
    assert report.general.kind == "teacher" and report.general.n == report.rows
    assert report.general.accuracy == 1.0  # the gold labels here equal the teacher's
    outcome = promote(
        TASK, model.version, settings, registry=registry, encoder=encoder, evaluation=report
    )
    checks = {check.name: check for check in outcome.decision.checks}
    assert checks["agreement_with_general"].threshold == 0.8
    assert checks["agreement_with_general"].passed == outcome.moved
    assert "quality_vs_general" not in checks  # too few gold rows to compare on


# -- the command ------------------------------------------------------------------------------


def _cli_traffic(datasets_dir: Path, per_label: int = 10) -> None:
    with Registry(settings=Settings()) as registry:
        _task(registry)
        pairs = _texts(datasets_dir, per_label)
        registry.traffic.record([_record(i, t, label) for i, (t, label) in enumerate(pairs)])


def test_the_distil_command_prints_the_version_or_its_json_and_exits_2_on_too_few_rows(
    niche_home: Path, datasets_dir: Path
):
    _cli_traffic(datasets_dir)

    shown = runner.invoke(app, ["distil", TASK, "--min-rows", "20"])
    assert shown.exit_code == 0, shown.output
    assert "dataset version " in shown.stdout and f"traffic:{TASK}#ids=1-40" in shown.stdout
    assert "records 1-40, 40 read" in shown.stdout and "40 teacher, 0 gold" in shown.stdout

    as_json = runner.invoke(app, ["distil", TASK, "--min-rows", "20", "--json"])
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.stdout)
    assert payload["already_registered"] is True  # the same rows as the run before
    assert payload["window"] == {
        "since": None,
        "until": None,
        "after_id": None,
        "first_id": 1,
        "last_id": 40,
        "records_read": 40,
    }
    assert payload["rows"] == {"teacher": 40, "gold": 0}
    assert payload["curation"]["origin"]["kind"] == "traffic"
    assert set(payload) >= {"fingerprint", "splits", "skipped", "routes", "test_rows", "task"}

    few = runner.invoke(app, ["distil", TASK, "--json"])  # loop.min_rows: 200
    assert few.exit_code == 2 and few.stdout == ""
    assert few.stderr.startswith(f"error: task {TASK}: 40 labelled rows"), few.stderr
    assert "at least 200" in few.stderr
    since = runner.invoke(app, ["distil", TASK, "--until", "soon"])
    assert since.exit_code == 2 and "--until 'soon'" in since.stderr
    unknown = runner.invoke(app, ["distil", "nosuch"])
    assert unknown.exit_code == 2 and "no task 'nosuch'" in unknown.stderr


@pytest.mark.slow
def test_models_lineage_shows_the_traffic_window_of_a_distilled_model(
    cli_env: Path, datasets_dir: Path, encoder
):
    _cli_traffic(datasets_dir, per_label=20)
    payload = json.loads(runner.invoke(app, ["distil", TASK, "--min-rows", "40", "--json"]).stdout)
    with Registry(settings=Settings()) as registry:
        train_and_register(payload["fingerprint"], encoder=encoder, registry=registry)

    text = runner.invoke(app, ["models", "lineage", TASK, "1"])
    assert text.exit_code == 0, text.output
    assert payload["fingerprint"] in text.stdout
    assert f"distilled from {TASK}'s traffic: records 1-80 (80 read), 80 teacher" in text.stdout
    as_json = json.loads(runner.invoke(app, ["models", "lineage", TASK, "1", "--json"]).stdout)
    assert as_json["dataset"]["report"]["origin"]["last_id"] == 80
