"""Register dataset and model versions, and promote models through gates.

    >>> record = register_trained(trained, "banking77", settings)
    >>> outcome = promote("banking77", record.version, settings)
    >>> outcome.moved, [c.name for c in outcome.decision.failed]
    (True, [])

A promotion evaluates the candidate on the test split of its own dataset version (checked by
text fingerprint to be disjoint from its training rows), evaluates the current holder of the
alias on the same rows, applies the gate, stores the decision either way, and moves the alias
only when the gate passed (or was forced, with a reason).
"""

from __future__ import annotations

import getpass
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from niche.data import DatasetVersion, normalise_text
from niche.encoders import Encoder, default_encoder
from niche.errors import ConfigurationError, NotFoundError
from niche.pipeline import (
    EvaluationReport,
    evaluate_model,
    evaluate_predictor,
    uncached_encoder,
)
from niche.progress import NO_PROGRESS, Progress
from niche.registry import LocalStore
from niche.registry.artifacts import ArtifactStore
from niche.registry.gates import DEFAULT_MARGIN, GateResult, decide
from niche.registry.store import DatasetRecord, ModelVersionRecord, Registry, TaskRecord
from niche.registry.tasks import TaskSpec
from niche.settings import Settings
from niche.specialists import TextSpecialist
from niche.training import TrainedModel, train_text_specialist

__all__ = [
    "PromotionOutcome",
    "default_actor",
    "ensure_task_for",
    "evaluate_registered",
    "held_out_overlap",
    "load_specialist",
    "promote",
    "register_dataset",
    "register_trained",
    "task_name_for",
    "train_and_register",
]


def default_actor() -> str:
    """Who is acting, for alias history: ``cli:<user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def task_name_for(name: str) -> str:
    """A valid task name from a dataset or file name (``clinc150/banking`` → ``clinc150.banking``)."""
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "." for c in name.lower()).strip(".-_")
    return cleaned[:64] or "task"


def _text_digest(text: str) -> str:
    return hashlib.sha256(normalise_text(text).casefold().encode("utf-8")).hexdigest()


def held_out_overlap(version: DatasetVersion, split: str = "test") -> int:
    """How many rows of ``split`` have a text fingerprint that is also in ``train``."""
    train = {_text_digest(text) for text in version.splits["train"].texts}
    return sum(_text_digest(text) in train for text in version.splits[split].texts)


def register_dataset(
    version: DatasetVersion, settings: Settings | None = None, *, registry: Registry | None = None
) -> DatasetRecord:
    """Save the dataset version's files under ``NICHE_HOME`` and register it (idempotent)."""
    settings = settings or Settings()
    registry = registry or Registry(settings=settings)
    path = LocalStore(settings).save_dataset(version)
    return registry.register_dataset(version, uri=str(path.resolve()))


def ensure_task_for(
    version: DatasetVersion,
    name: str,
    registry: Registry,
    *,
    label_descriptions: dict[str, str] | None = None,
) -> TaskRecord:
    """The task ``name``, created from the dataset's label set when it does not exist yet."""
    return registry.ensure_task(
        TaskSpec(
            name=name,
            labels=version.label_set,
            label_descriptions=dict(label_descriptions or {}),
        )
    )


def train_and_register(
    version: DatasetVersion,
    settings: Settings | None = None,
    *,
    task: str | None = None,
    encoder: Encoder | None = None,
    seed: int | None = None,
    fraction: float = 1.0,
    registry: Registry | None = None,
    label_descriptions: dict[str, str] | None = None,
    progress: Progress = NO_PROGRESS,
) -> ModelVersionRecord:
    """Train a text specialist on ``version`` and register it as ``task``'s next version.

    ``task`` defaults to a name derived from the dataset's source, created when missing
    (with ``label_descriptions`` for its zero-shot general model).
    """
    settings = settings or Settings()
    registry = registry or Registry(settings=settings)
    seed = settings.get("NICHE_SEED") if seed is None else seed
    task = task or task_name_for(_source_name(version.source))
    register_dataset(version, settings, registry=registry)
    ensure_task_for(version, task, registry, label_descriptions=label_descriptions)
    encoder = encoder or default_encoder(settings)
    load = getattr(uncached_encoder(encoder), "load", None)
    if callable(load):
        with progress.task("loading the encoder (exported to ONNX on first use)", total=None):
            load()
    trained = train_text_specialist(
        version,
        encoder,
        seed=seed,
        fraction=fraction,
        progress=progress,
    )
    return register_trained(trained, task, settings, registry=registry)


def _source_name(source: str) -> str:
    if source.startswith("catalog:"):
        return source.removeprefix("catalog:")
    return Path(source).stem


def register_trained(
    trained: TrainedModel,
    task: str,
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
) -> ModelVersionRecord:
    """Store the model's artifacts (content-addressed) and register it as the task's next version.

    The artifact is written first and the rows in one transaction after, so a crash in
    between leaves an unreferenced artifact (``niche gc`` removes it), never a half version.
    """
    settings = settings or Settings()
    registry = registry or Registry(settings=settings)
    artifacts = ArtifactStore.from_settings(settings)
    with tempfile.TemporaryDirectory(prefix="niche-model-") as tmp:
        model_dir = trained.specialist.save(Path(tmp) / "model")
        artifact = artifacts.put_dir(model_dir)
    # Retraining the same data with the same code gives the same bytes: keep one version.
    for existing in registry.list_models(task):
        if existing.artifact_digest == artifact.digest:
            return existing
    return registry.register_model(
        task,
        kind=trained.specialist.kind,
        artifact_digest=artifact.digest,
        artifact_uri=artifact.uri,
        dataset_fingerprint=trained.lineage["dataset_fingerprint"],
        lineage=trained.lineage,
    )


def load_specialist(
    record: ModelVersionRecord, settings: Settings | None = None, *, encoder: Encoder | None = None
) -> TextSpecialist:
    """The specialist of a registered model version, its artifact digest verified."""
    settings = settings or Settings()
    path = ArtifactStore.from_settings(settings).get_dir(record.artifact_digest)
    return TextSpecialist.load(path, encoder or default_encoder(settings))


def _dataset_of(registry: Registry, fingerprint: str) -> DatasetVersion:
    record = registry.get_dataset(fingerprint)
    if record.uri is None:
        raise NotFoundError(
            f"dataset version {record.fingerprint[:16]} is registered without files; "
            "curate it again with `niche data curate`"
        )
    return DatasetVersion.load(Path(record.uri))


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
    """
    settings = settings or Settings()
    registry = registry or Registry(settings=settings)
    spec = registry.get_task(task).spec
    record = registry.get_model(task, version)
    data = _dataset_of(registry, dataset or record.dataset_fingerprint)
    report = evaluate_model(
        load_specialist(record, settings, encoder=encoder),
        data,
        settings,
        split=split,
        label_descriptions=spec.label_descriptions,
        seed=seed,
        progress=progress,
    )
    _record(registry, task, record, data, report)
    return report


def _record(
    registry: Registry,
    task: str,
    record: ModelVersionRecord,
    data: DatasetVersion,
    report: EvaluationReport,
) -> None:
    registry.record_evaluation(
        task,
        record.version,
        dataset_fingerprint=data.fingerprint,
        split=report.split,
        metrics=report.specialist.to_dict(),
        general=report.general.to_dict(),
        comparison=report.comparison.to_dict(),
    )


@dataclass(frozen=True)
class PromotionOutcome:
    """What a promotion attempt found and did."""

    task: str
    alias: str
    candidate: ModelVersionRecord
    previous: ModelVersionRecord | None
    decision: GateResult
    moved: bool
    forced: bool
    # The candidate already held the alias (e.g. quickstart re-run on the same data).
    already: bool
    evaluation: EvaluationReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "alias": self.alias,
            "version": self.candidate.version,
            "previous_version": self.previous.version if self.previous else None,
            "passed": self.decision.passed,
            "moved": self.moved,
            "already": self.already,
            "forced": self.forced,
            "checks": [check.to_dict() for check in self.decision.checks],
        }


def promote(
    task: str,
    version: int | str,
    settings: Settings | None = None,
    *,
    alias: str = "champion",
    margin: float = DEFAULT_MARGIN,
    force: bool = False,
    why: str | None = None,
    actor: str | None = None,
    seed: int | None = None,
    registry: Registry | None = None,
    encoder: Encoder | None = None,
    evaluation: EvaluationReport | None = None,
    progress: Progress = NO_PROGRESS,
) -> PromotionOutcome:
    """Gate model ``version`` of ``task`` for ``alias``; move the alias if it passes.

    ``evaluation`` reuses a fresh evaluation of the candidate on its test split (quickstart has
    one); otherwise the candidate is evaluated here.
    """
    if force and not (why and why.strip()):
        raise ConfigurationError("--force needs --why: a forced promotion records its reason")
    settings = settings or Settings()
    registry = registry or Registry(settings=settings)
    encoder = encoder or default_encoder(settings)
    actor = actor or default_actor()
    seed = settings.get("NICHE_SEED") if seed is None else seed
    n_resamples = settings.get("NICHE_BOOTSTRAP_RESAMPLES")

    spec: TaskSpec = registry.get_task(task).spec
    candidate = registry.get_model(task, version)
    dataset = _dataset_of(registry, candidate.dataset_fingerprint)
    if evaluation is None:
        evaluation = evaluate_model(
            load_specialist(candidate, settings, encoder=encoder),
            dataset,
            settings,
            label_descriptions=spec.label_descriptions,
            seed=seed,
            progress=progress,
        )
    _record(registry, task, candidate, dataset, evaluation)

    previous = registry.get_alias(task, alias)
    champion_eval = None
    if previous is not None and previous.version != candidate.version:
        with progress.task(f"evaluating {alias} v{previous.version} on the same rows"):
            champion = load_specialist(previous, settings, encoder=encoder)
            champion_eval = evaluate_predictor(
                champion, dataset, settings, split=evaluation.split, seed=seed
            )

    decision = decide(
        spec,
        evaluation.specialist,
        evaluation.general,
        champion=champion_eval,
        overlap=held_out_overlap(dataset, evaluation.split),
        margin=margin,
        n_resamples=n_resamples,
        seed=seed,
    )
    moved = False
    already = previous is not None and previous.version == candidate.version
    if (decision.passed or force) and not already:
        reason = why or f"gate passed ({len(decision.checks)} checks)"
        registry.set_alias(
            task,
            alias,
            candidate.version,
            actor=actor,
            reason=reason if decision.passed else f"forced: {why}",
            expected_current=previous.version if previous else None,
        )
        moved = True
    registry.record_gate(
        task,
        candidate.version,
        alias=alias,
        passed=decision.passed,
        checks=[check.to_dict() for check in decision.checks],
        forced=force and not decision.passed,
        why=why,
        actor=actor,
    )
    return PromotionOutcome(
        task=task,
        alias=alias,
        candidate=candidate,
        previous=previous,
        decision=decision,
        moved=moved,
        forced=force and not decision.passed,
        already=already,
        evaluation=evaluation,
    )
