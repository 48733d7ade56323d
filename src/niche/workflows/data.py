"""Labelled data in, a registered dataset version out: load, inspect, curate.

    >>> loaded = load_data(DataSpec(data=Path("tickets.csv"), text_col="body"))
    >>> curated = curate_data(DataSpec(dataset="banking77"))
    >>> open_dataset(curated.version.fingerprint[:12]).fingerprint == curated.version.fingerprint
    True

Loading and inspecting write nothing (except the catalog's download cache). Curating stores the
version's files in the artifact store and registers it in one step: a dataset version niche
knows of is always in the registry, so ``niche datasets list``, ``niche train`` and lineage find
it, and ``niche gc`` keeps its files. :func:`save_dataset` and :func:`open_dataset` are the only
places dataset files are written and read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from niche.data import DatasetVersion, Rows, check_usable, curate, load_file, resolve_dataset
from niche.errors import DatasetNotFoundError, NotFoundError, ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.workflows._context import resolve

if TYPE_CHECKING:
    from niche.registry import DatasetRecord, Registry

__all__ = [
    "DEFAULT_DATASET",
    "CuratedData",
    "DataSpec",
    "LoadedData",
    "curate_data",
    "inspect_data",
    "is_registered",
    "load_data",
    "open_dataset",
    "save_dataset",
]

DEFAULT_DATASET = "banking77"


@dataclass(frozen=True)
class DataSpec:
    """Where labelled rows come from: a catalog ``dataset`` name or a ``data`` file.

    >>> DataSpec(data=Path("tickets.csv"), text_col="body", label_col="queue")
    """

    dataset: str | None = None
    data: Path | None = None
    text_col: str = "text"
    label_col: str = "label"
    header: bool = True

    def __post_init__(self) -> None:
        if self.dataset and self.data:
            raise ValidationError(
                "give either a catalog dataset or a data file, not both", param="data"
            )


@dataclass(frozen=True)
class LoadedData:
    """Validated rows (and a canonical test split when the source ships one)."""

    name: str
    source: str
    train: Rows
    test: Rows | None
    label_descriptions: dict[str, str] | None = None

    @property
    def rows(self) -> int:
        return len(self.train) + (len(self.test) if self.test is not None else 0)


@dataclass(frozen=True)
class CuratedData:
    """A curated dataset version, its registry record (where its files are), and its source.

    ``already`` is true when the same content was registered before (nothing was written).
    """

    version: DatasetVersion
    record: DatasetRecord
    loaded: LoadedData
    already: bool = False

    @property
    def uri(self) -> str | None:
        """Where the files are: a URL in the artifact store."""
        return self.record.uri

    @property
    def path(self) -> Path | None:
        """The files' local directory, when the artifact store is on this machine."""
        from niche.registry.artifacts import local_dir

        return local_dir(self.record.uri)

    @property
    def task(self) -> str:
        """The task ``niche train`` registers a model of this data under by default.

        >>> curate_data(DataSpec(dataset="clinc150/banking")).task
        'clinc150.banking'
        """
        from niche.workflows.train import task_name_for

        return task_name_for(self.loaded.name)

    def to_dict(self) -> dict[str, Any]:
        """What ``niche data curate --json`` prints."""
        path = self.path
        return {
            "fingerprint": self.version.fingerprint,
            "task": self.task,
            "source": self.version.source,
            "uri": self.uri,
            "path": str(path) if path is not None else None,
            "already_registered": self.already,
            "curation": self.version.report.to_dict(),
        }


def load_data(
    spec: DataSpec, settings: Settings | None = None, *, progress: Progress = NO_PROGRESS
) -> LoadedData:
    """Load and validate rows from ``spec``; nothing is written except the download cache.

    >>> load_data(DataSpec(dataset="sms_spam")).rows
    """
    settings = settings or Settings()
    if spec.data is not None:
        rows = load_file(
            spec.data, text_col=spec.text_col, label_col=spec.label_col, header=spec.header
        )
        return LoadedData(name=Path(spec.data).stem, source=str(spec.data), train=rows, test=None)
    name = spec.dataset or DEFAULT_DATASET
    with progress.task(f"resolving {name} (bytes downloaded)", total=None) as advance:
        seen = 0

        def on_bytes(done: int, total: int | None) -> None:
            nonlocal seen
            # Byte counts restart with each file of the dataset.
            advance(done - seen if done >= seen else done)
            seen = done

        catalog = resolve_dataset(name, settings, progress=on_bytes)
    return LoadedData(
        name=catalog.name,
        source=f"catalog:{catalog.name}",
        train=catalog.train,
        test=catalog.test,
        label_descriptions=catalog.label_descriptions,
    )


def inspect_data(spec: DataSpec, settings: Settings | None = None) -> dict[str, Any]:
    """Row counts, label distribution and text lengths of a source, without curating it.

    >>> inspect_data(DataSpec(dataset="banking77"))["splits"]["train"]["labels"]
    77
    """
    loaded = load_data(spec, settings)
    splits = {"train": loaded.train} | ({"test": loaded.test} if loaded.test is not None else {})
    summary: dict[str, Any] = {"name": loaded.name, "source": loaded.source, "splits": {}}
    for split, rows in splits.items():
        counts = Counter(rows.labels)
        lengths = sorted(len(text.split()) for text in rows.texts)
        summary["splits"][split] = {
            "rows": len(rows),
            "labels": len(counts),
            "label_counts": dict(counts.most_common()),
            "words_median": lengths[len(lengths) // 2] if lengths else 0,
            "words_max": lengths[-1] if lengths else 0,
        }
    return summary


def curate_data(
    spec: DataSpec,
    settings: Settings | None = None,
    *,
    test_size: float = 0.2,
    seed: int | None = None,
    near_duplicate_threshold: float = 0.9,
    registry: Registry | None = None,
    progress: Progress = NO_PROGRESS,
) -> CuratedData:
    """Load and curate ``spec``'s rows, save the dataset version and register it.

    Every check that can refuse the data (loading, curation, :func:`~niche.data.check_usable`)
    runs before the registry is opened, so refused data writes nothing; the files and the row
    are then written by one :meth:`~niche.registry.stores.datasets.DatasetStore.register`.

    >>> curate_data(DataSpec(data=Path("tickets.csv")), seed=0).version.fingerprint
    """
    # Checked before loading: a catalog download must not precede a refusal.
    if not 0.0 < test_size < 1.0:
        raise ValidationError(
            f"test_size must be between 0 and 1, got {test_size}", param="test_size"
        )
    if not 0.0 < near_duplicate_threshold <= 1.0:
        raise ValidationError(
            f"near_duplicate_threshold must be in (0, 1], got {near_duplicate_threshold}",
            param="near_duplicate_threshold",
        )
    settings = settings or Settings()
    seed = settings.get("NICHE_SEED") if seed is None else seed
    loaded = load_data(spec, settings, progress=progress)
    with progress.task("curating", total=None):
        version = curate(
            loaded.train,
            test_rows=loaded.test,
            test_size=test_size,
            seed=seed,
            near_duplicate_threshold=near_duplicate_threshold,
            source=loaded.source,
        )
    check_usable(version)
    settings, registry = resolve(settings, registry)
    already = is_registered(version.fingerprint, registry)
    if already:
        note = (
            f"dataset version {version.fingerprint[:16]} already exists (same content); reusing it"
        )
        with progress.task(note, total=None):
            pass
    record = save_dataset(version, settings, registry=registry)
    return CuratedData(version=version, record=record, loaded=loaded, already=already)


def is_registered(fingerprint: str, registry: Registry) -> bool:
    """Whether the dataset version ``fingerprint`` is registered with its files.

    >>> is_registered(version.fingerprint, registry)
    False
    """
    try:
        record = registry.datasets.get(fingerprint)
    except DatasetNotFoundError:
        return False
    return record.uri is not None


def save_dataset(
    version: DatasetVersion, settings: Settings | None = None, *, registry: Registry | None = None
) -> DatasetRecord:
    """Store the dataset version's files in the artifact store and register it.

    Idempotent by fingerprint: saving a version again writes nothing. The record's ``uri``
    names the files in the artifact store (``NICHE_ARTIFACTS_URL``: any fsspec URL), so a
    registry shared by a team points at files every member can fetch.

    >>> save_dataset(version).uri
    'file:///home/ana/.niche/artifacts/sha256/3f/3f2a9c0d…'
    """
    _, registry = resolve(settings, registry)
    return registry.datasets.register(version)


def open_dataset(
    ref: str, settings: Settings | None = None, *, registry: Registry | None = None
) -> DatasetVersion:
    """The registered dataset version whose fingerprint is ``ref`` or starts with it.

    Its files are fetched from the artifact store and verified. A version an older niche
    saved under ``NICHE_HOME/datasets`` without registering it is registered (its files
    stored) on first use.

    >>> open_dataset("3f2a9c0d").source
    'catalog:banking77'
    """
    settings, registry = resolve(settings, registry)
    try:
        return registry.datasets.load(ref)
    except NotFoundError as missing:
        version = _saved_by_an_older_niche(ref, settings)
        if version is None:
            if isinstance(missing, DatasetNotFoundError):
                raise
            # Registered without files: the version is known, its rows are not.
            raise DatasetNotFoundError(str(missing)) from None
        registry.datasets.register(version)
        return version


def _saved_by_an_older_niche(ref: str, settings: Settings) -> DatasetVersion | None:
    """The version under ``NICHE_HOME/datasets`` whose fingerprint starts with ``ref``, if any."""
    from niche.registry import LocalStore

    try:
        return LocalStore(settings).load_dataset(ref)
    except NotFoundError:
        return None
