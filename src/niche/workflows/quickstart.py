"""``niche quickstart``: curate → train → register → evaluate against the general model → gate.

>>> result = quickstart(DataSpec(dataset="banking77"))
>>> result.evaluation.specialist.accuracy > result.evaluation.general.accuracy
True
>>> result.promotion.moved
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from niche.data import DatasetVersion
from niche.encoders import default_encoder
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.specialists import get_kind
from niche.workflows._context import resolve
from niche.workflows.data import DEFAULT_DATASET, DataSpec, curate_data
from niche.workflows.evaluate import EvaluationReport
from niche.workflows.promote import PromotionOutcome
from niche.workflows.retrain import train_evaluate_promote
from niche.workflows.train import task_name_for

if TYPE_CHECKING:
    from niche.registry import DatasetRecord, ModelVersionRecord, Registry

__all__ = ["QuickstartResult", "quickstart"]


@dataclass
class QuickstartResult:
    """Everything ``niche quickstart`` did: the data, the model, the proof, the gate."""

    name: str
    task: str
    version: DatasetVersion
    dataset: DatasetRecord
    model: ModelVersionRecord
    evaluation: EvaluationReport
    promotion: PromotionOutcome
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def dataset_uri(self) -> str | None:
        """Where the dataset version's files are: a URL in the artifact store."""
        return self.dataset.uri

    @property
    def dataset_path(self) -> Path | None:
        """The dataset version's local directory, when the artifact store is on this machine."""
        from niche.registry.artifacts import local_dir

        return local_dir(self.dataset.uri)

    def to_dict(self) -> dict[str, Any]:
        """What ``niche quickstart --json`` prints."""
        evaluation = self.evaluation.to_dict()
        path = self.dataset_path
        return {
            "dataset": {
                "name": self.name,
                "source": self.version.source,
                "fingerprint": self.version.fingerprint,
                "rows": sum(len(rows) for rows in self.version.splits.values()),
                "splits": {name: len(rows) for name, rows in self.version.splits.items()},
                "labels": len(self.version.label_set),
                "uri": self.dataset_uri,
                "path": str(path) if path is not None else None,
            },
            "curation": self.version.report.to_dict(),
            "specialist": {
                "model_version": self.model.version,
                "artifact_digest": self.model.artifact_digest,
                "artifact_uri": self.model.artifact_uri,
                **evaluation["specialist"],
            },
            "general": evaluation["general"],
            "paired_test": evaluation["paired_test"],
            "cascade": evaluation["cascade"],
            "evaluated_on": {"split": evaluation["split"], "rows": evaluation["rows"]},
            "registry": {
                "task": self.task,
                "model_version": self.model.version,
                "alias": self.promotion.alias,
            },
            "gate": {
                "passed": self.promotion.decision.passed,
                "moved": self.promotion.moved,
                "already": self.promotion.already,
                "checks": [check.to_dict() for check in self.promotion.decision.checks],
            },
            "timings_s": self.timings_s,
        }


def quickstart(
    spec: DataSpec | None = None,
    settings: Settings | None = None,
    *,
    task: str | None = None,
    kind: str = "text",
    domain: str | None = None,
    seed: int | None = None,
    registry: Registry | None = None,
    progress: Progress = NO_PROGRESS,
) -> QuickstartResult:
    """Curate, train, register, evaluate against the general model, and attempt promotion.

    ``kind`` is the specialist kind (``text``, ``text-two-stage``, ``text-finetuned``…); an
    unknown one is refused before any work.

    A refused promotion is part of the result (``result.promotion.refused``), not an error.
    ``domain`` is the domain tag of a task created here (an existing task keeps its own).

    >>> quickstart(DataSpec(data=Path("tickets.csv"), text_col="body", label_col="queue")).task
    'tickets'
    """
    spec = spec or DataSpec(dataset=DEFAULT_DATASET)
    get_kind(kind)  # an unknown kind is refused before anything is curated
    settings, registry = resolve(settings, registry)
    seed = settings.get("NICHE_SEED") if seed is None else seed
    timings: dict[str, float] = {}

    started = time.perf_counter()
    curated = curate_data(spec, settings, seed=seed, registry=registry, progress=progress)
    timings["curate"] = round(time.perf_counter() - started, 3)

    task = task or task_name_for(curated.loaded.name)
    retrained = train_evaluate_promote(
        curated.version,
        settings,
        task=task,
        kind=kind,
        encoder=default_encoder(settings),
        seed=seed,
        registry=registry,
        label_descriptions=curated.loaded.label_descriptions,
        domain=domain,
        progress=progress,
    )
    timings.update(retrained.timings_s)
    return QuickstartResult(
        name=curated.loaded.name,
        task=task,
        version=curated.version,
        dataset=curated.record,
        model=retrained.model,
        evaluation=retrained.evaluation,
        promotion=retrained.promotion,
        timings_s=timings,
    )
