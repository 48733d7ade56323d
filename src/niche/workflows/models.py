"""Model versions: store a trained specialist, load one back, show and trace it.

    >>> record = register_trained(trained, "banking77")
    >>> load_specialist(record).predict(["my card has not arrived"]).labels
    ['card_arrival']
    >>> lineage("banking77", record.version)["dataset"]["source"]
    'catalog:banking77'

:func:`register_trained` and :func:`load_specialist` are the only places model artifacts are
written and read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from niche.encoders import Encoder
from niche.settings import Settings
from niche.specialists import LoadContext, Predictor, load_predictor
from niche.workflows._context import resolve

if TYPE_CHECKING:
    from niche.registry import ModelVersionRecord, Registry
    from niche.training import TrainedModel

__all__ = ["lineage", "load_specialist", "register_trained", "show_model"]


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
    Registering the same bytes again returns the existing version.

    >>> register_trained(trained, "banking77").version
    4
    """
    from niche.registry.artifacts import ArtifactStore

    settings, registry = resolve(settings, registry)
    artifacts = ArtifactStore.from_settings(settings)
    with tempfile.TemporaryDirectory(prefix="niche-model-") as tmp:
        model_dir = trained.specialist.save(Path(tmp) / "model")
        artifact = artifacts.put_dir(model_dir)
    # Retraining the same data with the same code gives the same bytes: keep one version.
    for existing in registry.models.all(task):
        if existing.artifact_digest == artifact.digest:
            return existing
    return registry.models.register(
        task,
        kind=trained.specialist.kind,
        artifact_digest=artifact.digest,
        artifact_uri=artifact.uri,
        dataset_fingerprint=trained.lineage["dataset_fingerprint"],
        lineage=trained.lineage,
    )


def load_specialist(
    record: ModelVersionRecord, settings: Settings | None = None, *, encoder: Encoder | None = None
) -> Predictor:
    """The predictor of a registered model version, loaded by its kind, its artifact verified.

    ``encoder`` defaults to the one the settings name (behind the embedding cache); pass an
    uncached one to measure real work.

    >>> load_specialist(registry.models.get("banking77", "champion")).kind
    'text'
    """
    from niche.registry.artifacts import ArtifactStore

    settings = settings or Settings()
    path = ArtifactStore.from_settings(settings).get_dir(record.artifact_digest)
    return load_predictor(record.kind, path, LoadContext(settings, encoder=encoder))


def show_model(
    task: str,
    version: int | str,
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """One model version as a dict, with its ``evaluations`` (what ``niche models show`` prints).

    >>> show_model("banking77", "champion")["evaluations"][0]["split"]
    'test'
    """
    _, registry = resolve(settings, registry)
    record = registry.models.get(task, version)
    evaluations = registry.models.evaluations(task, record.version)
    return record.to_dict() | {"evaluations": [e.to_dict() for e in evaluations]}


def lineage(
    task: str,
    version: int | str,
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Where a model version came from: ``model`` → ``dataset`` → ``evaluations``, ``gates``.

    When the dataset it was trained on is not registered, ``dataset`` is
    ``{"registered": False, "fingerprint": ...}``: the lineage stops at the model, and the
    rest (evaluations, gates) is still shown.

    >>> lineage("banking77", "champion")["dataset"]["fingerprint"]
    """
    _, registry = resolve(settings, registry)
    return registry.models.lineage(task, version)
