"""Promote a model version through its gate: evaluate, decide, record, move the alias.

    >>> outcome = promote("banking77", 4)
    >>> outcome.moved, [c.name for c in outcome.decision.failed]
    (True, [])
    >>> promote("banking77", 5).raise_for_refusal()
    Traceback (most recent call last):
    niche.errors.GateRefusedError: gate refused banking77 v5 for champion: ...

A promotion evaluates the candidate on the test split of its own dataset version (checked by
text fingerprint to be disjoint from its training rows), for ``champion`` evaluates the current
champion on the same rows, and applies the gate for the alias (any alias but ``champion``,
e.g. ``challenger``, skips the comparison with the champion: see :mod:`niche.registry.gates`).
The registry's one promotion rule (``registry.promotions.promote``) then stores the decision,
with the task spec it was decided under, either way and moves the alias only when the gate
passed (or was forced, with a reason), in one transaction with its audit events; a task
edited meanwhile raises :class:`~niche.errors.ConflictError` (nothing stored).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from niche.data import DatasetVersion, normalise_text
from niche.encoders import Encoder, default_encoder
from niche.errors import GateRefusedError, ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.registry.gates import CHAMPION, DEFAULT_MARGIN, GateResult, decide
from niche.settings import Settings
from niche.workflows._context import resolve
from niche.workflows.evaluate import (
    EvaluationReport,
    evaluate_model,
    evaluate_predictor,
    measuring_encoder,
    record_evaluation,
    training_data,
)
from niche.workflows.models import load_specialist

if TYPE_CHECKING:
    from niche.registry import ModelVersionRecord, Registry

__all__ = ["PromotionOutcome", "held_out_overlap", "promote"]


def _text_digest(text: str) -> str:
    return hashlib.sha256(normalise_text(text).casefold().encode("utf-8")).hexdigest()


def held_out_overlap(version: DatasetVersion, split: str = "test") -> int:
    """How many rows of ``split`` have a text fingerprint that is also in ``train``.

    >>> held_out_overlap(version)
    0
    """
    train = {_text_digest(text) for text in version.splits["train"].texts}
    return sum(_text_digest(text) in train for text in version.splits[split].texts)


def _gold_rows(version: DatasetVersion, split: str) -> list[int]:
    """Positions of ``split``'s gold-labelled rows, for a version distilled from traffic."""
    origin = version.report.origin or {}
    return list(origin.get("gold_test", [])) if split == "test" else []


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

    @property
    def refused(self) -> bool:
        """The alias does not point at the candidate: the gate failed and nothing forced it."""
        return not (self.moved or self.already)

    def raise_for_refusal(self) -> None:
        """Raise :class:`~niche.errors.GateRefusedError` (exit 4) when the gate refused.

        >>> promote("banking77", 5).raise_for_refusal()
        """
        if not self.refused:
            return
        failed = tuple(check.name for check in self.decision.failed)
        raise GateRefusedError(
            f"gate refused {self.task} v{self.candidate.version} for {self.alias}: "
            f"failed {', '.join(failed) or 'no check'}",
            task=self.task,
            version=self.candidate.version,
            alias=self.alias,
            checks=failed,
        )

    def to_dict(self) -> dict[str, Any]:
        """What ``niche promote --json`` prints."""
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
    one); otherwise the candidate is evaluated here. A refusal is an outcome, not an error:
    call :meth:`PromotionOutcome.raise_for_refusal` to make it one. Someone else moving the
    alias meanwhile raises :class:`~niche.errors.ConflictError` (nothing is stored). ``actor``
    defaults to the registry's (``cli:<user>`` unless it was built with another).

    >>> promote("banking77", 5, force=True, why="incident 42: v4 mislabels refunds").forced
    True
    """
    if force and not (why and why.strip()):
        raise ValidationError(
            "--force needs --why: a forced promotion records its reason", param="why"
        )
    settings, registry = resolve(settings, registry)
    encoder = encoder or default_encoder(settings)
    measured = measuring_encoder(encoder)
    seed = settings.get("NICHE_SEED") if seed is None else seed

    spec = registry.tasks.get(task).spec
    candidate = registry.models.get(task, version)
    dataset = training_data(candidate, settings, registry=registry)
    if evaluation is None:
        evaluation = evaluate_model(
            load_specialist(candidate, settings, encoder=measured),
            dataset,
            settings,
            label_descriptions=spec.label_descriptions,
            encoder=measured,
            seed=seed,
            task=spec,
            progress=progress,
        )
    record_evaluation(registry, candidate, dataset, evaluation)

    previous = registry.promotions.get(task, alias)
    champion_eval = None
    # Only the champion's rule compares with the current holder (a challenger is compared
    # with the champion on canary traffic, not here).
    if alias == CHAMPION and previous is not None and previous.version != candidate.version:
        with progress.task(f"evaluating {alias} v{previous.version} on the same rows"):
            champion = load_specialist(previous, settings, encoder=measured)
            champion_eval = evaluate_predictor(
                champion, dataset, settings, split=evaluation.split, seed=seed
            )

    with progress.task(f"deciding the {alias} gate for v{candidate.version}"):
        decision = decide(
            spec,
            evaluation.specialist,
            evaluation.general,
            champion=champion_eval,
            overlap=held_out_overlap(dataset, evaluation.split),
            margin=margin,
            n_resamples=settings.get("NICHE_BOOTSTRAP_RESAMPLES"),
            seed=seed,
            alias=alias,
            gold_rows=_gold_rows(dataset, evaluation.split),
        )
    promoted = registry.promotions.promote(
        task,
        alias,
        candidate.version,
        decision=decision,
        force=force,
        why=why,
        actor=actor,
        expected_current=previous.version if previous else None,
    )
    return PromotionOutcome(
        task=task,
        alias=alias,
        candidate=candidate,
        previous=previous,
        decision=decision,
        moved=promoted.moved,
        forced=promoted.forced,
        already=promoted.already,
        evaluation=evaluation,
    )
