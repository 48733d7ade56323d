"""The steps from labelled data to a proven specialist, each one library call.

    >>> result = quickstart(DataSpec(dataset="banking77"))
    >>> result.specialist.accuracy > result.general.accuracy
    True

The CLI's ``niche data inspect|curate``, ``niche train``, ``niche evaluate`` and
``niche quickstart`` each call one function here and only format what it returns.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from niche.data import CurationReport, DatasetVersion, Rows, curate, load_file, resolve_dataset
from niche.encoders import Encoder, default_encoder
from niche.errors import ConfigurationError
from niche.evaluation import Comparison, Evaluation, compare, evaluate
from niche.progress import NO_PROGRESS, Progress
from niche.registry import LocalStore, ModelRecord
from niche.settings import Settings
from niche.specialists import Predictor, TextSpecialist, ZeroShot
from niche.training import train_text_specialist

__all__ = [
    "DataSpec",
    "EvaluationReport",
    "LoadedData",
    "QuickstartResult",
    "curate_data",
    "evaluate_model",
    "evaluate_predictor",
    "inspect_data",
    "load_data",
    "quickstart",
    "train_model",
]

DEFAULT_DATASET = "banking77"


@dataclass(frozen=True)
class DataSpec:
    """Where labelled rows come from: a catalog ``dataset`` name or a ``data`` file."""

    dataset: str | None = None
    data: Path | None = None
    text_col: str = "text"
    label_col: str = "label"
    header: bool = True

    def __post_init__(self) -> None:
        if self.dataset and self.data:
            raise ConfigurationError("give either a catalog dataset or a data file, not both")


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


def load_data(
    spec: DataSpec, settings: Settings | None = None, *, progress: Progress = NO_PROGRESS
) -> LoadedData:
    """Load and validate rows from ``spec``; nothing is written except the download cache."""
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
    """Row counts, label distribution and text lengths of a source, without curating it."""
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
    progress: Progress = NO_PROGRESS,
) -> tuple[DatasetVersion, Path, LoadedData]:
    """Load, curate and save a dataset version; returns it, where it went, and the source."""
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
    path = LocalStore(settings).save_dataset(version)
    return version, path, loaded


def train_model(
    version: DatasetVersion,
    settings: Settings | None = None,
    *,
    encoder: Encoder | None = None,
    seed: int | None = None,
    fraction: float = 1.0,
    progress: Progress = NO_PROGRESS,
) -> ModelRecord:
    """Train a text specialist on ``version`` and save it; returns the saved record."""
    settings = settings or Settings()
    seed = settings.get("NICHE_SEED") if seed is None else seed
    encoder = encoder or default_encoder(settings)
    trained = train_text_specialist(
        version, encoder, seed=seed, fraction=fraction, progress=progress
    )
    return LocalStore(settings).save_model(trained)


@dataclass
class EvaluationReport:
    """A specialist and the general model measured on the same rows, and their comparison."""

    split: str
    rows: int
    specialist: Evaluation
    general: Evaluation
    comparison: Comparison

    def to_dict(self) -> dict[str, Any]:
        comparison = self.comparison.to_dict()
        return {
            "split": self.split,
            "rows": self.rows,
            "specialist": self.specialist.to_dict(),
            "general": self.general.to_dict(),
            "paired_test": comparison["paired_test"],
            "cascade": comparison["cascade"],
        }


def _measurement_encoder(encoder: Encoder) -> Encoder:
    """The encoder without its embedding cache: latency and cost must be of real work."""
    return getattr(encoder, "encoder", encoder)


def _split_rows(version: DatasetVersion, split: str) -> Rows:
    if split not in version.splits:
        raise ConfigurationError(
            f"dataset version {version.fingerprint[:16]} has no split {split!r} "
            f"(splits: {', '.join(version.splits)})"
        )
    return version.splits[split]


def _measured(specialist: TextSpecialist) -> TextSpecialist:
    """A copy of ``specialist`` running on the uncached encoder."""
    measured = copy.copy(specialist)
    measured.encoder = _measurement_encoder(specialist.encoder)
    return measured


def evaluate_predictor(
    predictor: Predictor,
    version: DatasetVersion,
    settings: Settings | None = None,
    *,
    split: str = "test",
    seed: int | None = None,
) -> Evaluation:
    """Quality, latency, cost and energy of one predictor on ``version``'s ``split``.

    A :class:`TextSpecialist` runs on its uncached encoder, so the numbers are of real work.
    """
    settings = settings or Settings()
    rows = _split_rows(version, split)
    if isinstance(predictor, TextSpecialist):
        predictor = _measured(predictor)
    return evaluate(
        predictor,
        rows.texts,
        rows.labels,
        n_resamples=settings.get("NICHE_BOOTSTRAP_RESAMPLES"),
        seed=settings.get("NICHE_SEED") if seed is None else seed,
        cpu_hour_usd=settings.get("NICHE_CPU_HOUR_USD"),
        watts_per_core=settings.get("NICHE_CPU_WATTS_PER_CORE"),
    )


def evaluate_model(
    specialist: TextSpecialist,
    version: DatasetVersion,
    settings: Settings | None = None,
    *,
    split: str = "test",
    general: Predictor | None = None,
    label_descriptions: dict[str, str] | None = None,
    seed: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> EvaluationReport:
    """Evaluate ``specialist`` and the general model on ``version``'s ``split``.

    Both run on the same rows with the uncached encoder, so latency, CPU time, cost and
    energy are of real work; the paired test and the cascade curve compare them row by row.
    """
    settings = settings or Settings()
    seed = settings.get("NICHE_SEED") if seed is None else seed
    rows = _split_rows(version, split)
    general = general or ZeroShot(
        specialist.label_set,
        _measurement_encoder(specialist.encoder),
        descriptions=label_descriptions,
    )
    with progress.task("evaluating the specialist", total=None):
        specialist_eval = evaluate_predictor(specialist, version, settings, split=split, seed=seed)
    with progress.task("evaluating the general model", total=None):
        general_eval = evaluate_predictor(general, version, settings, split=split, seed=seed)
    comparison = compare(
        specialist_eval,
        general_eval,
        rows.labels,
        n_resamples=settings.get("NICHE_BOOTSTRAP_RESAMPLES"),
        seed=seed,
    )
    return EvaluationReport(
        split=split,
        rows=len(rows),
        specialist=specialist_eval,
        general=general_eval,
        comparison=comparison,
    )


@dataclass
class QuickstartResult:
    """Everything ``niche quickstart`` did: the data, the model, the proof, where it all went."""

    name: str
    version: DatasetVersion
    dataset_path: Path
    model: ModelRecord
    evaluation: EvaluationReport
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def specialist(self) -> Evaluation:
        return self.evaluation.specialist

    @property
    def general(self) -> Evaluation:
        return self.evaluation.general

    @property
    def report(self) -> CurationReport:
        return self.version.report

    def to_dict(self) -> dict[str, Any]:
        evaluation = self.evaluation.to_dict()
        return {
            "dataset": {
                "name": self.name,
                "source": self.version.source,
                "fingerprint": self.version.fingerprint,
                "rows": sum(len(rows) for rows in self.version.splits.values()),
                "splits": {name: len(rows) for name, rows in self.version.splits.items()},
                "labels": len(self.version.label_set),
                "path": str(self.dataset_path),
            },
            "curation": self.report.to_dict(),
            "specialist": {
                "model_id": self.model.id,
                "path": str(self.model.path),
                **evaluation["specialist"],
            },
            "general": evaluation["general"],
            "paired_test": evaluation["paired_test"],
            "cascade": evaluation["cascade"],
            "evaluated_on": {"split": evaluation["split"], "rows": evaluation["rows"]},
            "timings_s": self.timings_s,
        }


def quickstart(
    spec: DataSpec | None = None,
    settings: Settings | None = None,
    *,
    seed: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> QuickstartResult:
    """Curate → train → evaluate the specialist and the general model on the test split."""
    spec = spec or DataSpec(dataset=DEFAULT_DATASET)
    settings = settings or Settings()
    timings: dict[str, float] = {}

    started = time.perf_counter()
    version, dataset_path, loaded = curate_data(spec, settings, seed=seed, progress=progress)
    timings["curate"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    encoder = default_encoder(settings)
    load = getattr(_measurement_encoder(encoder), "load", None)
    if callable(load):
        with progress.task("loading the encoder (exported to ONNX on first use)", total=None):
            load()
    record = train_model(version, settings, encoder=encoder, seed=seed, progress=progress)
    timings["train"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    specialist, record = LocalStore(settings).load_model(record.id, encoder)
    report = evaluate_model(
        specialist,
        version,
        settings,
        label_descriptions=loaded.label_descriptions,
        seed=seed,
        progress=progress,
    )
    timings["evaluate"] = round(time.perf_counter() - started, 3)
    return QuickstartResult(
        name=loaded.name,
        version=version,
        dataset_path=dataset_path,
        model=record,
        evaluation=report,
        timings_s=timings,
    )
