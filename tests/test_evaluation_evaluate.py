"""evaluate() and compare() end to end, with a keyword predictor and fake clocks.

The predictor is a stand-in defined here (no model); the clocks are fake and advanced by the
predictor itself, so latency, throughput, cost and energy are exact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from niche.evaluation import (
    ClassMetrics,
    Comparison,
    Evaluation,
    compare,
    evaluate,
)
from niche.specialists.base import Predictions, Predictor

TEXTS = [
    "where is my card",
    "card still not here",
    "I want a refund",
    "refund my money",
    "how do I change my pin",
    "my card pin is blocked",
    "money back now",
    "forgot pin",
]
LABELS = [
    "card_arrival",
    "card_arrival",
    "refund",
    "refund",
    "change_pin",
    "change_pin",
    "refund",
    "change_pin",
]
SPECIALIST_KEYWORDS = {"card": "card_arrival", "refund": "refund", "pin": "change_pin"}
# Checks "pin" before "card" and knows "money": right on every row.
GENERAL_KEYWORDS = {
    "pin": "change_pin",
    "card": "card_arrival",
    "refund": "refund",
    "money": "refund",
}

WALL_S_PER_TEXT = 0.001
CPU_S_PER_TEXT = 0.002  # two busy threads


class FakeTime:
    """A wall clock and a CPU clock that only move when the predictor works."""

    def __init__(self) -> None:
        self.wall = 1000.0
        self.cpu = 50.0

    def clock(self) -> float:
        return self.wall

    def cpu_clock(self) -> float:
        return self.cpu


class KeywordPredictor:
    """Labels a text by the first keyword it contains (confidence 0.9), else "other" (0.4)."""

    def __init__(self, keywords: dict[str, str], time: FakeTime, kind: str = "keyword") -> None:
        self.kind = kind
        self.keywords = keywords
        self.time = time
        self.batch_sizes: list[int] = []

    @property
    def label_set(self) -> list[str]:
        return sorted({*self.keywords.values(), "other"})

    def predict(self, texts: Sequence[str]) -> Predictions:
        self.batch_sizes.append(len(texts))
        self.time.wall += WALL_S_PER_TEXT * len(texts)
        self.time.cpu += CPU_S_PER_TEXT * len(texts)
        labels, confidences = [], []
        for text in texts:
            hit = next((label for word, label in self.keywords.items() if word in text), None)
            labels.append(hit or "other")
            confidences.append(0.9 if hit else 0.4)
        return Predictions(labels=labels, confidences=np.array(confidences))


class RecordingProgress:
    def __init__(self) -> None:
        self.tasks: list[str] = []

    def task(self, description: str, total: int | None = None):
        from contextlib import nullcontext

        self.tasks.append(description)
        return nullcontext(lambda k: None)


def _evaluate(predictor: KeywordPredictor, **options) -> Evaluation:
    options = {
        "n_resamples": 200,
        "latency_samples": 5,
        "cpu_hour_usd": 0.045,
        "watts_per_core": 10.0,
        "clock": predictor.time.clock,
        "cpu_clock": predictor.time.cpu_clock,
        **options,
    }
    return evaluate(predictor, TEXTS, LABELS, **options)


def test_keyword_predictor_is_a_predictor() -> None:
    assert isinstance(KeywordPredictor({}, FakeTime()), Predictor)


def test_evaluate_exact_numbers() -> None:
    predictor = KeywordPredictor(SPECIALIST_KEYWORDS, FakeTime())
    progress = RecordingProgress()
    result = _evaluate(predictor, progress=progress)

    # One batch over all rows (predictions and throughput), then 10 warm-up + 5 timed singles.
    assert predictor.batch_sizes == [8] + [1] * 15
    assert progress.tasks == [
        "predicting 8 rows with keyword",
        "latency over 5 single requests",
        "scoring with 200 bootstrap resamples",
    ]
    assert result.kind == "keyword"
    assert result.n == 8
    # Wrong: row 5 ("card" comes first) and row 6 (no keyword).
    assert result.correct.tolist() == [True] * 5 + [False, False, True]
    assert result.accuracy == 0.75
    assert result.per_class == {
        "card_arrival": ClassMetrics(pytest.approx(2 / 3), 1.0, pytest.approx(0.8), 2),
        "change_pin": ClassMetrics(1.0, pytest.approx(2 / 3), pytest.approx(0.8), 3),
        "refund": ClassMetrics(1.0, pytest.approx(2 / 3), pytest.approx(0.8), 3),
    }
    assert result.macro_f1 == pytest.approx(0.8)  # "other" is not a true label
    # Seven rows at 0.9 (six right), one at 0.4 (wrong): (|6 - 6.3| + |0 - 0.4|) / 8.
    assert result.ece == pytest.approx(0.7 / 8)
    assert result.accuracy_ci[0] <= 0.75 <= result.accuracy_ci[1]
    assert result.macro_f1_ci[0] <= result.macro_f1 <= result.macro_f1_ci[1]

    assert result.latency_p50_ms == pytest.approx(1.0)
    assert result.latency_p95_ms == pytest.approx(1.0)
    assert result.items_per_s == pytest.approx(1000.0)
    assert result.cpu_s_per_1m == pytest.approx(2000.0)
    assert result.cost_per_1m_usd == pytest.approx(2000 / 3600 * 0.045)
    assert result.wh_per_query == pytest.approx(0.002 * 10 / 3600)
    assert result.predictions.labels[6] == "other"


def test_evaluate_is_deterministic_for_a_seed() -> None:
    first = _evaluate(KeywordPredictor(SPECIALIST_KEYWORDS, FakeTime()), seed=3)
    second = _evaluate(KeywordPredictor(SPECIALIST_KEYWORDS, FakeTime()), seed=3)
    assert first.to_dict() == second.to_dict()


def test_evaluation_to_dict_is_json_ready() -> None:
    result = _evaluate(KeywordPredictor(SPECIALIST_KEYWORDS, FakeTime()))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data == result.to_dict()
    assert list(data) == [
        "kind",
        "n",
        "accuracy",
        "accuracy_ci",
        "macro_f1",
        "macro_f1_ci",
        "per_class",
        "ece",
        "latency_p50_ms",
        "latency_p95_ms",
        "items_per_s",
        "cpu_s_per_1m",
        "cost_per_1m_usd",
        "wh_per_query",
        "usage",
        "unmapped",
        "sample",
    ]
    assert data["accuracy_ci"] == list(result.accuracy_ci)
    assert data["per_class"]["refund"] == {
        "precision": 1.0,
        "recall": result.per_class["refund"].recall,
        "f1": result.per_class["refund"].f1,
        "support": 3,
    }


def test_latency_can_be_skipped() -> None:
    predictor = KeywordPredictor(SPECIALIST_KEYWORDS, FakeTime())
    result = _evaluate(predictor, latency_samples=0)
    assert predictor.batch_sizes == [8]
    assert (result.latency_p50_ms, result.latency_p95_ms) == (None, None)


def test_compare_exact() -> None:
    time = FakeTime()
    spec = _evaluate(KeywordPredictor(SPECIALIST_KEYWORDS, time))
    general = _evaluate(KeywordPredictor(GENERAL_KEYWORDS, time, kind="general"))
    assert general.accuracy == 1.0

    comparison = compare(
        spec, general, LABELS, n_resamples=200, seed=0, thresholds=[0.0, 0.5, 0.95]
    )
    assert isinstance(comparison, Comparison)
    test = comparison.paired_test
    # Only the general model is right on rows 5 and 6: b=0, c=2, p = 2 * (1/2)^2.
    assert (test.mcnemar.b, test.mcnemar.c) == (0, 2)
    assert test.p_value == pytest.approx(0.5)
    assert test.bootstrap.diff == -0.25
    # At 0.5 the specialist keeps its seven 0.9 rows (six right); the general model gets row 6.
    assert [(p.threshold, p.coverage, p.accuracy) for p in comparison.cascade] == [
        (0.0, 1.0, 0.75),
        (0.5, 0.875, 0.875),
        (0.95, 0.0, 1.0),
    ]
    data = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
    assert data["paired_test"]["mcnemar"] == {"b": 0, "c": 2, "statistic": 0, "p_value": 0.5}
    assert data["cascade"][1] == {"threshold": 0.5, "coverage": 0.875, "accuracy": 0.875}


def test_compare_refuses_evaluations_of_other_rows() -> None:
    time = FakeTime()
    spec = _evaluate(KeywordPredictor(SPECIALIST_KEYWORDS, time))
    general = _evaluate(KeywordPredictor(GENERAL_KEYWORDS, time))
    with pytest.raises(ValueError, match="has 8 rows but y_true has 7"):
        compare(spec, general, LABELS[:7])
    with pytest.raises(ValueError, match="not computed on these labels"):
        compare(spec, general, LABELS[::-1])


class WrongLengthPredictor(KeywordPredictor):
    def predict(self, texts: Sequence[str]) -> Predictions:
        self.time.wall += 1.0
        return Predictions(labels=["other"], confidences=np.array([0.5]))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: evaluate(p, [], [], cpu_hour_usd=1, watts_per_core=1), "texts is empty"),
        (
            lambda p: evaluate(p, TEXTS, LABELS[:3], cpu_hour_usd=1, watts_per_core=1),
            "differ in length: 8 != 3",
        ),
        (lambda p: _evaluate(p, latency_samples=-1), "latency_samples"),
    ],
)
def test_bad_input_is_a_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(KeywordPredictor(SPECIALIST_KEYWORDS, FakeTime()))


def test_a_predictor_returning_the_wrong_number_of_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="returned 1 predictions for 8 texts"):
        _evaluate(WrongLengthPredictor({}, FakeTime(), kind="broken"))
