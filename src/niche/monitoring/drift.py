"""Two-sample drift tests: a window of live traffic against a reference.

* :func:`input_drift` — nearest-neighbour novelty on the embeddings: each text's distance to
  its nearest reference text, against the reference's own leave-one-out distances; the test
  asks whether more of the window than chance lies in the far tail of the pooled distances
  (an exact hypergeometric test on the pooled tail). It answers "is the window reaching
  regions the reference never covered" — new intents, a new language, a new product — and
  is the most powerful of the checks measured in ``benchmarks/drift.py`` (BANKING77 windows
  with 10 % texts of unseen intents: about 80 % detected at alpha 0.01, over ten seeds).
* :func:`input_drift_projection` — a cheap complement that catches a shift *within* the
  reference's support (a changed mix of known intents): Kolmogorov-Smirnov on each of the
  reference's top principal components, Bonferroni-corrected.
* :func:`prediction_drift` — chi-square on the predicted-label mix.
* :func:`confidence_drift` — the same pooled-tail test on the low tail of the specialist's
  top-class confidence ("Failing Loudly", Rabanser et al. 2019: tests on the model's own
  softmax outputs detect shift best).
* :func:`cascade_rate` — Fisher's exact test on the share of requests sent to the general model.

Every test is one-sided towards harm where a direction means harm (more novelty, lower
confidence, more cascades) and returns a :class:`~niche.monitoring.Signal`; a window or a
reference with fewer than ``min_rows`` rows gives ``alarm`` false and
``detail["insufficient"]``. The monitor checks the same reference many times: build an
:class:`InputDriftReference` once and call its methods per window.

    >>> reference = InputDriftReference().fit(training_embeddings)
    >>> reference.input_drift(window_embeddings, alpha=0.01).alarm
    False
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from niche.errors import NotFittedError, ValidationError
from niche.monitoring.signals import (
    MIN_ROWS,
    Signal,
    check_alpha,
    check_count,
    check_fraction,
    check_labels,
    check_matrix,
    check_vector,
    insufficient,
)

__all__ = [
    "InputDriftReference",
    "cascade_rate",
    "confidence_drift",
    "input_drift",
    "input_drift_projection",
    "prediction_drift",
]

DEFAULT_TAIL = 0.1
"""Share of the pooled scores the tail tests look at. 0.05 to 0.1 did best on BANKING77."""


class InputDriftReference:
    """A reference set of embeddings prepared once for many input-drift checks.

    ``fit`` computes what depends on the reference only: a brute-force nearest-neighbour
    index and every reference row's leave-one-out novelty (its distance to its
    ``neighbours`` nearest other reference rows, averaged), and a PCA of the reference with
    its projected rows. Each check then costs one (window x reference) distance matrix.

    ``neighbours``: how many nearest reference rows a novelty score averages (1 measured
    best). ``tail``: share of the pooled novelty scores the test counts in. ``components``:
    principal components the projection test uses. ``seed``: the PCA's solver randomness.

        >>> reference = InputDriftReference(tail=0.1).fit(embeddings[:2000])
        >>> reference.input_drift(embeddings[2000:2500], alpha=0.01).p_value
        0.62
        >>> reference.input_drift_projection(embeddings[2000:2500], alpha=0.01).alarm
        False
    """

    def __init__(
        self,
        *,
        neighbours: int = 1,
        tail: float = DEFAULT_TAIL,
        components: int = 5,
        seed: int = 0,
    ) -> None:
        self.neighbours = neighbours
        self.tail = tail
        self.components = components
        self.seed = seed
        self.reference_: np.ndarray | None = None
        self.index_: Any = None
        self.novelty_: np.ndarray | None = None
        self.pca_: Any = None
        self.projected_: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"InputDriftReference(neighbours={self.neighbours!r}, tail={self.tail!r}, "
            f"components={self.components!r}, seed={self.seed!r})"
        )

    def fit(self, reference: np.ndarray) -> InputDriftReference:
        """Prepare the reference embeddings (rows x dimensions, finite); return ``self``.

        A reference too small to judge (fewer than ``neighbours + 1`` rows) is accepted: its
        checks report ``detail["insufficient"]``.

            >>> InputDriftReference().fit(np.load("reference.npy")).novelty_.shape
            (2000,)
        """
        from sklearn.decomposition import PCA
        from sklearn.neighbors import NearestNeighbors

        neighbours = check_count(self.neighbours, "neighbours", minimum=1)
        check_fraction(self.tail, "tail", open_low=True)
        components = check_count(self.components, "components", minimum=1)
        check_count(self.seed, "seed")
        rows = check_matrix(reference, "reference")
        self.reference_ = rows
        self.index_ = self.novelty_ = self.pca_ = self.projected_ = None
        n, dim = rows.shape
        if n > neighbours:
            self.index_ = NearestNeighbors(n_neighbors=neighbours, algorithm="brute").fit(rows)
            # kneighbors() with no query leaves each row out of its own neighbours.
            distances, _ = self.index_.kneighbors()
            self.novelty_ = distances.mean(axis=1)
        if n >= 2:
            k = min(components, n - 1, dim)
            self.pca_ = PCA(n_components=k, random_state=self.seed).fit(rows)
            self.projected_ = self.pca_.transform(rows)
        return self

    @property
    def reference_n(self) -> int:
        """Rows in the fitted reference."""
        return 0 if self.reference_ is None else int(self.reference_.shape[0])

    def input_drift(self, current: np.ndarray, *, alpha: float, min_rows: int = MIN_ROWS) -> Signal:
        """Nearest-neighbour novelty test of ``current`` (rows x dimensions) against the reference.

        ``statistic``: the share of the window in the pooled far tail (``detail
        ["expected_share"]`` is its share under no drift); ``p_value``: the exact
        hypergeometric tail probability of so many or more.

            >>> reference.input_drift(window, alpha=0.01).to_dict()["detail"]["expected_share"]
            0.1
        """
        alpha = check_alpha(alpha)
        min_rows = check_count(min_rows, "min_rows", minimum=1)
        rows = self._current(current)
        n, reference_n = rows.shape[0], self.reference_n
        base = {"reference_n": reference_n, "neighbours": self.neighbours, "tail": self.tail}
        if n < min_rows or reference_n < min_rows or self.novelty_ is None:
            return insufficient("input_drift", "knn-novelty", alpha, n, **base)
        distances, _ = self.index_.kneighbors(rows)
        novelty = distances.mean(axis=1)
        tail = _tail_test(self.novelty_, novelty, self.tail)
        return Signal(
            name="input_drift",
            statistic=tail.share,
            p_value=tail.p_value,
            interval=None,
            threshold=alpha,
            alarm=tail.p_value < alpha,
            method="knn-novelty",
            n=n,
            detail={
                **base,
                "expected_share": tail.expected_share,
                "reference_share": tail.reference_share,
                "threshold_distance": tail.threshold,
                "current_median_distance": float(np.median(novelty)),
                "reference_median_distance": float(np.median(self.novelty_)),
            },
        )

    def input_drift_projection(
        self, current: np.ndarray, *, alpha: float, min_rows: int = MIN_ROWS
    ) -> Signal:
        """Kolmogorov-Smirnov on each top principal component of the reference, Bonferroni.

        ``statistic``: the largest KS distance over the components; ``p_value``: the
        smallest component p-value times the number of components (capped at 1).
        ``detail["components"]`` lists each component's KS distance and p-value.

            >>> reference.input_drift_projection(window, alpha=0.01).method
            'pca-ks'
        """
        from scipy import stats

        alpha = check_alpha(alpha)
        min_rows = check_count(min_rows, "min_rows", minimum=1)
        rows = self._current(current)
        n, reference_n = rows.shape[0], self.reference_n
        base: dict[str, Any] = {"reference_n": reference_n}
        if n < min_rows or reference_n < min_rows or self.projected_ is None:
            return insufficient("input_drift_projection", "pca-ks", alpha, n, **base)
        projected = self.pca_.transform(rows)
        result = stats.ks_2samp(projected, self.projected_, axis=0)
        distances = np.atleast_1d(result.statistic)
        p_values = np.atleast_1d(result.pvalue)
        k = distances.size
        p_value = min(1.0, float(p_values.min()) * k)
        return Signal(
            name="input_drift_projection",
            statistic=float(distances.max()),
            p_value=p_value,
            interval=None,
            threshold=alpha,
            alarm=p_value < alpha,
            method="pca-ks",
            n=n,
            detail={
                **base,
                "explained_variance": float(self.pca_.explained_variance_ratio_.sum()),
                "components": [
                    {"ks": float(d), "p_value": float(p)}
                    for d, p in zip(distances, p_values, strict=True)
                ],
            },
        )

    def _current(self, current: np.ndarray) -> np.ndarray:
        if self.reference_ is None:
            raise NotFittedError(
                "this InputDriftReference is not fitted yet: call .fit(reference) first"
            )
        return check_matrix(current, "current", dim=self.reference_.shape[1])


def input_drift(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    alpha: float,
    seed: int = 0,
    neighbours: int = 1,
    tail: float = DEFAULT_TAIL,
    min_rows: int = MIN_ROWS,
) -> Signal:
    """Nearest-neighbour novelty test of ``current`` embeddings against ``reference``.

    The one-off form of :meth:`InputDriftReference.input_drift`; to check one reference
    many times, build the :class:`InputDriftReference` once.

        >>> input_drift(reference_embeddings, window_embeddings, alpha=0.01).alarm
        True
    """
    prepared = InputDriftReference(neighbours=neighbours, tail=tail, seed=seed)
    return prepared.fit(reference).input_drift(current, alpha=alpha, min_rows=min_rows)


def input_drift_projection(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    alpha: float,
    seed: int = 0,
    components: int = 5,
    min_rows: int = MIN_ROWS,
) -> Signal:
    """KS tests on the reference's top ``components`` principal components, Bonferroni.

    The one-off form of :meth:`InputDriftReference.input_drift_projection`.

        >>> input_drift_projection(reference_embeddings, window_embeddings, alpha=0.01).p_value
        0.0003
    """
    prepared = InputDriftReference(components=components, seed=seed)
    return prepared.fit(reference).input_drift_projection(current, alpha=alpha, min_rows=min_rows)


def prediction_drift(
    reference: Sequence[str],
    current: Sequence[str],
    *,
    labels: Sequence[str],
    alpha: float,
    min_rows: int = MIN_ROWS,
    min_expected: float = 5.0,
) -> Signal:
    """Chi-square test of the predicted-label mix of ``current`` against ``reference``.

    A 2 x K contingency test (``scipy.stats.chi2_contingency``), so the reference's own
    sampling noise counts too. Labels whose expected count in the window is below
    ``min_expected`` are pooled into one bin, where the chi-square approximation holds.
    ``detail["largest_changes"]``: the three labels whose share moved most.

        >>> prediction_drift(["a", "a", "b"] * 20, ["b"] * 60, labels=["a", "b"], alpha=0.01).alarm
        True
    """
    from scipy import stats

    alpha = check_alpha(alpha)
    min_rows = check_count(min_rows, "min_rows", minimum=1)
    if isinstance(min_expected, bool) or not (
        isinstance(min_expected, (int, float)) and min_expected >= 0
    ):
        raise ValidationError(
            f"min_expected must be a number >= 0, got {min_expected!r}", param="min_expected"
        )
    names = _label_set(labels)
    index = {label: i for i, label in enumerate(names)}
    reference_codes = check_labels(reference, index, "reference")
    current_codes = check_labels(current, index, "current")
    n, reference_n = current_codes.size, reference_codes.size
    base: dict[str, Any] = {"reference_n": reference_n}
    if n < min_rows or reference_n < min_rows:
        return insufficient("prediction_drift", "chi-square", alpha, n, **base)
    k = len(names)
    reference_counts = np.bincount(reference_codes, minlength=k)
    current_counts = np.bincount(current_codes, minlength=k)
    totals = reference_counts + current_counts
    expected = totals * (n / (n + reference_n))
    seen = totals > 0
    sparse = seen & (expected < min_expected)
    kept = seen & ~sparse
    columns = [current_counts[kept], reference_counts[kept]]
    if sparse.any():
        columns = [
            np.append(columns[0], current_counts[sparse].sum()),
            np.append(columns[1], reference_counts[sparse].sum()),
        ]
    table = np.vstack(columns)
    if table.shape[1] < 2:
        statistic, p_value, dof = 0.0, 1.0, 0
    else:
        result = stats.chi2_contingency(table, correction=False)
        statistic, p_value, dof = float(result.statistic), float(result.pvalue), int(result.dof)
    reference_share = reference_counts / reference_n
    current_share = current_counts / n
    moved = np.argsort(-np.abs(current_share - reference_share), kind="stable")[:3]
    return Signal(
        name="prediction_drift",
        statistic=statistic,
        p_value=p_value,
        interval=None,
        threshold=alpha,
        alarm=p_value < alpha,
        method="chi-square",
        n=n,
        detail={
            **base,
            "dof": dof,
            "pooled_labels": int(sparse.sum()),
            "largest_changes": [
                {
                    "label": names[i],
                    "reference_share": float(reference_share[i]),
                    "current_share": float(current_share[i]),
                }
                for i in moved
                if current_share[i] != reference_share[i]
            ],
        },
    )


def confidence_drift(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    alpha: float,
    tail: float = DEFAULT_TAIL,
    min_rows: int = MIN_ROWS,
) -> Signal:
    """Does more of the window than chance have a low top-class confidence?

    ``reference`` and ``current``: top-class confidences in [0, 1]. The reference must be
    out of sample (a held-out split, or the first serving window) — a model's confidence on
    its own training rows is inflated and would make every window look drifted. The test
    counts the window's share among the lowest ``tail`` of the pooled confidences (exact
    hypergeometric, one-sided: a rise in confidence does no harm).

        >>> confidence_drift(held_out_confidences, window_confidences, alpha=0.01).statistic
        0.19
    """
    alpha = check_alpha(alpha)
    check_fraction(tail, "tail", open_low=True)
    min_rows = check_count(min_rows, "min_rows", minimum=1)
    reference_values = check_vector(reference, "reference", low=0.0, high=1.0)
    current_values = check_vector(current, "current", low=0.0, high=1.0)
    n, reference_n = current_values.size, reference_values.size
    base: dict[str, Any] = {"reference_n": reference_n, "tail": tail}
    if n < min_rows or reference_n < min_rows:
        return insufficient("confidence_drift", "tail-hypergeometric", alpha, n, **base)
    tail_result = _tail_test(-reference_values, -current_values, tail)
    return Signal(
        name="confidence_drift",
        statistic=tail_result.share,
        p_value=tail_result.p_value,
        interval=None,
        threshold=alpha,
        alarm=tail_result.p_value < alpha,
        method="tail-hypergeometric",
        n=n,
        detail={
            **base,
            "expected_share": tail_result.expected_share,
            "reference_share": tail_result.reference_share,
            "threshold_confidence": -tail_result.threshold,
            "current_median": float(np.median(current_values)),
            "reference_median": float(np.median(reference_values)),
        },
    )


def cascade_rate(
    reference_cascaded: int,
    reference_n: int,
    current_cascaded: int,
    current_n: int,
    *,
    alpha: float,
    min_rows: int = MIN_ROWS,
) -> Signal:
    """Has the share of requests sent on to the general model risen? Fisher's exact test.

    One-sided (``scipy.stats.fisher_exact``, ``alternative="greater"``): a falling cascade
    rate costs nothing. ``statistic``: the window's cascade rate.

        >>> cascade_rate(100, 1000, 90, 500, alpha=0.01).alarm
        True
    """
    from scipy import stats

    alpha = check_alpha(alpha)
    min_rows = check_count(min_rows, "min_rows", minimum=1)
    reference_n = check_count(reference_n, "reference_n")
    current_n = check_count(current_n, "current_n")
    reference_cascaded = check_count(reference_cascaded, "reference_cascaded")
    current_cascaded = check_count(current_cascaded, "current_cascaded")
    if reference_cascaded > reference_n:
        raise ValidationError(
            f"reference_cascaded ({reference_cascaded}) exceeds reference_n ({reference_n})",
            param="reference_cascaded",
        )
    if current_cascaded > current_n:
        raise ValidationError(
            f"current_cascaded ({current_cascaded}) exceeds current_n ({current_n})",
            param="current_cascaded",
        )
    base: dict[str, Any] = {"reference_n": reference_n}
    if current_n < min_rows or reference_n < min_rows:
        return insufficient("cascade_rate", "fisher-exact", alpha, current_n, **base)
    table = np.array(
        [
            [current_cascaded, current_n - current_cascaded],
            [reference_cascaded, reference_n - reference_cascaded],
        ]
    )
    result = stats.fisher_exact(table, alternative="greater")
    p_value = float(result.pvalue)
    return Signal(
        name="cascade_rate",
        statistic=current_cascaded / current_n,
        p_value=p_value,
        interval=None,
        threshold=alpha,
        alarm=p_value < alpha,
        method="fisher-exact",
        n=current_n,
        detail={
            **base,
            "reference_rate": reference_cascaded / reference_n,
            "odds_ratio": float(result.statistic),
        },
    )


@dataclass(frozen=True)
class _Tail:
    share: float  # of the current window in the pooled tail
    p_value: float
    expected_share: float  # of the pooled scores in the tail: the current's share under no drift
    reference_share: float
    threshold: float  # the smallest score in the tail


def _tail_test(reference_scores: np.ndarray, current_scores: np.ndarray, tail: float) -> _Tail:
    """Is ``current`` over-represented among the largest ``tail`` share of the pooled scores?

    Under no drift the pooled scores are exchangeable, so given the pooled values the number
    of current rows among those at or above the pooled threshold is hypergeometric: the
    p-value is exact (ties at the threshold all count in, which keeps it exact).
    """
    from scipy import stats

    pooled = np.concatenate([reference_scores, current_scores])
    total, n = pooled.size, current_scores.size
    m = max(1, math.ceil(tail * total))
    threshold = float(np.partition(pooled, total - m)[total - m])
    in_tail = int(np.count_nonzero(pooled >= threshold))
    current_in_tail = int(np.count_nonzero(current_scores >= threshold))
    p_value = float(stats.hypergeom.sf(current_in_tail - 1, total, n, in_tail))
    return _Tail(
        share=current_in_tail / n,
        p_value=min(1.0, max(0.0, p_value)),
        expected_share=in_tail / total,
        reference_share=(in_tail - current_in_tail) / reference_scores.size,
        threshold=threshold,
    )


def _label_set(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise ValidationError("labels must be a sequence of labels, not a string", param="labels")
    names = list(labels)
    if not names:
        raise ValidationError("labels must not be empty", param="labels")
    if not all(isinstance(label, str) for label in names):
        raise ValidationError("labels must all be strings", param="labels")
    duplicates = sorted(label for label, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValidationError(f"labels holds {duplicates[0]!r} more than once", param="labels")
    return names
