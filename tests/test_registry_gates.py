"""Promotion gates decide from evaluations on the same rows: exact, deterministic checks."""

from __future__ import annotations

import numpy as np
import pytest

from niche.evaluation import Evaluation
from niche.registry.gates import decide
from niche.registry.tasks import SLA, TaskSpec
from niche.specialists import Predictions


def _evaluation(correct: list[bool], *, kind: str = "text", p95: float = 5.0, cost: float = 0.05):
    n = len(correct)
    accuracy = sum(correct) / n
    return Evaluation(
        kind=kind,
        n=n,
        accuracy=accuracy,
        accuracy_ci=(accuracy - 0.02, accuracy + 0.02),
        macro_f1=accuracy,
        macro_f1_ci=(accuracy - 0.02, accuracy + 0.02),
        per_class={},
        ece=0.01,
        latency_p50_ms=p95 / 2,
        latency_p95_ms=p95,
        items_per_s=1000.0,
        cpu_s_per_1m=1000.0,
        cost_per_1m_usd=cost,
        wh_per_query=1e-5,
        predictions=Predictions(labels=["x"] * n, confidences=np.ones(n)),
        correct=np.array(correct),
    )


def _rows(n_correct: int, n: int = 400) -> list[bool]:
    return [True] * n_correct + [False] * (n - n_correct)


TASK = TaskSpec(
    name="intents",
    sla=SLA(
        latency_p95_ms=10, min_quality=0.8, min_quality_vs_general=0.0, max_cost_per_1k_usd=1e-3
    ),
)


def test_a_good_candidate_with_no_champion_passes_every_check():
    result = decide(TASK, _evaluation(_rows(370)), _evaluation(_rows(250), kind="zero-shot"))
    assert result.passed
    assert [c.name for c in result.checks] == [
        "held_out",
        "sla.latency_p95_ms",
        "sla.min_quality",
        "sla.max_cost_per_1k_usd",
        "quality_vs_general",
        "non_inferior_to_champion",
    ]
    by_name = {c.name: c for c in result.checks}
    assert by_name["sla.min_quality"].value == pytest.approx(370 / 400)
    assert by_name["sla.max_cost_per_1k_usd"].value == pytest.approx(0.05 / 1000)
    assert by_name["non_inferior_to_champion"].detail == "no champion yet"
    assert result.failed == []


def test_a_clearly_worse_candidate_fails_non_inferiority_against_the_champion():
    champion = _evaluation(_rows(372))
    worse = _evaluation(_rows(330))
    result = decide(TASK, worse, _evaluation(_rows(250)), champion=champion)
    assert not result.passed
    assert [c.name for c in result.failed] == ["non_inferior_to_champion"]
    check = result.failed[0]
    assert check.threshold == -0.01
    assert check.value is not None and check.value < -0.05
    assert "McNemar p" in check.detail


def test_an_equal_candidate_is_non_inferior():
    same = _rows(360)
    result = decide(TASK, _evaluation(same), _evaluation(_rows(200)), champion=_evaluation(same))
    assert result.passed


def test_sla_failures_are_named_with_their_numbers():
    slow = _evaluation(_rows(300), p95=25.0, cost=5.0)
    result = decide(TASK, slow, _evaluation(_rows(200)), overlap=3)
    failed = {c.name: c for c in result.failed}
    assert set(failed) == {
        "held_out",
        "sla.latency_p95_ms",
        "sla.min_quality",
        "sla.max_cost_per_1k_usd",
    }
    assert failed["sla.latency_p95_ms"].value == 25.0
    assert failed["sla.min_quality"].value == 0.75
    assert "3 of 400 evaluation rows were seen in training" in failed["held_out"].detail


def test_not_better_than_the_general_model_fails():
    # Same accuracy, different rows right: no evidence the candidate is at least as good.
    result = decide(TASK, _evaluation(_rows(340)), _evaluation(_rows(340)[::-1]))
    assert [c.name for c in result.failed] == ["quality_vs_general"]


def test_a_relative_bound_allows_a_small_loss_to_the_general_model():
    task = TaskSpec(name="cheap", sla=SLA(min_quality_vs_general=-0.05))
    result = decide(task, _evaluation(_rows(340)), _evaluation(_rows(344)))
    assert result.passed


def test_evaluations_on_different_rows_are_refused():
    with pytest.raises(ValueError, match="same rows"):
        decide(TASK, _evaluation(_rows(10, 20)), _evaluation(_rows(10, 30)))
