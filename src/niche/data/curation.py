"""Curation: normalise, de-duplicate, split and remove train↔test leaks.

>>> from niche.data import curate, load_file
>>> version = curate(load_file("tickets.csv"), seed=0)  # doctest: +SKIP
>>> version.report.exact_duplicates, version.report.rows_out  # doctest: +SKIP
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from niche.data.normalise import normalise_text
from niche.data.rows import Rows, _check_label
from niche.data.version import CurationReport, DatasetVersion, fingerprint_splits
from niche.errors import ConfigurationError, DataValidationError

__all__ = ["MAX_CONFLICT_EXAMPLES", "SHINGLE_SIZE", "curate"]

SHINGLE_SIZE = 5
MAX_CONFLICT_EXAMPLES = 20
_NUM_PERM = 128
# Fixed so that near-duplicate decisions never depend on the split seed.
_MINHASH_SEED = 1
# Candidates are confirmed by exact Jaccard, so a false positive costs one set comparison
# while a false negative keeps a duplicate. The default (0.5, 0.5) bands find only ~30 % of
# pairs at exactly the threshold; these find ~90 % (and ~98 % three points above).
_LSH_WEIGHTS = (0.05, 0.95)


@dataclass(frozen=True)
class _Row:
    text: str
    label: str
    line: int


def curate(
    rows: Rows,
    *,
    test_rows: Rows | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    near_duplicate_threshold: float = 0.9,
    source: str | None = None,
) -> DatasetVersion:
    """Clean ``rows`` into a :class:`~niche.data.DatasetVersion` with train and test splits.

    Steps, each counted in the report: normalise texts (:func:`normalise_text`); drop exact
    duplicates (same text and label; the first stays); drop every copy of a text that carries
    different labels; drop near-duplicates (MinHash LSH over character 5-grams of the
    casefolded text, confirmed by exact Jaccard ≥ ``near_duplicate_threshold``) of an
    earlier kept row. ``test_rows`` (a canonical test split) is cleaned the same way;
    without it a stratified split puts ``round(n * test_size)`` rows of each label in test
    (at least one when the label has two rows or more, never all of them), shuffled with
    ``numpy.random.default_rng(seed)``. Train rows equal or near-equal to a test text are
    removed from train; test rows whose label is absent from train are dropped.

        >>> version = curate(rows, test_size=0.2, seed=0)  # doctest: +SKIP
        >>> version.report.rows_out  # doctest: +SKIP
        {'train': 8000, 'test': 2000}
    """
    if not 0.0 < test_size < 1.0:
        raise ConfigurationError(f"test_size must be between 0 and 1, got {test_size}")
    if not 0.0 < near_duplicate_threshold <= 1.0:
        raise ConfigurationError(
            f"near_duplicate_threshold must be in (0, 1], got {near_duplicate_threshold}"
        )
    if len(rows) == 0:
        raise DataValidationError("no rows to curate", path=rows.source)
    report = CurationReport(
        rows_in=len(rows) + (len(test_rows) if test_rows is not None else 0),
        seed=seed,
        test_size=test_size,
        near_duplicate_threshold=near_duplicate_threshold,
    )
    sketches = _Sketches(near_duplicate_threshold)
    train = _clean(rows, report, sketches)
    if test_rows is not None:
        test = _clean(test_rows, report, sketches)
    else:
        train, test = _stratified_split(train, test_size, seed)
    train, report.leaks_removed = sketches.remove_leaks(train, test)
    train_labels = {row.label for row in train}
    kept_test = [row for row in test if row.label in train_labels]
    report.test_labels_unseen = len(test) - len(kept_test)
    test = kept_test
    if not train:
        raise DataValidationError("no training rows left after curation", path=rows.source)
    splits = {
        "train": _to_rows(train, rows.source),
        "test": _to_rows(test, test_rows.source if test_rows is not None else rows.source),
    }
    report.rows_out = {name: len(split) for name, split in splits.items()}
    report.labels = len(train_labels)
    return DatasetVersion(
        fingerprint=fingerprint_splits(splits),
        source=source if source is not None else rows.source,
        splits=splits,
        report=report,
    )


def _clean(rows: Rows, report: CurationReport, sketches: _Sketches) -> list[_Row]:
    """Normalise, then drop exact, conflicting and near duplicates within ``rows``."""
    by_text: dict[str, list[_Row]] = defaultdict(list)
    for index, (raw, raw_label) in enumerate(zip(rows.texts, rows.labels, strict=True)):
        line = rows.line_of(index)
        text = normalise_text(raw)
        if text != raw:
            report.texts_normalised += 1
        if not text:
            raise DataValidationError(
                "text is empty after normalisation", path=rows.source, line=line, column="text"
            )
        label = _check_label(raw_label, source=rows.source, line=line, column="label")
        by_text[text].append(_Row(text, label, line))
    unique: list[_Row] = []
    for text, copies in by_text.items():
        labels = sorted({row.label for row in copies})
        if len(labels) > 1:
            report.conflicting_duplicates += len(copies)
            if len(report.conflict_examples) < MAX_CONFLICT_EXAMPLES:
                report.conflict_examples.append({"text": text, "labels": labels})
            continue
        report.exact_duplicates += len(copies) - 1
        unique.append(copies[0])
    # by_text keeps first-occurrence order, so "the first copy stays" holds for near-duplicates too.
    kept, same_label, other_label = sketches.near_dedupe(unique)
    report.near_duplicates += same_label
    report.near_duplicate_conflicts += other_label
    return kept


def _stratified_split(
    rows: list[_Row], test_size: float, seed: int
) -> tuple[list[_Row], list[_Row]]:
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        by_label[row.label].append(index)
    in_test: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label]
        n = len(indices)
        n_test = 0 if n < 2 else min(n - 1, max(1, round(n * test_size)))
        order = rng.permutation(n)
        in_test.update(indices[i] for i in order[:n_test])
    train = [row for i, row in enumerate(rows) if i not in in_test]
    test = [row for i, row in enumerate(rows) if i in in_test]
    return train, test


def _to_rows(rows: list[_Row], source: str) -> Rows:
    return Rows(
        texts=tuple(row.text for row in rows),
        labels=tuple(row.label for row in rows),
        source=source,
        lines=tuple(row.line for row in rows),
    )


def _shingles(text: str) -> frozenset[str]:
    folded = text.casefold()
    if len(folded) < SHINGLE_SIZE:
        return frozenset((folded,))
    return frozenset(folded[i : i + SHINGLE_SIZE] for i in range(len(folded) - SHINGLE_SIZE + 1))


class _Sketches:
    """Shingle sets and MinHash sketches of texts, each computed once per curate call."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._memo: dict[str, tuple[frozenset[str], Any]] = {}

    def of(self, texts: list[str]) -> tuple[list[frozenset[str]], list[Any]]:
        from datasketch import MinHash

        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        shingles = [_shingles(text) for text in missing]
        # crc32 is a C call, many times faster than the default per-shingle sha1 in Python;
        # datasketch mixes every input hash with the murmur3 finaliser before permuting it.
        sketches = MinHash.bulk(
            [[s.encode("utf-8") for s in sh] for sh in shingles],
            num_perm=_NUM_PERM,
            seed=_MINHASH_SEED,
            hashfunc=zlib.crc32,
        )
        self._memo.update(zip(missing, zip(shingles, sketches, strict=True), strict=True))
        pairs = [self._memo[text] for text in texts]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def lsh(self) -> Any:
        from datasketch import MinHashLSH

        return MinHashLSH(threshold=self.threshold, num_perm=_NUM_PERM, weights=_LSH_WEIGHTS)

    def near_dedupe(self, rows: list[_Row]) -> tuple[list[_Row], int, int]:
        """Keep rows with no near-duplicate among the earlier kept rows.

        Returns (kept, removed with the same label, removed with another label).
        """
        shingles, sketches = self.of([row.text for row in rows])
        lsh = self.lsh()
        kept: list[_Row] = []
        same_label = other_label = 0
        for i, row in enumerate(rows):
            matched_labels = {
                rows[j].label
                for j in lsh.query(sketches[i])
                if _jaccard(shingles[i], shingles[j]) >= self.threshold
            }
            if not matched_labels:
                lsh.insert(i, sketches[i])
                kept.append(row)
            elif row.label in matched_labels:
                same_label += 1
            else:
                other_label += 1
        return kept, same_label, other_label

    def remove_leaks(self, train: list[_Row], test: list[_Row]) -> tuple[list[_Row], int]:
        """Drop train rows whose text equals or near-duplicates a test text."""
        test_texts = {row.text for row in test}
        test_shingles, test_sketches = self.of([row.text for row in test])
        lsh = self.lsh()
        for j, sketch in enumerate(test_sketches):
            lsh.insert(j, sketch)
        train_shingles, train_sketches = self.of([row.text for row in train])
        kept = [
            row
            for row, shingles, sketch in zip(train, train_shingles, train_sketches, strict=True)
            if row.text not in test_texts
            and not any(
                _jaccard(shingles, test_shingles[j]) >= self.threshold for j in lsh.query(sketch)
            )
        ]
        return kept, len(train) - len(kept)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b)
