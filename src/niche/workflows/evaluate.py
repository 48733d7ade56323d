"""Measure a specialist and the general model on the same rows; record it in the registry.

    >>> report = evaluate_registered("banking77", "champion")
    >>> report.specialist.accuracy > report.general.accuracy
    True

Both run on the uncached encoder, so latency, CPU time, cost and energy are of real work; the
paired test and the cascade curve compare them row by row. Specialists of any kind are loaded
through their kind (:func:`~niche.workflows.load_specialist`); the general baseline is the
``zero-shot`` kind unless a caller passes another predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from niche.data import DatasetVersion, Rows
from niche.encoders import Encoder, default_encoder
from niche.errors import DatasetNotFoundError, ValidationError
from niche.evaluation import Comparison, Evaluation, compare, evaluate
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.specialists import FitContext, Predictor, get_kind
from niche.workflows._context import resolve
from niche.workflows.data import open_dataset
from niche.workflows.models import load_specialist

if TYPE_CHECKING:
    from niche.registry import EvaluationRecord, ModelVersionRecord, Registry

__all__ = [
    "EvaluationReport",
    "evaluate_model",
    "evaluate_predictor",
    "evaluate_registered",
    "measuring_encoder",
    "record_evaluation",
    "training_data",
    "uncached_encoder",
    "zero_shot_baseline",
]


@dataclass
class EvaluationReport:
    """A specialist and the general model measured on the same rows, and their comparison."""

    split: str
    rows: int
    specialist: Evaluation
    general: Evaluation
    comparison: Comparison

    def to_dict(self) -> dict[str, Any]:
        """What ``niche evaluate --json`` prints."""
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
    """The encoder without its embedding cache: latency and cost must be of real work.

    >>> uncached_encoder(CachedEncoder(onnx, cache)) is onnx
    True
    """
    inner = getattr(encoder, "encoder", encoder)
    return inner if isinstance(inner, Encoder) else encoder


def measuring_encoder(encoder: Encoder | None, settings: Settings | None = None) -> Encoder:
    """The encoder to measure with: ``encoder`` without its cache, else the settings' uncached.

    >>> measuring_encoder(CachedEncoder(onnx, cache)) is onnx
    True
    """
    if encoder is not None:
        return uncached_encoder(encoder)
    return default_encoder(settings or Settings(), cache=False)


def _split_rows(version: DatasetVersion, split: str) -> Rows:
    if split not in version.splits:
        raise ValidationError(
            f"dataset version {version.fingerprint[:16]} has no split {split!r} "
            f"(splits: {', '.join(version.splits)})",
            param="split",
        )
    return version.splits[split]


def evaluate_predictor(
    predictor: Predictor,
    version: DatasetVersion,
    settings: Settings | None = None,
    *,
    split: str = "test",
    seed: int | None = None,
) -> Evaluation:
    """Quality, latency, cost and energy of one predictor on ``version``'s ``split``.

    The predictor is measured as it is: load it on an uncached encoder
    (``load_specialist(record, encoder=uncached_encoder(encoder))``) so the numbers are of
    real work, not of embedding-cache hits.

    >>> evaluate_predictor(load_specialist(record, encoder=uncached), version).accuracy
    """
    settings = settings or Settings()
    rows = _split_rows(version, split)
    return evaluate(
        predictor,
        rows.texts,
        rows.labels,
        n_resamples=settings.get("NICHE_BOOTSTRAP_RESAMPLES"),
        seed=settings.get("NICHE_SEED") if seed is None else seed,
        cpu_hour_usd=settings.get("NICHE_CPU_HOUR_USD"),
        watts_per_core=settings.get("NICHE_CPU_WATTS_PER_CORE"),
    )


def zero_shot_baseline(
    label_set: list[str],
    settings: Settings | None = None,
    *,
    encoder: Encoder | None = None,
    label_descriptions: dict[str, str] | None = None,
) -> Predictor:
    """The offline general model over ``label_set``, on the uncached ``encoder``.

    >>> zero_shot_baseline(["ham", "spam"], encoder=encoder).kind
    'zero-shot'
    """
    settings = settings or Settings()
    context = FitContext(
        settings,
        encoder=measuring_encoder(encoder, settings),
        options={"descriptions": label_descriptions},
    )
    return get_kind("zero-shot").fit([], label_set, context)


def evaluate_model(
    specialist: Predictor,
    version: DatasetVersion,
    settings: Settings | None = None,
    *,
    split: str = "test",
    general: Predictor | None = None,
    label_descriptions: dict[str, str] | None = None,
    encoder: Encoder | None = None,
    seed: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> EvaluationReport:
    """Evaluate ``specialist`` and the general model (default: zero-shot) on ``version``'s ``split``.

    ``encoder`` is what the zero-shot baseline runs on (uncached; default: the settings').
    Load ``specialist`` on the uncached encoder too, so both are measured doing real work.

    >>> evaluate_model(specialist, version, encoder=encoder).to_dict()["paired_test"]["p_value"]
    """
    settings = settings or Settings()
    seed = settings.get("NICHE_SEED") if seed is None else seed
    rows = _split_rows(version, split)
    if general is None:
        general = zero_shot_baseline(
            specialist.label_set,
            settings,
            encoder=encoder,
            label_descriptions=label_descriptions,
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


def training_data(
    record: ModelVersionRecord,
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
) -> DatasetVersion:
    """The dataset version model version ``record`` was trained on (its test split is its proof).

    >>> training_data(registry.models.get("banking77", 3)).fingerprint == record.dataset_fingerprint
    True
    """
    try:
        return open_dataset(record.dataset_fingerprint, settings, registry=registry)
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(
            f"model {record.task} v{record.version} was trained on dataset version "
            f"{record.dataset_fingerprint[:16]}, which cannot be read: {exc}"
        ) from exc


def record_evaluation(
    registry: Registry, record: ModelVersionRecord, data: DatasetVersion, report: EvaluationReport
) -> EvaluationRecord:
    """Store ``report`` as an evaluation of model version ``record`` on ``data``.

    >>> record_evaluation(registry, model, version, report).split
    'test'
    """
    return registry.models.record_evaluation(
        record.task,
        record.version,
        dataset_fingerprint=data.fingerprint,
        split=report.split,
        metrics=report.specialist.to_dict(),
        general=report.general.to_dict(),
        comparison=report.comparison.to_dict(),
    )


def evaluate_registered(
    task: str,
    version: int | str,
    settings: Settings | None = None,
    *,
    dataset: str | None = None,
    split: str = "test",
    seed: int | None = None,
    registry: Registry | None = None,
    encoder: Encoder | None = None,
    progress: Progress = NO_PROGRESS,
) -> EvaluationReport:
    """Evaluate a registered model version and the general model on the same rows; record it.

    ``dataset`` (a fingerprint or prefix) defaults to the version the model was trained on.

    >>> evaluate_registered("banking77", 3, split="test").rows
    3080
    """
    settings, registry = resolve(settings, registry)
    spec = registry.tasks.get(task).spec
    record = registry.models.get(task, version)
    if dataset is None:
        data = training_data(record, settings, registry=registry)
    else:
        data = open_dataset(dataset, settings, registry=registry)
    measured = measuring_encoder(encoder, settings)
    report = evaluate_model(
        load_specialist(record, settings, encoder=measured),
        data,
        settings,
        split=split,
        label_descriptions=spec.label_descriptions,
        encoder=measured,
        seed=seed,
        progress=progress,
    )
    record_evaluation(registry, record, data, report)
    return report
