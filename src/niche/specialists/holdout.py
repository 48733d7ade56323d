"""The seeded, stratified hold-out of training rows that kinds calibrate, validate or choose on.

    >>> kept, held = stratified_holdout(targets, 0.1, seed=0)
    >>> len(kept) + len(held) == len(targets)
    True

The text kind holds out its temperature-calibration slice with it, the fine-tuned kind its
early-stopping slice and the two-stage kind the slice its threshold is chosen on.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_holdout"]


def stratified_holdout(
    targets: np.ndarray, size: float, *, seed: int, min_held: int = 0, min_kept: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, held-out rows), each sorted: a seeded ``size`` share of the rows of each
    label with at least 3 rows is held out — at least ``min_held`` of them and leaving at
    least ``min_kept`` — and every row of a smaller label is kept.

        >>> stratified_holdout(np.array([0, 0, 0, 1, 1, 1]), 0.34, seed=0)[1].size
        2
    """
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for label in np.unique(targets):
        rows = np.flatnonzero(targets == label)
        rng.shuffle(rows)
        n_held = 0
        if len(rows) >= 3 and size > 0:
            n_held = min(max(round(len(rows) * size), min_held), len(rows) - min_kept)
        held.append(rows[:n_held])
        kept.append(rows[n_held:])
    empty = np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(kept or [empty])), np.sort(np.concatenate(held or [empty]))
