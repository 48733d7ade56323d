"""Measure a specialist and the general model on the same rows; record it in the registry.

    >>> report = evaluate_registered("banking77", "champion")
    >>> report.specialist.accuracy > report.general.accuracy
    True

Both run on the uncached encoder, so latency, CPU time, cost and energy are of real work; the
paired test and the cascade curve compare them row by row. Specialists of any kind are loaded
through their kind (:func:`~niche.workflows.load_specialist`). The general model is the task's
own (:func:`general_predictor`): its OpenAI-compatible endpoint when ``general.kind`` is
``openai`` (a :class:`~niche.specialists.remote.RemotePredictor`, its answers cached by prompt
so a re-evaluation pays nothing, its cost from tokens at the task's prices, optionally asked a
seeded sample of ``NICHE_EVALUATION_GENERAL_ROWS`` rows), else the offline ``zero-shot`` kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from niche.data import DatasetVersion, Rows
from niche.encoders import Encoder, default_encoder
from niche.errors import (
    ConfigurationError,
    DatasetNotFoundError,
    UpstreamError,
    ValidationError,
)
from niche.evaluation import Comparison, Evaluation, Prices, accuracy_ci, compare, evaluate
from niche.evaluation.teacher import TeacherAnswers
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.specialists import FitContext, Predictor, get_kind
from niche.specialists.remote import RemotePredictor, answer_cache
from niche.workflows._context import resolve
from niche.workflows.data import open_dataset
from niche.workflows.models import load_specialist

if TYPE_CHECKING:
    from niche.registry import EvaluationRecord, ModelVersionRecord, Registry
    from niche.registry.tasks import GeneralModelSpec, TaskSpec

__all__ = [
    "EvaluationReport",
    "evaluate_model",
    "evaluate_predictor",
    "evaluate_registered",
    "general_model_of",
    "general_predictor",
    "measuring_encoder",
    "record_evaluation",
    "training_data",
    "uncached_encoder",
    "zero_shot_baseline",
]


@dataclass
class EvaluationReport:
    """A specialist and the general model measured on the same rows, and their comparison.

    ``general_model`` says which general model answered (its kind, and for an endpoint its
    model, base URL, and the calls this evaluation made and the answers the cache had).
    ``label_sources`` holds, for a dataset distilled from traffic, the specialist's
    ``teacher_agreement`` (on the test rows the general model labelled) and ``gold_accuracy``
    (on those with a gold label); they join its metrics in :meth:`to_dict` and in the stored
    evaluation.
    """

    split: str
    rows: int
    specialist: Evaluation
    general: Evaluation
    comparison: Comparison
    general_model: dict[str, Any] = field(default_factory=dict)
    label_sources: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What ``niche evaluate --json`` prints."""
        comparison = self.comparison.to_dict()
        return {
            "split": self.split,
            "rows": self.rows,
            "specialist": self.specialist.to_dict() | self.label_sources,
            "general": self.general.to_dict(),
            "general_model": dict(self.general_model),
            "paired_test": comparison["paired_test"],
            "cascade": comparison["cascade"],
            "metric": comparison["metric"],
            "paired_metric": comparison["paired_metric"],
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
    prices: Prices | None = None,
    sample: int | None = None,
) -> Evaluation:
    """Quality, latency, cost and energy of one predictor on ``version``'s ``split``.

    The predictor is measured as it is: load it on an uncached encoder
    (``load_specialist(record, encoder=uncached_encoder(encoder))``) so the numbers are of
    real work, not of embedding-cache hits. A remote predictor is not timed one request at a
    time (its latency is the network's and its answers are cached); ``prices`` prices its
    tokens. ``sample`` evaluates a seeded sample of that many rows when the split has more
    (:meth:`~niche.evaluation.Evaluation.sampled` records which).

    >>> evaluate_predictor(load_specialist(record, encoder=uncached), version).accuracy
    """
    settings = settings or Settings()
    seed = settings.get("NICHE_SEED") if seed is None else seed
    rows = _split_rows(version, split)
    texts, labels = list(rows.texts), list(rows.labels)
    positions = None
    if sample is not None and sample < len(texts):
        if sample < 1:
            raise ValidationError(
                f"the general model's row cap must be at least 1, got {sample}",
                param="general_rows",
            )
        positions = np.sort(np.random.default_rng(seed).choice(len(texts), sample, replace=False))
        texts, labels = [texts[i] for i in positions], [labels[i] for i in positions]
    result = evaluate(
        predictor,
        texts,
        labels,
        n_resamples=settings.get("NICHE_BOOTSTRAP_RESAMPLES"),
        seed=seed,
        latency_samples=0 if isinstance(predictor, RemotePredictor) else 200,
        cpu_hour_usd=settings.get("NICHE_CPU_HOUR_USD"),
        watts_per_core=settings.get("NICHE_CPU_WATTS_PER_CORE"),
        prices=prices,
    )
    if positions is not None:
        result = result.sampled(positions, len(rows), seed)
    return result


def general_model_of(task: TaskSpec, settings: Settings | None = None) -> GeneralModelSpec | None:
    """The endpoint ``task`` is compared with: its own ``openai`` general model, else the global
    one (``NICHE_GENERAL_BASE_URL`` and ``NICHE_GENERAL_MODEL``), else None (zero-shot).

    The gateway's rule for the model it cascades to, so the gate measures what serves.

    >>> general_model_of(registry.tasks.get("banking77").spec).model
    'gpt-4o-mini'
    """
    from niche.registry.tasks import global_general_model

    if task.general.kind == "openai":
        return task.general
    return global_general_model(settings or Settings())


def general_predictor(
    task: TaskSpec,
    settings: Settings | None = None,
    *,
    label_set: list[str] | None = None,
    encoder: Encoder | None = None,
    progress: Progress = NO_PROGRESS,
) -> Predictor:
    """The general model ``task`` is compared with: its endpoint, or the zero-shot baseline.

    The endpoint (:func:`general_model_of`) becomes a
    :class:`~niche.specialists.remote.RemotePredictor` (its prompt template, ``max_tokens`` and
    ``stop``; concurrency, timeout and retries from ``NICHE_REMOTE_*``; answers cached in
    ``NICHE_CACHE_DIR``); with none, the offline ``zero-shot`` model on the uncached
    ``encoder``. ``label_set`` defaults to the task's.

    >>> general_predictor(registry.tasks.get("banking77").spec).kind
    'remote'
    """
    settings = settings or Settings()
    labels = list(label_set or task.labels)
    spec = general_model_of(task, settings)
    if spec is None or not spec.base_url or not spec.model:
        return zero_shot_baseline(
            labels, settings, encoder=encoder, label_descriptions=task.label_descriptions
        )
    return RemotePredictor(
        labels,
        base_url=spec.base_url,
        model=spec.model,
        prompt_template=spec.prompt_template,
        api_key_env=spec.api_key_env,
        max_tokens=spec.max_tokens,
        stop=spec.stop,
        response_format=spec.response_format,
        concurrency=settings.get("NICHE_REMOTE_CONCURRENCY"),
        timeout_s=settings.get("NICHE_REMOTE_TIMEOUT_S"),
        retries=settings.get("NICHE_REMOTE_RETRIES"),
        cache=answer_cache(settings),
        progress=progress,
    )


def _general_prices(task: TaskSpec | None, settings: Settings) -> Prices | None:
    spec = general_model_of(task, settings) if task is not None else None
    if spec is None:
        return None
    return Prices(
        input_per_1m_tokens_usd=spec.price_input_per_1m_tokens_usd,
        output_per_1m_tokens_usd=spec.price_output_per_1m_tokens_usd,
    )


def _describe(general: Predictor) -> dict[str, Any]:
    if not isinstance(general, RemotePredictor):
        return {"kind": general.kind}
    return {
        "kind": general.kind,
        "model": general.model,
        "base_url": general.base_url,
        "calls": general.calls,
        "cached": general.cache_hits,
    }


def _evaluate_general(
    general: Predictor,
    version: DatasetVersion,
    settings: Settings,
    *,
    task: TaskSpec | None,
    split: str,
    seed: int,
    sample: int | None,
) -> Evaluation:
    """The general model's evaluation, its endpoint's failures named with the task's name."""
    name = f"task {task.name}" if task is not None else "the general model"
    if not isinstance(general, RemotePredictor):
        return evaluate_predictor(general, version, settings, split=split, seed=seed)
    try:
        result = evaluate_predictor(
            general,
            version,
            settings,
            split=split,
            seed=seed,
            prices=_general_prices(task, settings),
            sample=sample,
        )
    except UpstreamError as exc:
        raise UpstreamError(f"{name}: {exc}", status=exc.status) from exc
    except ConfigurationError as exc:
        raise ConfigurationError(f"{name}: {exc}", setting=exc.setting) from exc
    if result.n and result.unmapped == result.n:
        first = general.answers(_split_rows(version, split).texts[:1])[0].text
        raise ConfigurationError(
            f"{name}: none of the {result.n} answers of the general model {general.model} at "
            f"{general.base_url} named one of the task's {len(general.label_set)} labels "
            f"(first answer: {first[:120]!r}); make general.prompt_template ask for exactly "
            "one label, e.g. `niche tasks edit "
            f"{task.name if task is not None else 'TASK'} general.prompt_template=...`",
            setting="general.prompt_template",
        )
    return result


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
    task: TaskSpec | None = None,
    general_rows: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> EvaluationReport:
    """Evaluate ``specialist`` and the general model on ``version``'s ``split``.

    The general model is ``general`` if given, else ``task``'s (:func:`general_predictor`:
    its endpoint, priced at its token prices), else zero-shot. An endpoint is asked at most
    ``general_rows`` rows (default ``NICHE_EVALUATION_GENERAL_ROWS``; None: all), a seeded
    sample, and the paired test and the cascade curve are on those rows. ``encoder`` is what
    the zero-shot baseline runs on (uncached; default: the settings'). Load ``specialist`` on
    the uncached encoder too, so both are measured doing real work.

    >>> evaluate_model(specialist, version, task=spec).to_dict()["paired_test"]["p_value"]
    """
    settings = settings or Settings()
    seed = settings.get("NICHE_SEED") if seed is None else seed
    rows = _split_rows(version, split)
    if general_rows is None:
        general_rows = settings.get("NICHE_EVALUATION_GENERAL_ROWS")
    general_eval: Evaluation | None = None
    if general is None and split == "test":
        # Distilled from traffic: the general model's recorded answers, not new calls.
        teacher = _teacher(version, specialist.label_set)
        if teacher is not None:
            general = teacher[0]
            with progress.task("replaying the general model's recorded answers", total=None):
                general_eval = _evaluate_teacher(
                    teacher[0], teacher[1], version, settings, seed=seed
                )
    if general is None and task is not None:
        general = general_predictor(
            task, settings, label_set=specialist.label_set, encoder=encoder, progress=progress
        )
    if general is None:
        general = zero_shot_baseline(
            specialist.label_set,
            settings,
            encoder=encoder,
            label_descriptions=label_descriptions,
        )
    if isinstance(general, RemotePredictor):
        # An endpoint first: a key unset, a server down or a prompt that maps to no label
        # fails in seconds, not after the specialist's minutes.
        with progress.task("evaluating the general model", total=None):
            general_eval = _evaluate_general(
                general, version, settings, task=task, split=split, seed=seed, sample=general_rows
            )
    with progress.task("evaluating the specialist", total=None):
        specialist_eval = evaluate_predictor(specialist, version, settings, split=split, seed=seed)
    if general_eval is None:
        with progress.task("evaluating the general model", total=None):
            general_eval = _evaluate_general(
                general, version, settings, task=task, split=split, seed=seed, sample=general_rows
            )
    comparison = compare(
        specialist_eval,
        general_eval,
        rows.labels,
        n_resamples=settings.get("NICHE_BOOTSTRAP_RESAMPLES"),
        seed=seed,
        metric=task.metric if task is not None else "accuracy",
    )
    return EvaluationReport(
        split=split,
        rows=len(rows),
        specialist=specialist_eval,
        general=general_eval,
        comparison=comparison,
        general_model=_describe(general),
        label_sources=_label_sources(version, specialist_eval, settings, split=split, seed=seed),
    )


def _label_sources(
    version: DatasetVersion,
    evaluation: Evaluation,
    settings: Settings,
    *,
    split: str,
    seed: int,
) -> dict[str, Any]:
    """For a version distilled from traffic, ``evaluation`` split by where labels came from.

    ``teacher_agreement`` is the accuracy on the test rows the general model labelled (how
    often the specialist agrees with its teacher), ``gold_accuracy`` on those with a gold
    label; each ``{"n", "accuracy", "accuracy_ci"}`` (a 95 % bootstrap interval), None when
    there are no such rows. Empty for other versions, other splits, and sampled evaluations.
    """
    origin = version.report.origin or {}
    if origin.get("kind") != "traffic" or split != "test" or evaluation.rows is not None:
        return {}
    gold = np.zeros(evaluation.n, dtype=bool)
    gold[[i for i in origin.get("gold_test", []) if 0 <= i < evaluation.n]] = True

    def measured(mask: np.ndarray) -> dict[str, Any] | None:
        hits = evaluation.correct[mask]
        if not len(hits):
            return None
        low, high = accuracy_ci(
            hits,
            n_resamples=settings.get("NICHE_BOOTSTRAP_RESAMPLES"),
            seed=seed,
        )
        return {"n": len(hits), "accuracy": float(hits.mean()), "accuracy_ci": [low, high]}

    return {"teacher_agreement": measured(~gold), "gold_accuracy": measured(gold)}


def _teacher(
    version: DatasetVersion, label_set: list[str]
) -> tuple[TeacherAnswers, np.ndarray] | None:
    """For a version distilled from traffic: the general model's recorded answers on its test
    split, and the positions they cover (every teacher-labelled row, and the gold rows whose
    record holds the general model's answer). None for other versions."""
    origin = version.report.origin or {}
    if origin.get("kind") != "traffic":
        return None
    rows = version.splits["test"]
    answers = dict(zip(rows.texts, rows.labels, strict=True))
    known = np.ones(len(rows), dtype=bool)
    gold = origin.get("gold_test", [])
    for position, answer in zip(
        gold, origin.get("gold_test_teacher", [None] * len(gold)), strict=True
    ):
        if answer is None:
            known[position] = False
            answers.pop(rows.texts[position], None)
        else:
            answers[rows.texts[position]] = answer
    labels = sorted(set(label_set) | set(answers.values()))
    return TeacherAnswers(answers, labels), np.flatnonzero(known)


def _evaluate_teacher(
    teacher: TeacherAnswers,
    positions: np.ndarray,
    version: DatasetVersion,
    settings: Settings,
    *,
    seed: int,
) -> Evaluation:
    rows = version.splits["test"]
    result = evaluate(
        teacher,
        [rows.texts[i] for i in positions],
        [rows.labels[i] for i in positions],
        n_resamples=settings.get("NICHE_BOOTSTRAP_RESAMPLES"),
        seed=seed,
        latency_samples=0,
        cpu_hour_usd=settings.get("NICHE_CPU_HOUR_USD"),
        watts_per_core=settings.get("NICHE_CPU_WATTS_PER_CORE"),
    )
    if len(positions) < len(rows):
        result = result.sampled(positions, len(rows), seed)
    return result


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
        metrics=report.specialist.to_dict() | report.label_sources,
        general=report.general.to_dict(),
        comparison=report.comparison.to_dict(),
        usage=_stored_usage(report.specialist),
        general_usage=_stored_usage(report.general),
    )


def _stored_usage(evaluation: Evaluation) -> dict[str, Any]:
    return {**evaluation.usage.to_dict(), "rows": evaluation.n}


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
    general_rows: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> EvaluationReport:
    """Evaluate a registered model version and the task's general model on the same rows;
    record it (with the usage its costs come from).

    ``dataset`` (a fingerprint or prefix) defaults to the version the model was trained on.
    ``general_rows`` caps the rows an endpoint general model is asked (see
    :func:`evaluate_model`).

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
        task=spec,
        general_rows=general_rows,
        progress=progress,
    )
    record_evaluation(registry, record, data, report)
    return report
