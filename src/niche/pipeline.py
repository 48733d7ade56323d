"""The steps from labelled data to a proven specialist, each one library call.

    >>> version, path, loaded = curate_data(DataSpec(dataset="banking77"))
    >>> report = evaluate_model(specialist, version)
    >>> report.specialist.accuracy > report.general.accuracy
    True

Registering and promoting live in :mod:`niche.lifecycle`; ``niche quickstart`` strings all
the steps together in :mod:`niche.quickstart`.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from niche.data import DatasetVersion, Rows, curate, load_file, resolve_dataset
from niche.encoders import Encoder
from niche.errors import ConfigurationError
from niche.evaluation import Comparison, Evaluation, compare, evaluate
from niche.progress import NO_PROGRESS, Progress
from niche.registry import LocalStore
from niche.settings import Settings
from niche.specialists import Predictor, TextSpecialist, ZeroShot

__all__ = [
    "DataSpec",
    "EvaluationReport",
    "LoadedData",
    "curate_data",
    "evaluate_model",
    "evaluate_predictor",
    "inspect_data",
    "load_data",
    "uncached_encoder",
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


def uncached_encoder(encoder: Encoder) -> Encoder:
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
    measured.encoder = uncached_encoder(specialist.encoder)
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
        uncached_encoder(specialist.encoder),
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
