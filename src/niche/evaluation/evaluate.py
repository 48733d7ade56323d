"""Evaluate one predictor on a labelled split, and compare a specialist with the general model.

>>> spec = evaluate(specialist, texts, labels, cpu_hour_usd=0.045, watts_per_core=10.0)
>>> general = evaluate(zero_shot, texts, labels, cpu_hour_usd=0.045, watts_per_core=10.0)
>>> compare(spec, general, labels).paired_test.p_value
1.2e-09
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from niche.evaluation import metrics, performance, stats
from niche.evaluation.cascade import DEFAULT_THRESHOLDS, CascadePoint, cascade_curve
from niche.evaluation.cost import Prices, cost_usd, energy_wh, usage_per_1m
from niche.evaluation.metrics import ClassMetrics
from niche.evaluation.stats import PairedTest, paired_test
from niche.progress import NO_PROGRESS, Progress
from niche.specialists.base import Usage

if TYPE_CHECKING:
    from niche.specialists.base import Predictions, Predictor

__all__ = ["Comparison", "Evaluation", "compare", "evaluate"]


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A predictor's quality, speed, cost and energy on one labelled split.

    Intervals are 95 % percentile bootstrap intervals. ``latency_*`` are single-request
    percentiles (None when latency was not measured); ``items_per_s`` and ``cpu_s_per_1m``
    (process CPU seconds per million predictions) come from one batch call over the split, and
    ``cost_per_1m_usd`` and ``wh_per_query`` are derived from that call's usage (its process
    CPU seconds, and the tokens the predictions recorded) by :func:`~niche.evaluation.cost_usd`
    and :func:`~niche.evaluation.energy_wh`.
    ``predictions`` and ``correct`` (per-row bool) stay in memory for :func:`compare` and are
    left out of :meth:`to_dict`.
    """

    kind: str
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    macro_f1: float
    macro_f1_ci: tuple[float, float]
    per_class: dict[str, ClassMetrics]
    ece: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    items_per_s: float
    cpu_s_per_1m: float
    cost_per_1m_usd: float
    wh_per_query: float
    predictions: Predictions = field(repr=False)
    correct: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (floats, ints, lists, dicts); intervals are ``[low, high]``."""
        return {
            "kind": self.kind,
            "n": self.n,
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.accuracy_ci),
            "macro_f1": self.macro_f1,
            "macro_f1_ci": list(self.macro_f1_ci),
            "per_class": {label: m.to_dict() for label, m in self.per_class.items()},
            "ece": self.ece,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "items_per_s": self.items_per_s,
            "cpu_s_per_1m": self.cpu_s_per_1m,
            "cost_per_1m_usd": self.cost_per_1m_usd,
            "wh_per_query": self.wh_per_query,
        }


@dataclass(frozen=True)
class Comparison:
    """A specialist against the general model on the same rows.

    ``paired_test`` has A = specialist, B = general model; ``cascade`` is the cascade curve.
    """

    paired_test: PairedTest
    cascade: list[CascadePoint]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"paired_test": {…}, "cascade": [{…}, …]}``."""
        return {
            "paired_test": self.paired_test.to_dict(),
            "cascade": [point.to_dict() for point in self.cascade],
        }


def evaluate(
    predictor: Predictor,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    latency_samples: int = 200,
    cpu_hour_usd: float,
    watts_per_core: float,
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
    progress: Progress | None = None,
) -> Evaluation:
    """Score ``predictor`` on ``texts`` against ``labels``.

    ``predictor.predict(texts)`` runs once, as one batch: its predictions are scored and the
    same call is timed for throughput and CPU cost. Then ``latency_samples`` single-text calls
    (0 skips them, e.g. for a paid API) give latency percentiles. ``progress``, when given,
    gets one task per stage (predicting, latency, scoring).

    >>> result = evaluate(predictor, texts, labels, cpu_hour_usd=0.045, watts_per_core=10.0)
    >>> result.accuracy, result.accuracy_ci
    (0.91, (0.89, 0.93))
    """
    n = len(texts)
    if n == 0:
        raise ValueError("texts is empty: nothing to evaluate")
    if len(labels) != n:
        raise ValueError(f"texts and labels differ in length: {n} != {len(labels)}")
    if latency_samples < 0:
        raise ValueError(f"latency_samples must not be negative, got {latency_samples}")
    progress = NO_PROGRESS if progress is None else progress
    outputs: list[Predictions] = []

    def predict_batch(batch: Sequence[str]) -> Predictions:
        result = predictor.predict(batch)
        outputs.append(result)
        return result

    with progress.task(f"predicting {n} rows with {predictor.kind}", total=n) as advance:
        throughput = performance.measure_throughput(
            predict_batch, texts, clock=clock, cpu_clock=cpu_clock
        )
        advance(n)
    predictions = outputs[0]
    if len(predictions) != n:
        raise ValueError(
            f"predictor {predictor.kind!r} returned {len(predictions)} predictions for {n} texts"
        )

    latency = None
    if latency_samples:
        with progress.task(f"latency over {latency_samples} single requests", total=None):
            latency = performance.measure_latency(
                lambda text: predictor.predict([text]), texts, n=latency_samples, clock=clock
            )

    with progress.task(f"scoring with {n_resamples} bootstrap resamples", total=None):
        return _score(
            predictor.kind,
            labels,
            predictions,
            throughput,
            latency,
            n_resamples=n_resamples,
            seed=seed,
            cpu_hour_usd=cpu_hour_usd,
            watts_per_core=watts_per_core,
        )


def _score(
    kind: str,
    labels: Sequence[str],
    predictions: Predictions,
    throughput: performance.Throughput,
    latency: performance.Latency | None,
    *,
    n_resamples: int,
    seed: int,
    cpu_hour_usd: float,
    watts_per_core: float,
) -> Evaluation:
    y_true = np.asarray(labels)
    y_pred = np.asarray(predictions.labels)
    correct = y_true == y_pred
    cpu_s_per_item = throughput.cpu_s_per_item
    # The batch's usage as cost sees it: process CPU seconds over the call, all threads
    # counted (wider than the predictor's own wall-clock compute time), and whatever tokens
    # the predictor recorded (a remote model's).
    recorded = predictions.usage or Usage()
    usage = Usage(
        compute_s=throughput.cpu_s,
        input_tokens=recorded.input_tokens,
        output_tokens=recorded.output_tokens,
    )
    return Evaluation(
        kind=kind,
        n=len(y_true),
        accuracy=float(correct.mean()),
        accuracy_ci=stats.accuracy_ci(correct, n_resamples=n_resamples, seed=seed),
        macro_f1=metrics.macro_f1(y_true, y_pred),
        macro_f1_ci=stats.macro_f1_ci(y_true, y_pred, n_resamples=n_resamples, seed=seed),
        per_class=metrics.per_class(y_true, y_pred),
        ece=metrics.expected_calibration_error(correct, predictions.confidences),
        latency_p50_ms=latency.p50_ms if latency else None,
        latency_p95_ms=latency.p95_ms if latency else None,
        items_per_s=throughput.items_per_s,
        cpu_s_per_1m=cpu_s_per_item * 1e6,
        cost_per_1m_usd=cost_usd(
            usage_per_1m(usage, throughput.items), Prices(cpu_hour_usd=cpu_hour_usd)
        ),
        wh_per_query=energy_wh(Usage(compute_s=cpu_s_per_item), watts_per_core=watts_per_core),
        predictions=predictions,
        correct=correct,
    )


def compare(
    specialist_eval: Evaluation,
    general_eval: Evaluation,
    y_true: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> Comparison:
    """Paired test and cascade curve of a specialist against the general model.

    Both evaluations must come from the same rows, in the same order, as ``y_true``.

    >>> comparison = compare(spec_eval, general_eval, labels, n_resamples=1000, seed=0)
    >>> comparison.paired_test.bootstrap.diff
    0.12
    """
    true = np.asarray(y_true)
    for name, result in (("specialist_eval", specialist_eval), ("general_eval", general_eval)):
        if result.n != len(true):
            raise ValueError(f"{name} has {result.n} rows but y_true has {len(true)}")
        if not np.array_equal(np.asarray(result.predictions.labels) == true, result.correct):
            raise ValueError(f"{name} was not computed on these labels (rows differ)")
    return Comparison(
        paired_test=paired_test(
            specialist_eval.correct, general_eval.correct, n_resamples=n_resamples, seed=seed
        ),
        cascade=cascade_curve(
            true,
            specialist_eval.predictions.labels,
            specialist_eval.predictions.confidences,
            general_eval.predictions.labels,
            thresholds,
        ),
    )
