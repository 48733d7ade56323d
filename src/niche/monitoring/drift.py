"""Two-sample drift tests: a window of live traffic against a reference.

* :func:`input_drift` — nearest-neighbour novelty on the embeddings: each text's distance to
  its nearest reference text, against the reference's own leave-one-out distances, by a
  one-sided rank test that weighs the far tail most (the log-rank / Savage test). It answers
  "is the window reaching regions the reference never covered" — new intents, a new
  language, a new product; see ``benchmarks/drift.py`` for its power.
* :func:`input_drift_projection` — a cheap complement that catches a shift *within* the
  reference's support (a changed mix of known intents): Kolmogorov-Smirnov on each of the
  reference's top principal components, Bonferroni-corrected.
* :func:`prediction_drift` — chi-square on the predicted-label mix.
* :func:`confidence_drift` — the same rank test on the specialist's top-class confidence,
  towards lower values ("Failing Loudly", Rabanser et al. 2019: tests on the model's own
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


class InputDriftReference:
    """A reference set of embeddings prepared once for many input-drift checks.

    ``fit`` computes what depends on the reference only: a brute-force nearest-neighbour
    index and every reference row's leave-one-out novelty (its distance to its
    ``neighbours`` nearest other reference rows, averaged), and a PCA of the reference with
    its projected rows. Each check then costs one (window x reference) distance matrix.

    ``neighbours``: how many nearest reference rows a novelty score averages (1 measured
    best). ``components``: principal components the projection test uses. ``seed``: the
    PCA's solver randomness.

        >>> reference = InputDriftReference().fit(embeddings[:2000])
        >>> reference.input_drift(embeddings[2000:2500], alpha=0.01).alarm
        False
        >>> reference.input_drift_projection(embeddings[2000:2500], alpha=0.01).alarm
        False
    """

    def __init__(
        self,
        *,
        neighbours: int = 1,
        components: int = 5,
        seed: int = 0,
    ) -> None:
        self.neighbours = neighbours
        self.components = components
        self.seed = seed
        self.reference_: np.ndarray | None = None
        self.index_: Any = None
        self.novelty_: np.ndarray | None = None
        self.pca_: Any = None
        self.projected_: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"InputDriftReference(neighbours={self.neighbours!r}, "
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

        ``statistic``: the log-rank z of the window's novelty against the reference's (> 0:
        more novel); ``p_value``: one-sided. ``detail["beyond_reference_p90"]``: the share of
        the window more novel than 90 % of the reference (about 0.1 under no drift).

            >>> reference.input_drift(window, alpha=0.01).detail["beyond_reference_p90"]
            0.19   # a window with about 10 % unseen texts
        """
        alpha = check_alpha(alpha)
        min_rows = check_count(min_rows, "min_rows", minimum=1)
        rows = self._current(current)
        n, reference_n = rows.shape[0], self.reference_n
        base = {"reference_n": reference_n, "neighbours": self.neighbours}
        if n < min_rows or reference_n < min_rows or self.novelty_ is None:
            return insufficient("input_drift", "knn-novelty", alpha, n, **base)
        distances, _ = self.index_.kneighbors(rows)
        novelty = distances.mean(axis=1)
        shift = _scores_shift_up(self.novelty_, novelty)
        return Signal(
            name="input_drift",
            statistic=shift.statistic,
            p_value=shift.p_value,
            interval=None,
            threshold=alpha,
            alarm=shift.p_value < alpha,
            method="knn-novelty",
            n=n,
            detail={
                **base,
                "test": "log-rank",
                "beyond_reference_p90": shift.beyond,
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
    min_rows: int = MIN_ROWS,
) -> Signal:
    """Nearest-neighbour novelty test of ``current`` embeddings against ``reference``.

    The one-off form of :meth:`InputDriftReference.input_drift`; to check one reference
    many times, build the :class:`InputDriftReference` once.

        >>> input_drift(reference_embeddings, window_embeddings, alpha=0.01).alarm
        True
    """
    prepared = InputDriftReference(neighbours=neighbours, seed=seed)
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

        >>> input_drift_projection(reference_embeddings, window_embeddings, alpha=0.01).method
        'pca-ks'
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
    min_rows: int = MIN_ROWS,
) -> Signal:
    """Has the specialist's top-class confidence dropped, most of all in its low tail?

    ``reference`` and ``current``: top-class confidences in [0, 1]. The reference must be
    out of sample (a held-out split, or the first serving window) — a model's confidence on
    its own training rows is inflated and would make every window look drifted. One-sided
    log-rank (Savage) test towards lower confidence: a rise does no harm. ``statistic``: its
    z (> 0: less confident); ``detail["below_reference_p10"]``: the share of the window less
    confident than 90 % of the reference (about 0.1 under no drift).

        >>> confidence_drift(held_out_confidences, window_confidences, alpha=0.01).alarm
        True
    """
    alpha = check_alpha(alpha)
    min_rows = check_count(min_rows, "min_rows", minimum=1)
    reference_values = check_vector(reference, "reference", low=0.0, high=1.0)
    current_values = check_vector(current, "current", low=0.0, high=1.0)
    n, reference_n = current_values.size, reference_values.size
    base: dict[str, Any] = {"reference_n": reference_n}
    if n < min_rows or reference_n < min_rows:
        return insufficient("confidence_drift", "log-rank", alpha, n, **base)
    # Doubt (1 - confidence) running higher is confidence running lower.
    shift = _scores_shift_up(1.0 - reference_values, 1.0 - current_values)
    return Signal(
        name="confidence_drift",
        statistic=shift.statistic,
        p_value=shift.p_value,
        interval=None,
        threshold=alpha,
        alarm=shift.p_value < alpha,
        method="log-rank",
        n=n,
        detail={
            **base,
            "below_reference_p10": shift.beyond,
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
class _Shift:
    statistic: float  # the log-rank z, signed so that > 0 means current scores run higher
    p_value: float
    beyond: float  # share of current above the reference's 90th percentile (0.1 under no drift)


def _scores_shift_up(reference_scores: np.ndarray, current_scores: np.ndarray) -> _Shift:
    """Do ``current``'s scores run higher than the reference's, most of all in the top tail?

    The log-rank test (``scipy.stats.logrank``) of uncensored samples is the Savage
    (exponential-scores) rank test: its weights grow towards the largest values, so a small
    share of the window far out in the tail (texts of an unseen intent) counts most. One-sided.
    """
    from scipy import stats

    beyond = float(np.mean(current_scores > np.quantile(reference_scores, 0.9)))
    if np.ptp(np.concatenate([reference_scores, current_scores])) == 0:
        return _Shift(statistic=0.0, p_value=1.0, beyond=beyond)
    # 'less': the first sample's failure rate is lower, i.e. its values run longer (higher).
    result = stats.logrank(current_scores, reference_scores, alternative="less")
    return _Shift(statistic=-float(result.statistic), p_value=float(result.pvalue), beyond=beyond)


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
