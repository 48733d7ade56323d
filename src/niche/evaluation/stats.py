"""Bootstrap confidence intervals and paired significance tests, on ``scipy.stats``.

Intervals are percentile bootstrap intervals over rows (``scipy.stats.bootstrap``,
``method="percentile"``). Percentile rather than BCa because the statistics here are bounded
and discrete (accuracy is k/n): BCa's bias correction counts ties with the point estimate
poorly and its jackknife acceleration is unstable or undefined when there are few or no
errors (all-correct data makes it return NaN with a warning); it also costs n extra statistic
evaluations (a leave-one-out pass) per interval. At the test-set sizes niche works with
(hundreds to thousands of rows) the percentile interval of a mean is close to nominal.

Paired comparisons report the exact McNemar test (the primary p-value) and a paired
bootstrap of the accuracy difference; a task gated on macro-F1 gets the paired bootstrap of
the macro-F1 difference (:func:`paired_macro_f1_bootstrap`, the same result shape).

>>> low, high = accuracy_ci([1, 1, 0, 1])
>>> paired_test(correct_specialist, correct_general).p_value
0.0386
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from niche.evaluation.metrics import (
    Labels,
    _as_correct,
    _encode,
    _label_counts,
    _macro_from_counts,
    _paired,
)

__all__ = [
    "McNemar",
    "PairedBootstrap",
    "PairedTest",
    "accuracy_ci",
    "bootstrap_ci",
    "macro_f1_ci",
    "mcnemar",
    "paired_bootstrap",
    "paired_macro_f1_bootstrap",
    "paired_test",
]

# Resampled index arrays are processed in batches of about this many elements (8 MB of int64)
# so that memory stays flat however large the test set is.
_BATCH_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test on paired correctness.

    ``b``: rows only A got right; ``c``: rows only B got right; ``statistic``: min(b, c), the
    binomial count the exact test uses; ``p_value``: two-sided binomial test of ``statistic``
    out of ``b + c`` at 0.5 (1.0 when ``b + c == 0``).
    """

    b: int
    c: int
    statistic: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class PairedBootstrap:
    """Paired bootstrap of an accuracy difference: ``diff = accuracy(A) - accuracy(B)``.

    ``ci_low``/``ci_high``: percentile interval of the difference. ``p_value``: two-sided,
    shifted-null — the share of resampled differences at least as far from the observed
    difference as the observed difference is from 0, ``(1 + count) / (n_resamples + 1)``, so
    it lies in ``[1 / (n_resamples + 1), 1]``.
    """

    diff: float
    ci_low: float
    ci_high: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of A against B on the same rows.

    ``p_value`` is the exact McNemar p-value, the number to report; ``bootstrap`` adds the
    accuracy difference with its interval.
    """

    p_value: float
    mcnemar: McNemar
    bootstrap: PairedBootstrap

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"p_value", "mcnemar": {…}, "bootstrap": {…}}``."""
        return {
            "p_value": self.p_value,
            "mcnemar": self.mcnemar.to_dict(),
            "bootstrap": self.bootstrap.to_dict(),
        }


def _check_resampling(n_resamples: int, confidence: float) -> None:
    if not isinstance(n_resamples, int | np.integer) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def _bootstrap(
    arrays: Sequence[np.ndarray],
    statistic: Callable[..., Any],
    *,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float, np.ndarray]:
    """``(low, high, bootstrap distribution)`` of ``statistic`` over row resamples."""
    from scipy import stats

    _check_resampling(n_resamples, confidence)
    n = len(arrays[0])
    vectorized = "axis" in inspect.signature(statistic).parameters
    if n == 1:
        # Every resample of one row is that row; scipy refuses samples this small.
        value = statistic(*arrays, axis=-1) if vectorized else statistic(*arrays)
        distribution = np.full(n_resamples, float(value))
        return float(value), float(value), distribution
    result = stats.bootstrap(
        tuple(arrays),
        statistic,
        n_resamples=n_resamples,
        batch=max(1, _BATCH_ELEMENTS // n),
        vectorized=vectorized,
        paired=len(arrays) > 1,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high), np.asarray(result.bootstrap_distribution)


def bootstrap_ci(
    values_or_arrays: Sequence[Any] | np.ndarray | tuple[Sequence[Any] | np.ndarray, ...],
    statistic: Callable[..., Any],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of ``statistic`` over resampled rows.

    ``values_or_arrays`` is one 1-D sample, or a *tuple* of equal-length 1-D arrays whose rows
    are resampled together (e.g. ``(y_true, y_pred)``). ``statistic`` gets the resampled
    arrays, one per input. When it accepts ``axis`` it must be vectorised like ``np.mean``:
    it is called with arrays of shape ``(batch, n)`` and ``axis=-1`` and returns shape
    ``(batch,)``; otherwise it is called once per resample with 1-D arrays (slow).

    A statistic that is constant over resamples gives ``(v, v)``.

    >>> low, high = bootstrap_ci([0.2, 0.4, 0.9], np.mean, n_resamples=2000, seed=1)
    """
    if isinstance(values_or_arrays, tuple):
        if not values_or_arrays:
            raise ValueError("values_or_arrays is an empty tuple")
        arrays = [np.asarray(a) for a in values_or_arrays]
    else:
        arrays = [np.asarray(values_or_arrays)]
    if any(a.ndim != 1 for a in arrays):
        raise ValueError(
            "each array must be one-dimensional (pass one sample as a list or array, "
            "several paired samples as a tuple of arrays)"
        )
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"paired arrays differ in length: {sorted(lengths)}")
    if 0 in lengths:
        raise ValueError("cannot bootstrap an empty sample")
    low, high, _ = _bootstrap(
        arrays, statistic, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    return low, high


def accuracy_ci(
    correct: Sequence[bool] | np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of accuracy from per-row correctness (booleans or 0/1).

    >>> low, high = accuracy_ci([True, True, False, True], seed=0)
    """
    hits = _correct_array(correct, "correct")
    return bootstrap_ci(
        hits.astype(float), np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed
    )


def macro_f1_ci(
    y_true: Labels,
    y_pred: Labels,
    *,
    labels: Labels | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of :func:`~niche.evaluation.metrics.macro_f1` over paired rows.

    Each resample is scored the way :func:`macro_f1` scores the full set: with ``labels``
    when given, else over the labels present in that resample's ``y_true``.

    >>> low, high = macro_f1_ci(y_true, y_pred, n_resamples=1000, seed=0)
    """
    true_codes, pred_codes, classes, label_codes = _encode(y_true, y_pred, labels)
    n_classes = len(classes)

    def statistic(t: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray | np.floating[Any]:
        # scipy always resamples along the last axis here.
        return _macro_from_counts(*_label_counts(t, p, n_classes), label_codes)

    return bootstrap_ci(
        (true_codes, pred_codes),
        statistic,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )


def _correct_array(correct: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    hits = np.asarray(correct)
    if hits.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if len(hits) == 0:
        raise ValueError(f"{name} is empty")
    return _as_correct(hits, name)


def _correct_pair(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a = _correct_array(correct_a, "correct_a")
    b = _correct_array(correct_b, "correct_b")
    if len(a) != len(b):
        raise ValueError(f"correct_a and correct_b differ in length: {len(a)} != {len(b)}")
    return a, b


def paired_bootstrap(
    correct_a: Sequence[bool] | np.ndarray,
    correct_b: Sequence[bool] | np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedBootstrap:
    """Paired bootstrap of ``accuracy(A) - accuracy(B)`` on the same rows.

    The p-value is two-sided with the shifted-null method (Efron & Tibshirani 1993, §16.4):
    centring the bootstrap differences on the observed one approximates their distribution
    under "no difference", so ``p = (1 + #{|d* - d| ≥ |d|}) / (n_resamples + 1)``.

    >>> paired_bootstrap(correct_specialist, correct_general, seed=0).ci_low
    """
    a, b = _correct_pair(correct_a, correct_b)
    n = len(a)
    # Sums of the per-row differences are exact integers in float64, so the tail count below
    # has no rounding ties; they are divided by n only for reporting.
    row_diff = a.astype(np.float64) - b.astype(np.float64)
    low, high, sums = _bootstrap(
        [row_diff], np.sum, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    observed = float(row_diff.sum())
    extreme = int(np.count_nonzero(np.abs(sums - observed) >= abs(observed)))
    return PairedBootstrap(
        diff=observed / n,
        ci_low=low / n,
        ci_high=high / n,
        p_value=(1 + extreme) / (n_resamples + 1),
    )


def paired_macro_f1_bootstrap(
    y_true: Labels,
    pred_a: Labels,
    pred_b: Labels,
    *,
    labels: Labels | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedBootstrap:
    """Paired bootstrap of ``macro_f1(A) - macro_f1(B)`` on the same rows.

    One seeded resample of rows scores both predictors (the same rows, so the row-to-row
    luck both share cancels, as in :func:`paired_bootstrap`); each resample is scored like
    :func:`~niche.evaluation.metrics.macro_f1` scores the full set (over ``labels`` when
    given, else the labels present in that resample's ``y_true``). The p-value is the same
    two-sided shifted-null one as :func:`paired_bootstrap`'s.

    >>> paired_macro_f1_bootstrap(["a", "b"], ["a", "b"], ["a", "a"], seed=0).diff
    0.6666666666666667
    """
    true, a = _paired(y_true, pred_a, "y_true and pred_a")
    _, b = _paired(y_true, pred_b, "y_true and pred_b")
    # One code space for the three arrays (true twice against A then B, encoded together).
    codes_a, codes_b, classes, label_codes = _encode(
        np.concatenate([true, true]), np.concatenate([a, b]), labels
    )
    n = len(true)
    true_codes, pred_a_codes, pred_b_codes = codes_a[:n], codes_b[:n], codes_b[n:]
    n_classes = len(classes)

    def statistic(
        t: np.ndarray, pa: np.ndarray, pb: np.ndarray, axis: int = -1
    ) -> np.ndarray | np.floating[Any]:
        # scipy always resamples along the last axis here.
        mine = _macro_from_counts(*_label_counts(t, pa, n_classes), label_codes)
        theirs = _macro_from_counts(*_label_counts(t, pb, n_classes), label_codes)
        return mine - theirs

    observed = float(statistic(true_codes, pred_a_codes, pred_b_codes))
    low, high, distribution = _bootstrap(
        [true_codes, pred_a_codes, pred_b_codes],
        statistic,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    # Macro-F1 differences are ratios, not integers: a tolerance keeps a resample equal to
    # the observed difference (up to rounding) counted as at least as extreme.
    extreme = int(np.count_nonzero(np.abs(distribution - observed) >= abs(observed) - 1e-12))
    return PairedBootstrap(
        diff=observed, ci_low=low, ci_high=high, p_value=(1 + extreme) / (n_resamples + 1)
    )


def mcnemar(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray
) -> McNemar:
    """Exact (binomial) McNemar test of whether A and B are equally accurate on these rows.

    >>> mcnemar([1] * 10 + [0] * 2, [0] * 10 + [1] * 2).p_value  # b=10, c=2
    0.03857421875
    """
    from scipy import stats

    a, b_ = _correct_pair(correct_a, correct_b)
    b = int(np.count_nonzero(a & ~b_))
    c = int(np.count_nonzero(~a & b_))
    k = min(b, c)
    p_value = 1.0 if b + c == 0 else float(stats.binomtest(k, b + c, 0.5).pvalue)
    return McNemar(b=b, c=c, statistic=k, p_value=p_value)


def paired_test(
    correct_a: Sequence[bool] | np.ndarray,
    correct_b: Sequence[bool] | np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedTest:
    """McNemar's exact test plus a paired bootstrap of the accuracy difference.

    >>> result = paired_test(correct_specialist, correct_general, seed=0)
    >>> result.p_value, result.bootstrap.diff
    """
    exact = mcnemar(correct_a, correct_b)
    boot = paired_bootstrap(
        correct_a, correct_b, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    return PairedTest(p_value=exact.p_value, mcnemar=exact, bootstrap=boot)
