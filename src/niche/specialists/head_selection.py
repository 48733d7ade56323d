"""Choose a logistic-regression head's regularisation and class weighting by cross-validation.

    >>> choice = choose_head(embeddings, targets, metric="macro_f1", seed=0)
    >>> choice.c, choice.class_weight, choice.chosen_by
    (4.0, 'balanced', 'cross-validation')
    >>> choice.to_dict()["cv_scores"]["4"]     # out-of-fold score of C=4, no class weights
    0.912

Only the training rows are used: a seeded stratified subsample of at most
:data:`CV_MAX_ROWS`, split into :data:`CV_FOLDS` stratified folds, each candidate scored on
the pooled out-of-fold predictions with the task's metric (``accuracy`` or ``macro_f1``).
``class_weight="balanced"`` is tried too when the label set is skewed (its largest label has
at least :data:`SKEW_RATIO` times the rows of its smallest).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from niche.errors import ConfigurationError
from niche.specialists.context import FIT_METRICS

__all__ = [
    "CV_FOLDS",
    "CV_MAX_ROWS",
    "C_GRID",
    "DEFAULT_C",
    "SKEW_RATIO",
    "HeadChoice",
    "choose_head",
    "one_blas_thread",
    "search_identity",
]

C_GRID: tuple[float, ...] = (1.0, 4.0, 10.0, 16.0, 32.0)
"""The inverse regularisations tried (BANKING77 test accuracy, all rows: 0.905 at C=1, 0.931
at 10 to 32)."""

DEFAULT_C = 10.0
"""The head's C when there are too few rows to cross-validate; ties in CV go to the closest."""

CV_FOLDS = 3
CV_MAX_ROWS = 2000
SKEW_RATIO = 3.0


def search_identity() -> dict[str, Any]:
    """What the head search tries, for a kind's fit identity: a change of the grid must not
    reuse a head an older grid chose."""
    return {
        "grid": list(C_GRID),
        "folds": CV_FOLDS,
        "max_rows": CV_MAX_ROWS,
        "skew_ratio": SKEW_RATIO,
    }


@dataclass(frozen=True)
class HeadChoice:
    """The head's ``c`` and ``class_weight``, and how they were chosen.

    ``chosen_by`` is ``cross-validation``, ``given`` (an explicit ``c``) or ``default`` (too
    few rows to cross-validate: :data:`DEFAULT_C`). ``cv_scores`` maps a candidate (``"10"``,
    ``"10/balanced"``) to its out-of-fold score on ``cv_metric``, over ``cv_rows`` rows.
    """

    c: float
    class_weight: str | None = None
    chosen_by: str = "given"
    cv_metric: str | None = None
    cv_scores: dict[str, float] = field(default_factory=dict)
    cv_rows: int = 0
    cv_folds: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as saved in the specialist's config and recorded in lineage."""
        return {
            "c": self.c,
            "class_weight": self.class_weight,
            "chosen_by": self.chosen_by,
            "cv_metric": self.cv_metric,
            "cv_scores": dict(self.cv_scores),
            "cv_rows": self.cv_rows,
            "cv_folds": self.cv_folds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadChoice:
        """The choice :meth:`to_dict` wrote."""
        return cls(
            c=float(data["c"]),
            class_weight=data.get("class_weight"),
            chosen_by=str(data.get("chosen_by", "given")),
            cv_metric=data.get("cv_metric"),
            cv_scores={str(k): float(v) for k, v in (data.get("cv_scores") or {}).items()},
            cv_rows=int(data.get("cv_rows", 0)),
            cv_folds=int(data.get("cv_folds", 0)),
        )


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS and OpenMP limited to one thread inside the block.

    A head's matrices are small: threads waiting for a busy core made the BANKING77 head 7x
    slower on a shared 2-core machine (33.5 s with two threads, 5 s with one).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # type: ignore[no-untyped-call]
        yield


def _candidate_name(c: float, class_weight: str | None) -> str:
    return f"{c:g}" if class_weight is None else f"{c:g}/{class_weight}"


def _subsample(
    targets: np.ndarray, max_rows: int, folds: int, rng: np.random.Generator
) -> np.ndarray:
    """Row indices: every row, or a stratified share of each label (at least ``folds`` rows
    of a label that has them) when there are more than ``max_rows``."""
    if len(targets) <= max_rows:
        return np.arange(len(targets))
    share = max_rows / len(targets)
    keep: list[np.ndarray] = []
    for label in np.unique(targets):
        rows = np.flatnonzero(targets == label)
        n = min(len(rows), max(folds, round(len(rows) * share)))
        keep.append(rng.choice(rows, size=n, replace=False))
    return np.sort(np.concatenate(keep))


def _fold_ids(targets: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified fold of each row: each label's rows shuffled and dealt round the folds,
    the dealing carried on from one label to the next so a label with fewer rows than
    folds still lands in different folds than the previous small label."""
    ids = np.empty(len(targets), dtype=np.int64)
    start = 0
    for label in np.unique(targets):
        rows = np.flatnonzero(targets == label)
        rng.shuffle(rows)
        ids[rows] = (start + np.arange(len(rows))) % folds
        start += len(rows)
    return ids


def _score(metric: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    if metric == "accuracy":
        return float(np.mean(truth == predicted))
    from sklearn.metrics import f1_score

    # Over the labels present in the truth, as niche.evaluation.macro_f1 scores it.
    return float(
        f1_score(truth, predicted, labels=np.unique(truth), average="macro", zero_division=0)
    )


def choose_head(
    embeddings: np.ndarray,
    targets: np.ndarray,
    *,
    metric: str = "accuracy",
    seed: int = 0,
    max_iter: int = 2000,
    grid: tuple[float, ...] = C_GRID,
    max_rows: int = CV_MAX_ROWS,
    folds: int = CV_FOLDS,
) -> HeadChoice:
    """The ``C`` of ``grid`` (and class weighting, for a skewed label set) with the best
    out-of-fold ``metric`` on ``embeddings`` (n, dim) and integer ``targets`` (n,).

    Ties go to no class weights, then to the C closest to :data:`DEFAULT_C`. With fewer than
    two rows of any label to deal into folds, nothing is cross-validated: the choice is
    :data:`DEFAULT_C` without class weights, ``chosen_by="default"``.
    """
    if metric not in FIT_METRICS:
        raise ConfigurationError(
            f"a head is chosen on one of {', '.join(FIT_METRICS)}, not {metric!r}"
        )
    with one_blas_thread():
        return _cross_validate(embeddings, targets, metric, seed, max_iter, grid, max_rows, folds)


def _cross_validate(
    embeddings: np.ndarray,
    targets: np.ndarray,
    metric: str,
    seed: int,
    max_iter: int,
    grid: tuple[float, ...],
    max_rows: int,
    folds: int,
) -> HeadChoice:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    rows = _subsample(targets, max_rows, folds, rng)
    x, y = embeddings[rows], targets[rows]
    counts = np.bincount(y)
    counts = counts[counts > 0]
    k = min(folds, int(counts.max()))
    fold = _fold_ids(y, k, rng) if k >= 2 else np.zeros(len(y), dtype=np.int64)
    trainable = k >= 2 and all(len(np.unique(y[fold != f])) >= 2 for f in range(k))
    if not trainable:
        return HeadChoice(c=DEFAULT_C, chosen_by="default", cv_metric=metric, cv_rows=len(y))

    weights: list[str | None] = [None]
    if counts.max() >= SKEW_RATIO * counts.min():
        weights.append("balanced")
    ordered = sorted(grid)
    predicted = {(c, w): np.empty_like(y) for c in ordered for w in weights}
    for weight in weights:
        for f in range(k):
            train, held = fold != f, fold == f
            # Warm-started up the grid: each larger C starts from the previous solution.
            head = LogisticRegression(
                C=ordered[0],
                max_iter=max_iter,
                random_state=seed,
                warm_start=True,
                class_weight=weight,
            )
            for c in ordered:
                head.set_params(C=c)
                head.fit(x[train], y[train])
                predicted[(c, weight)][held] = head.predict(x[held])

    scores = {key: _score(metric, y, labels) for key, labels in predicted.items()}

    def preference(key: tuple[float, str | None]) -> tuple[float, bool, float]:
        c, weight = key
        return (-round(scores[key], 9), weight is not None, abs(math.log(c / DEFAULT_C)))

    best_c, best_weight = min(scores, key=preference)
    return HeadChoice(
        c=float(best_c),
        class_weight=best_weight,
        chosen_by="cross-validation",
        cv_metric=metric,
        cv_scores={_candidate_name(c, w): round(s, 6) for (c, w), s in scores.items()},
        cv_rows=len(y),
        cv_folds=k,
    )
