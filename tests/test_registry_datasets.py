"""Dataset versions' files go through the artifact store (any fsspec URL); both backends."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import pytest
import sqlalchemy as sa

from niche.data import DatasetVersion, Rows, curate
from niche.errors import ChecksumMismatchError, NotFoundError
from niche.registry import LocalStore, Registry
from niche.registry import db as registry_db
from niche.registry.artifacts import ArtifactStore
from niche.registry.models import Base
from niche.settings import Settings
from tests.clocks import StepClock


def _version(extra: str = "") -> DatasetVersion:
    texts = [f"my invoice is wrong {i}{extra}" for i in range(5)] + [
        f"the service is down again {i}{extra}" for i in range(5)
    ]
    rows = Rows(texts=texts, labels=["billing"] * 5 + ["outage"] * 5, source="mem")
    return curate(rows, test_size=0.4, seed=0, source="tickets.csv")


def _same_rows(a: DatasetVersion, b: DatasetVersion) -> bool:
    return a.fingerprint == b.fingerprint and all(
        a.splits[s].texts == b.splits[s].texts and a.splits[s].labels == b.splits[s].labels
        for s in ("train", "test")
    )


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"memory://niche-datasets-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_files_live_in_the_artifact_store_not_where_they_were_curated(
    registry: Registry, niche_home: Path
) -> None:
    version = _version()
    curated = LocalStore(Settings()).save_dataset(version)  # as `niche data curate` leaves it
    record = registry.datasets.register(version)
    store = ArtifactStore.from_settings(Settings())
    (digest,) = registry.datasets.artifact_digests()
    assert record.uri == store.uri(digest)
    assert record.uri.startswith("file://" + str(niche_home / "artifacts"))
    assert record.splits == {split: len(rows) for split, rows in version.splits.items()}
    assert digest in registry.referenced_digests()
    assert store.gc(registry.referenced_digests()) == []  # gc keeps a registered dataset

    shutil.rmtree(curated)
    loaded = registry.datasets.load(version.fingerprint[:8])
    assert _same_rows(loaded, version) and loaded.report == version.report
    assert registry.datasets.register(version) == record  # idempotent, nothing re-uploaded
    assert store.digests() == {digest}


def test_a_tampered_dataset_file_is_refused_on_load(registry: Registry) -> None:
    version = _version()
    registry.datasets.register(version)
    (digest,) = registry.datasets.artifact_digests()
    stored = Path(ArtifactStore.from_settings(Settings()).get_dir(digest)) / "train.jsonl"
    stored.write_text(stored.read_text().replace("invoice", "lnvoice"))
    with pytest.raises(ChecksumMismatchError, match=digest):
        registry.datasets.load(version.fingerprint)


def test_a_memory_url_artifact_store_holds_and_serves_the_files(
    database_url: str, memory_root: str, tmp_path: Path
) -> None:
    artifacts = ArtifactStore(memory_root, cache_dir=tmp_path / "cache")
    with Registry(database_url, clock=StepClock(), artifacts=artifacts) as registry:
        version = _version()
        record = registry.datasets.register(version)
        assert record.uri is not None and record.uri.startswith("memory://")
        assert fsspec.filesystem("memory").exists(record.uri)
        assert _same_rows(registry.datasets.load(version.fingerprint), version)
        assert registry.datasets.artifacts is artifacts


def test_the_artifact_url_comes_from_the_settings(database_url: str, tmp_path: Path) -> None:
    root = tmp_path / "team-artifacts"
    settings = Settings(home=str(tmp_path / "home"), artifacts_url=f"file://{root}")
    with Registry(database_url, settings=settings, clock=StepClock()) as registry:
        record = registry.datasets.register(_version())
    assert record.uri is not None and record.uri.startswith(f"file://{root}/sha256/")


def test_another_member_loads_from_the_store_the_version_was_registered_in(
    database_url: str, memory_root: str, tmp_path: Path
) -> None:
    version = _version()
    team = ArtifactStore(memory_root, cache_dir=tmp_path / "cache-a")
    with Registry(database_url, clock=StepClock(), artifacts=team) as registry:
        registry.datasets.register(version)
    laptop = ArtifactStore(tmp_path / "laptop", cache_dir=tmp_path / "cache-b")
    with Registry(database_url, artifacts=laptop) as registry:
        assert _same_rows(registry.datasets.load(version.fingerprint), version)
    assert laptop.digests() == set()


def test_versions_registered_with_a_path_still_load_and_can_get_their_files_stored(
    registry: Registry, tmp_path: Path
) -> None:
    version = _version()
    path = version.save(tmp_path / "old-style")
    legacy = registry.datasets.register_path(version, uri=str(path))
    assert legacy.uri == str(path) and registry.datasets.artifact_digests() == set()
    assert _same_rows(registry.datasets.load(version.fingerprint), version)

    moved = registry.datasets.register(version, actor="ana")
    assert moved.uri is not None and moved.uri.startswith("file://")
    assert moved.created_at == legacy.created_at
    assert [e.action for e in registry.audit.events()] == [
        "dataset.registered",
        "dataset.files_added",
    ]
    shutil.rmtree(path)
    assert _same_rows(registry.datasets.load(version.fingerprint), version)


def test_a_version_registered_without_files_says_so_on_load(registry: Registry) -> None:
    version = _version()
    registry.datasets.register_path(version)
    with pytest.raises(NotFoundError, match="registered without files"):
        registry.datasets.load(version.fingerprint)


def test_rows_of_an_older_schema_survive_the_migration(database_url: str, tmp_path: Path) -> None:
    from alembic import command

    version = _version()
    path = version.save(tmp_path / "before-0004")
    engine = registry_db.create_engine_for(database_url)
    try:
        with engine.execution_options(**registry_db.WRITE).begin() as connection:
            command.upgrade(registry_db._alembic_config(connection), "0003")
        table = Base.metadata.tables["dataset_versions"]
        with engine.begin() as connection:
            assert "artifact_digest" not in {
                c["name"] for c in sa.inspect(connection).get_columns("dataset_versions")
            }
            connection.execute(
                sa.insert(table).values(
                    fingerprint=version.fingerprint,
                    source=version.source,
                    report=version.report.to_dict(),
                    splits={split: len(rows) for split, rows in version.splits.items()},
                    uri=str(path),
                    created_at=datetime(2026, 1, 1, tzinfo=UTC),
                )
            )
    finally:
        engine.dispose()
    with Registry(database_url) as registry:
        assert registry.upgrade() == registry_db.head_revision() == "0009"
        assert registry.datasets.get(version.fingerprint).uri == str(path)
        assert _same_rows(registry.datasets.load(version.fingerprint), version)
        assert registry.audit.events() == []
