"""Evaluate one predictor on a labelled split, and compare a specialist with the general model.

>>> spec = evaluate(specialist, texts, labels, cpu_hour_usd=0.045, watts_per_core=10.0)
>>> general = evaluate(zero_shot, texts, labels, cpu_hour_usd=0.045, watts_per_core=10.0)
>>> compare(spec, general, labels).paired_test.p_value
1.2e-09
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from niche.evaluation import metrics, performance, stats
from niche.evaluation.cascade import DEFAULT_THRESHOLDS, CascadePoint, cascade_curve
from niche.evaluation.cost import Prices, cost_per_1m, energy_wh
from niche.evaluation.metrics import ClassMetrics
from niche.evaluation.stats import (
    PairedBootstrap,
    PairedTest,
    paired_macro_f1_bootstrap,
    paired_test,
)
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
    (process CPU seconds per million predictions) come from one batch call over the split.
    ``usage`` is what that call consumed as cost sees it: its process CPU seconds (all
    threads), and the tokens its predictions recorded (a remote model's, priced at the token
    prices; its own compute is the vendor's); ``cost_per_1m_usd`` and ``wh_per_query`` are
    derived from it by :func:`~niche.evaluation.cost_per_1m` and
    :func:`~niche.evaluation.energy_wh`. ``unmapped`` counts predictions outside the
    predictor's label set (a general model's answers that named no label: wrong answers).
    ``rows`` are the positions in the split of the rows evaluated when they are a sample of its
    ``split_rows`` (None: every row, in order; see :meth:`paired_with`).
    ``predictions``, ``correct`` (per-row bool) and ``truth`` (the true labels, for paired
    macro-F1; None on an evaluation built without them) stay in memory for :func:`compare`
    and the gate, and are left out of :meth:`to_dict`.
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
    usage: Usage = field(default_factory=Usage)
    unmapped: int = 0
    rows: np.ndarray | None = field(default=None, repr=False)
    split_rows: int | None = None
    sample_seed: int | None = None
    truth: np.ndarray | None = field(default=None, repr=False)

    def quality(self, metric: str) -> tuple[float, tuple[float, float]]:
        """The value and 95 % interval of ``metric`` (``accuracy`` or ``macro_f1``).

        >>> evaluation.quality("macro_f1") == (evaluation.macro_f1, evaluation.macro_f1_ci)
        True
        """
        if metric == "accuracy":
            return self.accuracy, self.accuracy_ci
        if metric == "macro_f1":
            return self.macro_f1, self.macro_f1_ci
        raise ValueError(f"unknown metric {metric!r} (known: accuracy, macro_f1)")

    def sampled(self, rows: np.ndarray, split_rows: int, seed: int) -> Evaluation:
        """This evaluation marked as made on ``rows`` (positions) of a split of ``split_rows``."""
        if len(rows) != self.n:
            raise ValueError(f"{len(rows)} row positions for an evaluation of {self.n} rows")
        return replace(
            self, rows=np.asarray(rows, dtype=np.int64), split_rows=split_rows, sample_seed=seed
        )

    def paired_with(self, other: Evaluation) -> tuple[np.ndarray, np.ndarray]:
        """Per-row correctness of this evaluation and ``other`` on the rows both were made on.

        ``other`` may be a sample (:meth:`sampled`) of this evaluation's rows: this one's rows
        are then taken at the sample's positions, so a paired test compares like with like.

            >>> mine, theirs = specialist_eval.paired_with(general_eval)
        """
        if other.rows is not None and self.rows is None:
            if other.split_rows != self.n:
                raise ValueError(
                    f"a sample of {other.split_rows} rows cannot pair with an evaluation of "
                    f"{self.n}"
                )
            return self.correct[other.rows], other.correct
        if self.rows is not None and other.rows is None:
            theirs, mine = other.paired_with(self)
            return mine, theirs
        if self.n != other.n or (
            self.rows is not None
            and other.rows is not None
            and not np.array_equal(self.rows, other.rows)
        ):
            raise ValueError("evaluations must be on the same rows")
        return self.correct, other.correct

    def paired_predictions(self, other: Evaluation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(truth, mine, theirs)``: the true labels and both predicted labels on the rows
        both evaluations were made on (the rows :meth:`paired_with` pairs), for a paired
        macro-F1 comparison.

            >>> truth, mine, theirs = specialist_eval.paired_predictions(general_eval)
        """
        self.paired_with(other)  # the same rows, or a ValueError saying why not
        if self.truth is None or other.truth is None:
            raise ValueError("an evaluation without its true labels cannot pair predictions")
        mine = np.asarray(self.predictions.labels)
        theirs = np.asarray(other.predictions.labels)
        if other.rows is not None and self.rows is None:
            return other.truth, mine[other.rows], theirs
        if self.rows is not None and other.rows is None:
            return self.truth, mine, theirs[self.rows]
        return self.truth, mine, theirs

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
            "usage": self.usage.to_dict(),
            "unmapped": self.unmapped,
            "sample": None
            if self.rows is None
            else {"rows": self.n, "of": self.split_rows, "seed": self.sample_seed},
        }


@dataclass(frozen=True)
class Comparison:
    """A specialist against the general model on the same rows.

    ``paired_test`` has A = specialist, B = general model (McNemar and the accuracy
    difference); ``cascade`` is the cascade curve. ``metric`` is the task's quality metric
    and ``paired_metric`` the paired bootstrap of its difference (the accuracy one, or that
    of macro-F1: :func:`~niche.evaluation.stats.paired_macro_f1_bootstrap`).
    """

    paired_test: PairedTest
    cascade: list[CascadePoint]
    metric: str = "accuracy"
    paired_metric: PairedBootstrap | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"paired_test": {…}, "cascade": [{…}, …], "metric": "…",
        "paired_metric": {"diff", "ci_low", "ci_high", "p_value"}}``."""
        paired_metric = self.paired_metric or self.paired_test.bootstrap
        return {
            "paired_test": self.paired_test.to_dict(),
            "cascade": [point.to_dict() for point in self.cascade],
            "metric": self.metric,
            "paired_metric": paired_metric.to_dict(),
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
    prices: Prices | None = None,
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
    progress: Progress | None = None,
) -> Evaluation:
    """Score ``predictor`` on ``texts`` against ``labels``.

    ``predictor.predict(texts)`` runs once, as one batch: its predictions are scored and the
    same call is timed for throughput and CPU cost. Then ``latency_samples`` single-text calls
    (0 skips them, e.g. for a paid API) give latency percentiles. ``progress``, when given,
    gets one task per stage (predicting, latency, scoring). ``prices`` gives the token prices
    of a token-priced predictor (its ``cpu_hour_usd`` is ``cpu_hour_usd``).

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
            prices=replace(prices or Prices(), cpu_hour_usd=cpu_hour_usd),
            watts_per_core=watts_per_core,
            label_set=predictor.label_set,
        )


def _priced_usage(predictions: Predictions, throughput: performance.Throughput) -> Usage:
    """The batch's usage as cost sees it: the process CPU seconds over the call, all threads
    counted (wider than the predictor's own wall-clock compute), and the tokens its
    predictions recorded (a remote model's, priced at the token prices)."""
    recorded = predictions.usage or Usage()
    return Usage(
        compute_s=throughput.cpu_s,
        input_tokens=recorded.input_tokens,
        output_tokens=recorded.output_tokens,
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
    prices: Prices,
    watts_per_core: float,
    label_set: Sequence[str],
) -> Evaluation:
    y_true = np.asarray(labels)
    y_pred = np.asarray(predictions.labels)
    correct = y_true == y_pred
    usage = _priced_usage(predictions, throughput)
    known = set(label_set)
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
        cpu_s_per_1m=throughput.cpu_s_per_item * 1e6,
        cost_per_1m_usd=cost_per_1m(usage, throughput.items, prices),
        wh_per_query=energy_wh(
            Usage(compute_s=usage.compute_s / throughput.items), watts_per_core=watts_per_core
        ),
        predictions=predictions,
        correct=correct,
        truth=y_true,
        usage=usage,
        unmapped=sum(label not in known for label in predictions.labels) if known else 0,
    )


def compare(
    specialist_eval: Evaluation,
    general_eval: Evaluation,
    y_true: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    metric: str = "accuracy",
) -> Comparison:
    """Paired test and cascade curve of a specialist against the general model.

    Both evaluations must come from the same rows, in the same order, as ``y_true``; or
    ``general_eval`` is a sample of them (:meth:`Evaluation.sampled`), and the test and the
    curve are on the sampled rows. ``metric`` (``accuracy`` or ``macro_f1``) is the one
    ``paired_metric`` is the paired bootstrap of.

    >>> comparison = compare(spec_eval, general_eval, labels, n_resamples=1000, seed=0)
    >>> comparison.paired_test.bootstrap.diff
    0.12
    """
    true = np.asarray(y_true)
    for name, result in (("specialist_eval", specialist_eval), ("general_eval", general_eval)):
        expected = true if result.rows is None else true[result.rows]
        if (result.split_rows or result.n) != len(true):
            raise ValueError(f"{name} has {result.n} rows but y_true has {len(true)}")
        if not np.array_equal(np.asarray(result.predictions.labels) == expected, result.correct):
            raise ValueError(f"{name} was not computed on these labels (rows differ)")
    spec_correct, general_correct = specialist_eval.paired_with(general_eval)
    # The specialist's answers on the rows the general model answered.
    taken = general_eval.rows if general_eval.rows is not None else slice(None)
    mine = np.asarray(specialist_eval.predictions.labels)[taken]
    test = paired_test(spec_correct, general_correct, n_resamples=n_resamples, seed=seed)
    if metric == "accuracy":
        paired_metric = test.bootstrap
    elif metric == "macro_f1":
        paired_metric = paired_macro_f1_bootstrap(
            true[taken], mine, general_eval.predictions.labels, n_resamples=n_resamples, seed=seed
        )
    else:
        raise ValueError(f"unknown metric {metric!r} (known: accuracy, macro_f1)")
    return Comparison(
        paired_test=test,
        cascade=cascade_curve(
            true[taken],
            mine,
            np.asarray(specialist_eval.predictions.confidences)[taken],
            general_eval.predictions.labels,
            thresholds,
        ),
        metric=metric,
        paired_metric=paired_metric,
    )
