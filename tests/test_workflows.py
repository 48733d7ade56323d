"""The workflows that need no model: tasks from KEY=VALUE pairs, traffic, gc, lineage, datasets,
and the refusals of bad arguments, on a real registry (SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import niche.workflows as workflows
from niche.data import Rows, curate
from niche.errors import (
    AlreadyExistsError,
    DatasetNotFoundError,
    TaskNotFoundError,
    ValidationError,
)
from niche.registry import LocalStore, Registry, TrafficRecord
from niche.registry.artifacts import ArtifactStore
from niche.registry.tasks import TaskSpec
from niche.settings import Settings
from niche.workflows import (
    DataSpec,
    answered,
    collect_garbage,
    count_traffic,
    create_task,
    curate_data,
    edit_task,
    lineage,
    list_traffic,
    open_dataset,
    parse_changes,
    parse_since,
    promote,
    save_dataset,
    show_task,
    train_and_register,
)
from tests.clocks import START

TASK = "tickets"


def _same(a: Any, b: Any) -> bool:
    """Two dataset versions hold the same rows (loaded rows name their file as source)."""
    return a.fingerprint == b.fingerprint and all(
        (a.splits[s].texts, a.splits[s].labels) == (b.splits[s].texts, b.splits[s].labels)
        for s in ("train", "test")
    )


def _all_rows(version: Any) -> tuple[list[str], list[str]]:
    texts = [t for split in version.splits.values() for t in split.texts]
    labels = [label for split in version.splits.values() for label in split.labels]
    return texts, labels


def _version(source: str = "tickets.csv") -> Any:
    texts = [f"{word} number {i}" for word in ("refund", "card", "transfer") for i in range(6)]
    labels = [text.split()[0] for text in texts]
    return curate(Rows(texts=texts, labels=labels, source=source), seed=0, source=source)


def test_the_package_exports_what_it_lists():
    assert sorted(workflows.__all__) == sorted(set(workflows.__all__))
    for name in workflows.__all__:
        assert getattr(workflows, name) is not None, name
    # A function whose module shares its name is the function, not the module.
    assert callable(workflows.promote) and callable(workflows.quickstart)


# -- tasks -----------------------------------------------------------------------------------


def test_parse_changes_nests_dotted_keys_and_reads_json_values():
    assert parse_changes(
        ["sla.min_quality=0.9", "sla.latency_p95_ms=20", "domain=finance", 'labels=["a", "b"]']
    ) == {
        "sla": {"min_quality": 0.9, "latency_p95_ms": 20},
        "domain": "finance",
        "labels": ["a", "b"],
    }
    assert parse_changes(["description=a=b"]) == {"description": "a=b"}


@pytest.mark.parametrize("pair", ["cascade_threshold", "=0.7", "sla.=1"])
def test_parse_changes_refuses_a_malformed_pair_naming_it(pair):
    with pytest.raises(ValidationError) as caught:
        parse_changes([pair])
    assert caught.value.param == "set" and repr(pair) in str(caught.value)
    assert caught.value.exit_code == 2 and caught.value.http_status == 400


def test_a_section_given_as_a_value_and_by_field_is_refused():
    with pytest.raises(ValidationError, match="sla is given both"):
        parse_changes(["sla=3", "sla.min_quality=0.9"])


def test_create_show_and_edit_a_task(registry: Registry):
    created = create_task(
        TASK,
        labels=["refund", "card"],
        domain="banking",
        changes=["sla.min_quality=0.9", "cascade_threshold=0.7"],
        registry=registry,
    )
    assert created.spec.labels == ["refund", "card"]
    assert (created.spec.sla.min_quality, created.spec.cascade_threshold) == (0.9, 0.7)
    edited = edit_task(TASK, ["sla.latency_p95_ms=20"], registry=registry)
    # A partial section keeps the fields it does not name.
    assert (edited.spec.sla.latency_p95_ms, edited.spec.sla.min_quality) == (20, 0.9)
    shown = show_task(TASK, registry=registry)
    assert shown["spec"]["sla"]["latency_p95_ms"] == 20 and shown["aliases"] == {}
    with pytest.raises(AlreadyExistsError):
        create_task(TASK, registry=registry)


@pytest.mark.parametrize(
    ("pair", "says"),
    [
        ("sla.min_quality=high", "--set sla.min_quality=high has a value of the wrong type"),
        ("cascade_threshold=high", "--set cascade_threshold=high has a value of the wrong type"),
        ("cascade_threshold=[1]", "cascade_threshold takes one value, not fields or a list"),
        ("sla=3", "sla takes fields, e.g. --set sla.FIELD=VALUE"),
        ("labels=refund", "labels must be a JSON list"),
        ("label_descriptions=3", "label_descriptions must be a JSON object"),
        ("domain.name=x", "domain takes one value"),
    ],
)
def test_a_pair_that_does_not_fit_the_spec_is_refused_and_nothing_changes(
    registry: Registry, pair, says
):
    create_task(TASK, labels=["refund", "card"], registry=registry)
    before = registry.tasks.get(TASK)
    with pytest.raises(ValidationError) as caught:
        edit_task(TASK, ["description=edited", pair], registry=registry)
    assert says in str(caught.value) and str(caught.value).startswith(f"task {TASK}: ")
    assert registry.tasks.get(TASK) == before
    with pytest.raises(ValidationError, match=r"^task other: "):
        create_task("other", changes=[pair], registry=registry)
    assert [t.name for t in registry.tasks.all()] == [TASK]


def test_editing_an_unknown_task_names_it(registry: Registry):
    with pytest.raises(TaskNotFoundError, match="no task 'nosuch'"):
        edit_task("nosuch", ["domain=x"], registry=registry)


# -- traffic ---------------------------------------------------------------------------------


def test_parse_since_reads_durations_against_the_injected_clock_and_refuses_the_rest():
    assert parse_since("90m", clock=lambda: START) == datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    assert parse_since("2026-03-01T11:00:00") == datetime(2026, 3, 1, 11, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(ValidationError) as caught:
        parse_since("yesterday")
    assert caught.value.param == "since" and "'yesterday'" in str(caught.value)


def test_the_answer_a_client_got_depends_on_the_route(registry: Registry):
    base: dict[str, Any] = {"model": TASK, "task": TASK, "input": "x", "status": 200}
    sent = {
        "specialist": {"specialist_label": "refund"},
        "specialist-fallback": {"specialist_label": "card", "general_answer": None},
        "general": {"specialist_label": "card", "general_label": "refund"},
        "general-fallback": {"specialist_label": "card", "general_answer": "a refund, surely"},
        "passthrough": {"general_answer": "Hello!"},
    }
    registry.traffic.record(
        [
            TrafficRecord(route=route, latency_ms=1.0, **base, **fields)
            for route, fields in sent.items()
        ]
    )
    records = list_traffic(TASK, since="2026-03-01T00:00:00Z", registry=registry)
    assert {r.route: answered(r) for r in records} == {
        "specialist": "refund",
        "specialist-fallback": "card",
        "general": "refund",
        "general-fallback": "a refund, surely",
        "passthrough": "Hello!",
    }
    assert count_traffic(TASK, registry=registry) == 5
    assert count_traffic(TASK, since="2030-01-01T00:00:00Z", registry=registry) == 0
    assert [r.route for r in list_traffic(registry=registry, limit=2)] == [
        "general-fallback",
        "passthrough",
    ]


# -- datasets, lineage, gc -------------------------------------------------------------------


def test_a_saved_dataset_goes_through_the_artifact_store_and_opens_by_prefix(registry: Registry):
    settings = Settings()
    version = _version()
    record = save_dataset(version, settings, registry=registry)
    store = ArtifactStore.from_settings(settings)
    (digest,) = store.digests()
    assert registry.datasets.artifact_digests() == {digest}
    assert record.uri == store.uri(digest) and record.uri.startswith("file://")
    assert registry.datasets.get(version.fingerprint).uri == record.uri
    assert not (settings.home / "datasets").exists()  # no second copy beside the store
    assert save_dataset(version, settings, registry=registry) == record  # idempotent
    assert store.digests() == {digest}
    assert _same(open_dataset(version.fingerprint[:8], settings, registry=registry), version)


def test_a_dataset_saved_but_never_registered_is_registered_on_first_use(registry: Registry):
    settings = Settings()
    version = _version()
    old = LocalStore(settings).save_dataset(version)  # as a niche that did not register it
    assert registry.datasets.all() == []
    assert _same(open_dataset(version.fingerprint[:4], settings, registry=registry), version)
    assert [d.fingerprint for d in registry.datasets.all()] == [version.fingerprint]
    # Its files were stored on first use: the old directory is no longer needed.
    assert registry.datasets.artifact_digests() == ArtifactStore.from_settings(settings).digests()
    shutil.rmtree(old)
    assert _same(open_dataset(version.fingerprint[:8], settings, registry=registry), version)


def test_a_dataset_an_older_niche_registered_with_its_local_path_still_opens(registry: Registry):
    settings = Settings()
    version = _version()
    path = LocalStore(settings).save_dataset(version)
    registry.datasets.register_path(version, uri=str(path.resolve()))
    assert _same(open_dataset(version.fingerprint[:8], settings, registry=registry), version)
    assert registry.datasets.artifact_digests() == set()  # read in place, nothing copied


def test_a_dataset_registered_without_files_is_not_found_naming_it(registry: Registry):
    version = _version()
    registry.datasets.register_path(version)
    with pytest.raises(DatasetNotFoundError, match="registered without files"):
        open_dataset(version.fingerprint, registry=registry)


def test_an_unknown_dataset_names_the_reference(registry: Registry):
    with pytest.raises(DatasetNotFoundError, match="no dataset version 'deadbeef'"):
        open_dataset("deadbeef", registry=registry)


def _register_model(registry: Registry, fingerprint: str, digest: str = "ab" * 32) -> None:
    registry.tasks.ensure(TaskSpec(name=TASK, labels=["card", "refund", "transfer"]))
    registry.models.register(
        TASK,
        kind="text",
        artifact_digest=digest,
        artifact_uri=f"file:///{digest}",
        dataset_fingerprint=fingerprint,
        lineage={"train_rows": 12},
    )


def test_lineage_walks_to_the_registered_dataset(registry: Registry):
    version = _version()
    save_dataset(version, registry=registry)
    _register_model(registry, version.fingerprint)
    walked = lineage(TASK, "1", registry=registry)
    assert walked["dataset"]["fingerprint"] == version.fingerprint
    assert walked["dataset"]["source"] == "tickets.csv"


def test_lineage_of_a_model_whose_dataset_is_not_registered_stops_at_the_model(
    registry: Registry,
):
    _register_model(registry, "cd" * 32)
    walked = lineage(TASK, "v1", registry=registry)
    assert walked["dataset"] == {"registered": False, "fingerprint": "cd" * 32}
    assert walked["model"]["version"] == 1


def test_gc_removes_only_artifacts_no_model_version_references(registry: Registry, tmp_path: Path):
    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    kept_dir, orphan_dir = tmp_path / "kept", tmp_path / "orphan"
    for directory, content in ((kept_dir, "kept"), (orphan_dir, "orphan")):
        directory.mkdir()
        (directory / "config.json").write_text(f'{{"what": "{content}"}}')
    kept, orphan = store.put_dir(kept_dir).digest, store.put_dir(orphan_dir).digest
    _register_model(registry, "cd" * 32, digest=kept)

    dry = collect_garbage(settings, dry_run=True, registry=registry)
    assert dry.to_dict() == {"removed": [orphan], "dry_run": True}
    assert store.digests() == {kept, orphan}
    assert collect_garbage(settings, registry=registry).removed == [orphan]
    assert store.digests() == {kept}
    assert collect_garbage(settings, registry=registry).removed == []


def test_gc_keeps_the_files_of_curated_datasets(registry: Registry, tmp_path: Path):
    settings = Settings()
    rows = tmp_path / "tickets.csv"
    version = _version()
    rows.write_text(
        "text,label\n"
        + "".join(f"{text},{label}\n" for text, label in zip(*_all_rows(version), strict=True)),
        encoding="utf-8",
    )
    curated = curate_data(DataSpec(data=rows), settings, seed=0, registry=registry)
    store = ArtifactStore.from_settings(settings)
    orphan_dir = tmp_path / "orphan"
    orphan_dir.mkdir()
    (orphan_dir / "config.json").write_text("{}")
    orphan = store.put_dir(orphan_dir).digest

    assert collect_garbage(settings, registry=registry).removed == [orphan]
    assert store.digests() == registry.datasets.artifact_digests() != set()
    fingerprint = curated.version.fingerprint
    assert _same(open_dataset(fingerprint[:8], settings, registry=registry), curated.version)


# -- bad arguments are refused before any work -----------------------------------------------


def test_a_catalog_dataset_and_a_file_together_are_refused():
    with pytest.raises(ValidationError) as caught:
        DataSpec(dataset="banking77", data=Path("tickets.csv"))
    assert caught.value.param == "data"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"test_size": 1.0}, "test_size"),
        ({"near_duplicate_threshold": 0.0}, "near_duplicate_threshold"),
    ],
)
def test_curation_options_are_checked_before_the_source_is_read(registry: Registry, options, param):
    # The file does not exist: a refusal naming the option proves nothing was read first.
    with pytest.raises(ValidationError) as caught:
        curate_data(DataSpec(data=Path("/nonexistent.csv")), registry=registry, **options)
    assert caught.value.param == param


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_a_training_fraction_outside_0_1_is_refused_before_the_dataset_is_looked_up(
    registry: Registry, fraction
):
    with pytest.raises(ValidationError) as caught:
        train_and_register("deadbeef", registry=registry, fraction=fraction)
    assert caught.value.param == "fraction" and str(fraction) in str(caught.value)


@pytest.mark.parametrize("why", [None, "", "   "])
def test_a_forced_promotion_needs_a_reason(registry: Registry, why):
    _register_model(registry, "cd" * 32)
    with pytest.raises(ValidationError) as caught:
        promote(TASK, 1, registry=registry, force=True, why=why)
    assert caught.value.param == "why"
    assert registry.promotions.gates(TASK) == [] and registry.promotions.aliases(TASK) == {}


def test_promoting_a_model_whose_dataset_is_gone_names_the_model(registry: Registry):
    _register_model(registry, "cd" * 32)
    with pytest.raises(DatasetNotFoundError, match=f"model {TASK} v1 was trained on dataset"):
        promote(TASK, 1, registry=registry)


def test_workflows_import_neither_the_gateway_nor_the_cli():
    import ast

    package = Path(workflows.__file__).parent
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith(("niche.gateway", "niche.cli")), (module.name, name)
