"""Promotion gates: may this model version take an alias? Every check with its numbers.

    >>> decision = decide(task, candidate, general, champion=current, overlap=0)
    >>> decision.passed, [c.name for c in decision.checks if not c.passed]
    (False, ['non_inferior_to_champion'])

A gate is a pure function of evaluations on the same rows; storing the decision (passed or
not) and moving the alias is the registry's job. Comparisons use the paired bootstrap of the
difference in the task's metric (``task.metric``: accuracy, or macro-F1 for a skewed label
set): a bound holds when the one-sided 95 % lower confidence limit (the lower end of the
two-sided 90 % interval) clears it, so luck on a small test split does not promote.

The rule depends on the alias. ``champion`` (all production traffic) gets every check: held
out, the task's SLA, not worse than the general model, non-inferior to the current champion.
Any other alias (``challenger`` takes canary traffic) gets the same checks but the last: a
challenger is compared with the champion on live traffic, not here. Which aliases need a
stored gate to move by hand is the registry's :data:`~niche.registry.stores.GUARDED_ALIASES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from niche.evaluation import Evaluation
from niche.evaluation.stats import (
    PairedBootstrap,
    mcnemar,
    paired_bootstrap,
    paired_macro_f1_bootstrap,
)
from niche.evaluation.teacher import TEACHER_KIND
from niche.registry.tasks import TaskSpec, gate_fingerprint

__all__ = ["CHAMPION", "DEFAULT_MARGIN", "MIN_GOLD_ROWS", "GateCheck", "GateResult", "decide"]

CHAMPION = "champion"
"""The one alias whose gate also compares with the current champion."""

DEFAULT_MARGIN = 0.01
"""How much of the task's metric a challenger may lose against the champion and still be
promoted."""

_ONE_SIDED_95 = 0.90
_METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1"}

MIN_GOLD_ROWS = 30
"""The fewest gold-labelled test rows (with the general model's recorded answer) on which a
candidate distilled from traffic is compared with the general model; with fewer, its
agreement with the general model (``sla.min_agreement_with_general``) is the check."""


@dataclass(frozen=True)
class GateCheck:
    """One check of a gate: its name, verdict, measured value and the threshold it met or not."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    """The verdict of a gate and every check behind it."""

    passed: bool
    checks: list[GateCheck] = field(default_factory=list)
    # gate_fingerprint of the task spec it was decided under: the registry refuses to store
    # it for a task edited since (the decision would describe another spec).
    spec_fingerprint: str | None = None

    @property
    def failed(self) -> list[GateCheck]:
        return [check for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [check.to_dict() for check in self.checks]}


def decide(
    task: TaskSpec,
    candidate: Evaluation,
    general: Evaluation,
    *,
    champion: Evaluation | None = None,
    overlap: int = 0,
    margin: float = DEFAULT_MARGIN,
    n_resamples: int = 1000,
    seed: int = 0,
    alias: str = CHAMPION,
    gold_rows: Sequence[int] = (),
) -> GateResult:
    """Check ``candidate`` for ``alias``: the task's SLA, the general model and the champion.

    All three evaluations must be on the same rows, in the same order; the general model's
    may be a seeded sample of them (:meth:`~niche.evaluation.Evaluation.sampled`, a paid
    endpoint asked a capped number of rows), and the candidate is then compared with it on
    the sampled rows, with the wider interval that gives. ``overlap`` is the number of
    evaluation rows whose text fingerprint is also in the candidate's training rows: anything
    but 0 fails the gate (the candidate would be graded on what it learnt).
    For an alias other than ``champion`` (e.g. ``challenger``) ``champion`` is ignored: no
    comparison with it is made (module docstring).

    When ``general`` is the teacher of a dataset distilled from traffic (its recorded answers,
    kind ``teacher``), the test labels are mostly its own answers, so "at least as good as the
    general model" is measured on the ``gold_rows`` (positions of the rows with a gold label)
    when at least :data:`MIN_GOLD_ROWS` of them have its answer; with fewer, the candidate's
    agreement with the general model on the rows it labelled must reach
    ``sla.min_agreement_with_general`` instead. ``sla.min_quality_vs_general`` None leaves
    the comparison with the general model unchecked.

    Quality is ``task.metric``'s: with ``macro_f1``, ``sla.min_quality`` is checked against
    macro-F1 and the comparisons bootstrap the paired macro-F1 difference (every check's
    detail names the metric).
    """
    strict = alias == CHAMPION
    metric = task.metric
    called = _METRIC_NAMES[metric]
    try:
        candidate.paired_with(general)
        if champion is not None:
            candidate.paired_with(champion)
    except ValueError as exc:
        raise ValueError(f"gate evaluations must be on the same rows: {exc}") from exc
    sla = task.sla
    checks = [
        GateCheck(
            "held_out",
            overlap == 0,
            float(overlap),
            0.0,
            f"{overlap} of {candidate.n} evaluation rows were seen in training"
            if overlap
            else f"none of the {candidate.n} evaluation rows were seen in training",
        )
    ]
    if sla.latency_p95_ms is not None:
        p95 = candidate.latency_p95_ms
        checks.append(
            GateCheck(
                "sla.latency_p95_ms",
                p95 is not None and p95 <= sla.latency_p95_ms,
                p95,
                sla.latency_p95_ms,
                "single-request p95 latency (ms) at most the SLA"
                if p95 is not None
                else "latency was not measured",
            )
        )
    if sla.min_quality is not None:
        quality, (low, high) = candidate.quality(metric)
        checks.append(
            GateCheck(
                "sla.min_quality",
                quality >= sla.min_quality,
                quality,
                sla.min_quality,
                f"{called} {quality:.4f} (95% CI {low:.4f}-{high:.4f}) at least the SLA's minimum",
            )
        )
    if sla.max_cost_per_1k_usd is not None:
        cost = candidate.cost_per_1m_usd / 1000
        checks.append(
            GateCheck(
                "sla.max_cost_per_1k_usd",
                cost <= sla.max_cost_per_1k_usd,
                cost,
                sla.max_cost_per_1k_usd,
                "compute cost per 1k requests (USD) at most the SLA",
            )
        )
    bound = sla.min_quality_vs_general  # None: not checked (the SLA's rule)
    if general.kind == TEACHER_KIND:
        checks.extend(
            _teacher_checks(
                task, candidate, general, gold_rows, bound=bound, n_resamples=n_resamples, seed=seed
            )
        )
    elif bound is not None:
        checks.append(
            _paired_check(
                "quality_vs_general",
                candidate,
                general,
                bound=bound,
                what=f"{called} minus the general model's ({general.kind}{_sample(general)})",
                metric=metric,
                n_resamples=n_resamples,
                seed=seed,
            )
        )
    if strict and champion is None:
        checks.append(GateCheck("non_inferior_to_champion", True, None, None, "no champion yet"))
    elif strict and champion is not None:
        checks.append(
            _paired_check(
                "non_inferior_to_champion",
                candidate,
                champion,
                bound=-margin,
                what=f"{called} minus the champion's",
                metric=metric,
                n_resamples=n_resamples,
                seed=seed,
            )
        )
    return GateResult(
        passed=all(check.passed for check in checks),
        checks=checks,
        spec_fingerprint=gate_fingerprint(task),
    )


def _paired_check(
    name: str,
    candidate: Evaluation,
    other: Evaluation,
    *,
    bound: float,
    what: str,
    metric: str,
    n_resamples: int,
    seed: int,
) -> GateCheck:
    if metric == "macro_f1":
        truth, mine_labels, their_labels = candidate.paired_predictions(other)
        return _macro_f1_check(
            name,
            truth,
            mine_labels,
            their_labels,
            bound=bound,
            what=what,
            rows="rows",
            n_resamples=n_resamples,
            seed=seed,
        )
    mine, theirs = candidate.paired_with(other)
    boot = paired_bootstrap(
        mine,
        theirs,
        n_resamples=n_resamples,
        confidence=_ONE_SIDED_95,
        seed=seed,
    )
    exact = mcnemar(mine, theirs)
    return GateCheck(
        name,
        boot.ci_low >= bound,
        boot.ci_low,
        bound,
        f"{what}: {boot.diff:+.4f}, one-sided 95% lower bound {boot.ci_low:+.4f} must be "
        f">= {bound:+.4f} (McNemar p = {exact.p_value:.2g}, paired bootstrap, "
        f"{len(mine)} rows)",
    )


def _macro_f1_check(
    name: str,
    truth: np.ndarray,
    mine: np.ndarray,
    theirs: np.ndarray,
    *,
    bound: float,
    what: str,
    rows: str,
    n_resamples: int,
    seed: int,
) -> GateCheck:
    """A paired macro-F1 check (McNemar counts right and wrong answers: an accuracy test, so
    the bootstrap's own p-value is reported)."""
    boot: PairedBootstrap = paired_macro_f1_bootstrap(
        truth, mine, theirs, n_resamples=n_resamples, confidence=_ONE_SIDED_95, seed=seed
    )
    return GateCheck(
        name,
        boot.ci_low >= bound,
        boot.ci_low,
        bound,
        f"{what}: {boot.diff:+.4f}, one-sided 95% lower bound {boot.ci_low:+.4f} must be "
        f">= {bound:+.4f} (paired bootstrap of macro-F1, p = {boot.p_value:.2g}, "
        f"{len(truth)} {rows})",
    )


def _teacher_checks(
    task: TaskSpec,
    candidate: Evaluation,
    teacher: Evaluation,
    gold_rows: Sequence[int],
    *,
    bound: float | None,
    n_resamples: int,
    seed: int,
) -> list[GateCheck]:
    """The general-model checks of a candidate on a split labelled by that model (module):
    on the gold rows when there are enough, else agreement with the teacher's answers."""
    gold = np.zeros(candidate.n, dtype=bool)
    gold[[i for i in gold_rows if 0 <= i < candidate.n]] = True
    positions = teacher.rows if teacher.rows is not None else np.arange(teacher.n)
    mine, theirs = candidate.paired_with(teacher)
    on_gold = gold[positions]
    n_gold = int(on_gold.sum())
    if n_gold >= MIN_GOLD_ROWS:
        if bound is None:
            return []
        if task.metric == "macro_f1":
            truth, mine_labels, their_labels = candidate.paired_predictions(teacher)
            return [
                _macro_f1_check(
                    "quality_vs_general",
                    truth[on_gold],
                    mine_labels[on_gold],
                    their_labels[on_gold],
                    bound=bound,
                    what="macro-F1 on gold labels minus the general model's recorded answers'",
                    rows="gold rows",
                    n_resamples=n_resamples,
                    seed=seed,
                )
            ]
        boot = paired_bootstrap(
            mine[on_gold],
            theirs[on_gold],
            n_resamples=n_resamples,
            confidence=_ONE_SIDED_95,
            seed=seed,
        )
        exact = mcnemar(mine[on_gold], theirs[on_gold])
        return [
            GateCheck(
                "quality_vs_general",
                boot.ci_low >= bound,
                boot.ci_low,
                bound,
                f"accuracy on gold labels minus the general model's recorded answers': "
                f"{boot.diff:+.4f}, one-sided 95% lower bound {boot.ci_low:+.4f} must be >= "
                f"{bound:+.4f} (McNemar p = {exact.p_value:.2g}, paired bootstrap, "
                f"{n_gold} gold rows)",
            )
        ]
    checks = []
    floor = task.sla.min_agreement_with_general
    agreed = candidate.correct[~gold]
    if floor is not None and len(agreed):
        from scipy.stats import binomtest

        hits = int(agreed.sum())
        low = float(binomtest(hits, len(agreed)).proportion_ci(_ONE_SIDED_95, method="wilson").low)
        checks.append(
            GateCheck(
                "agreement_with_general",
                low >= floor,
                low,
                floor,
                f"agrees with the general model on {hits} of {len(agreed)} test rows it labelled "
                f"({hits / len(agreed):.4f}); one-sided 95% Wilson lower bound {low:.4f} must be "
                f">= {floor:.4f} (sla.min_agreement_with_general; {n_gold} gold-labelled rows "
                f"have the general model's answer, {MIN_GOLD_ROWS} would compare on them)",
            )
        )
    return checks


def _sample(evaluation: Evaluation) -> str:
    if evaluation.rows is None:
        return ""
    return (
        f", asked a seeded sample of {evaluation.n} of {evaluation.split_rows} rows "
        f"(seed {evaluation.sample_seed})"
    )
