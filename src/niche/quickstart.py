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
from typing import Any

from niche.data import DatasetVersion
from niche.encoders import default_encoder
from niche.lifecycle import (
    PromotionOutcome,
    load_specialist,
    promote,
    task_name_for,
    train_and_register,
)
from niche.pipeline import (
    DEFAULT_DATASET,
    DataSpec,
    EvaluationReport,
    curate_data,
    evaluate_model,
)
from niche.progress import NO_PROGRESS, Progress
from niche.registry.store import ModelVersionRecord, Registry
from niche.settings import Settings

__all__ = ["QuickstartResult", "quickstart"]


@dataclass
class QuickstartResult:
    """Everything ``niche quickstart`` did: the data, the model, the proof, the gate."""

    name: str
    task: str
    version: DatasetVersion
    dataset_path: Path
    model: ModelVersionRecord
    evaluation: EvaluationReport
    promotion: PromotionOutcome
    timings_s: dict[str, float] = field(default_factory=dict)

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
    seed: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> QuickstartResult:
    """Curate, train, register, evaluate against the general model, and attempt promotion."""
    spec = spec or DataSpec(dataset=DEFAULT_DATASET)
    settings = settings or Settings()
    seed = settings.get("NICHE_SEED") if seed is None else seed
    registry = Registry(settings=settings)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    version, _, loaded = curate_data(spec, settings, seed=seed, progress=progress)
    timings["curate"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    task = task or task_name_for(loaded.name)
    encoder = default_encoder(settings)
    model = train_and_register(
        version,
        settings,
        task=task,
        encoder=encoder,
        seed=seed,
        registry=registry,
        label_descriptions=loaded.label_descriptions,
        progress=progress,
    )
    timings["train"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    specialist = load_specialist(model, settings, encoder=encoder)
    report = evaluate_model(
        specialist,
        version,
        settings,
        label_descriptions=loaded.label_descriptions,
        seed=seed,
        progress=progress,
    )
    timings["evaluate"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    outcome = promote(
        task,
        model.version,
        settings,
        registry=registry,
        encoder=encoder,
        evaluation=report,
        seed=seed,
        progress=progress,
    )
    timings["gate"] = round(time.perf_counter() - started, 3)
    return QuickstartResult(
        name=loaded.name,
        task=task,
        version=version,
        dataset_path=Path(registry.get_dataset(version.fingerprint).uri or ""),
        model=model,
        evaluation=report,
        promotion=outcome,
        timings_s=timings,
    )
