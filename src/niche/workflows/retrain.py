"""Train on a dataset version, evaluate against the task's general model, gate for champion.

    >>> retrained = train_evaluate_promote(version, task="banking77")
    >>> retrained.model.version, retrained.promotion.moved
    (4, True)

The three steps every new specialist takes, whoever asks: ``niche quickstart`` after curating
a file, the loop after distilling traffic. ``before_step`` is called with each step's name
("train", "evaluate", "gate") before it starts, so a caller can renew a lease, stop between
steps (by raising), or tell which step an exception came from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from niche.data import DatasetVersion
from niche.encoders import Encoder, default_encoder
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.workflows._context import resolve
from niche.workflows.evaluate import EvaluationReport, evaluate_model, measuring_encoder
from niche.workflows.models import load_specialist
from niche.workflows.promote import PromotionOutcome, promote
from niche.workflows.train import train_and_register

if TYPE_CHECKING:
    from niche.registry import ModelVersionRecord, Registry

__all__ = ["RETRAIN_STEPS", "Retrained", "train_evaluate_promote"]

RETRAIN_STEPS = ("train", "evaluate", "gate")
"""The steps of :func:`train_evaluate_promote`, in order, as ``before_step`` names them."""


@dataclass
class Retrained:
    """A model version trained, its evaluation, and what its champion gate decided."""

    task: str
    model: ModelVersionRecord
    evaluation: EvaluationReport
    promotion: PromotionOutcome
    timings_s: dict[str, float] = field(default_factory=dict)


def train_evaluate_promote(
    version: DatasetVersion,
    settings: Settings | None = None,
    *,
    task: str,
    kind: str = "text",
    encoder: Encoder | None = None,
    seed: int | None = None,
    registry: Registry | None = None,
    label_descriptions: dict[str, str] | None = None,
    domain: str | None = None,
    actor: str | None = None,
    before_step: Callable[[str], None] | None = None,
    progress: Progress = NO_PROGRESS,
) -> Retrained:
    """Train a ``kind`` specialist on ``version`` as ``task``'s next model version, evaluate it
    and the task's own general model on the version's test split, and gate it for
    ``champion`` (moving the alias when it passes, as ``actor``).

    A refused gate is part of the result (``retrained.promotion.refused``), not an error; a
    step that fails raises, and what the earlier steps registered stays (a model version
    trained but never promoted leaves the champion serving). ``label_descriptions`` (for the
    zero-shot general model) and ``domain`` (the domain tag) are for a task created here; an
    existing task's own are used.

    >>> train_evaluate_promote(version, task="tickets", actor="loop:host:1").promotion.refused
    False
    """
    settings, registry = resolve(settings, registry)
    seed = settings.get("NICHE_SEED") if seed is None else seed
    encoder = encoder or default_encoder(settings)
    timings: dict[str, float] = {}

    def begin(step: str) -> float:
        if before_step is not None:
            before_step(step)
        return time.perf_counter()

    started = begin("train")
    model = train_and_register(
        version,
        settings,
        task=task,
        kind=kind,
        encoder=encoder,
        seed=seed,
        registry=registry,
        label_descriptions=label_descriptions,
        domain=domain,
        progress=progress,
    )
    timings["train"] = round(time.perf_counter() - started, 3)

    started = begin("evaluate")
    spec = registry.tasks.get(task).spec
    measured = measuring_encoder(encoder)
    report = evaluate_model(
        load_specialist(model, settings, encoder=measured),
        version,
        settings,
        label_descriptions=(
            label_descriptions if label_descriptions is not None else spec.label_descriptions
        ),
        encoder=measured,
        seed=seed,
        progress=progress,
        # The task's own general model (an endpoint, when it has one) is the one to beat.
        task=spec,
    )
    timings["evaluate"] = round(time.perf_counter() - started, 3)

    started = begin("gate")
    outcome = promote(
        task,
        model.version,
        settings,
        registry=registry,
        encoder=encoder,
        evaluation=report,
        seed=seed,
        actor=actor,
        progress=progress,
    )
    timings["gate"] = round(time.perf_counter() - started, 3)
    return Retrained(
        task=task, model=model, evaluation=report, promotion=outcome, timings_s=timings
    )
