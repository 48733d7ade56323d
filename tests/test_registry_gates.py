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


def _teacher(correct: list[bool], rows: list[int] | None = None, split_rows: int | None = None):
    teacher = _evaluation(correct, kind="teacher")
    if rows is not None:
        teacher = teacher.sampled(np.array(rows), split_rows or len(rows), 0)
    return teacher


def test_a_distilled_candidate_is_held_to_agreement_with_its_teacher_not_to_beating_it():
    # 400 test rows, all labelled by the general model: it is "right" on every one of them by
    # construction, so beating it cannot be the rule; agreeing with it is.
    task = TaskSpec(name="intents", sla=SLA(min_agreement_with_general=0.9))
    good = decide(task, _evaluation(_rows(380)), _teacher(_rows(400)))
    by_name = {c.name: c for c in good.checks}
    assert good.passed and by_name["agreement_with_general"].passed
    assert 0.9 <= by_name["agreement_with_general"].value < 0.95
    # No gold rows: "at least as good as the general model" cannot be measured here.
    assert "quality_vs_general" not in by_name
    assert "0 gold-labelled rows" in by_name["agreement_with_general"].detail
    # 88 % agreement: the lower bound is below the floor, refused.
    weak = decide(task, _evaluation(_rows(352)), _teacher(_rows(400)))
    assert not weak.passed and [c.name for c in weak.failed] == ["agreement_with_general"]
    # The same candidate against a real general model scoring 100 % would fail quality instead.
    plain = decide(task, _evaluation(_rows(380)), _evaluation(_rows(400), kind="openai"))
    assert [c.name for c in plain.failed] == ["quality_vs_general"]


def test_a_distilled_candidate_is_compared_with_the_teacher_on_gold_rows_when_there_are_enough():
    task = TaskSpec(name="intents", sla=SLA(min_quality_vs_general=0.0))
    gold = list(range(340, 400))  # 60 gold rows at the end of the split
    # The candidate is right on every gold row; the teacher's recorded answers on 45 of 60.
    # It disagrees with the teacher on 40 of the 340 rows the teacher labelled (wrong there,
    # or the teacher was): with enough gold rows, agreement is no longer the test.
    candidate = _evaluation([True] * 300 + [False] * 40 + [True] * 60)
    teacher = _teacher([True] * 340 + [True] * 45 + [False] * 15)
    result = decide(task, candidate, teacher, gold_rows=gold)
    names = [c.name for c in result.checks]
    check = {c.name: c for c in result.checks}["quality_vs_general"]
    assert result.passed and check.value is not None and check.value > 0
    assert "60 gold rows" in check.detail and "agreement_with_general" not in names
    # Worse than the teacher on gold: refused by quality_vs_general.
    worse = _evaluation([True] * 340 + [False] * 30 + [True] * 30)
    refused = decide(task, worse, teacher, gold_rows=gold)
    assert [c.name for c in refused.failed] == ["quality_vs_general"]
    # Gold rows whose teacher answer was not recorded are left out of the teacher's
    # evaluation: with 20 covered, too few to compare, and agreement is the check again.
    covered = list(range(360))
    sparse = _teacher([True] * 360, rows=covered, split_rows=400)
    result = decide(task, candidate, sparse, gold_rows=gold)
    by_name = {c.name: c for c in result.checks}
    assert "quality_vs_general" not in by_name
    assert "20 gold-labelled rows" in by_name["agreement_with_general"].detail
    assert by_name["agreement_with_general"].value == pytest.approx(0.85, abs=0.02)


def test_an_unset_min_quality_vs_general_leaves_the_general_model_unchecked():
    task = TaskSpec(name="intents", sla=SLA(min_quality_vs_general=None))
    result = decide(task, _evaluation(_rows(300)), _evaluation(_rows(400), kind="openai"))
    assert result.passed and "quality_vs_general" not in [c.name for c in result.checks]
