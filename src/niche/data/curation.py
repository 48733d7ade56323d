"""Curation: normalise, de-duplicate, split and remove train↔test leaks.

>>> from niche.data import curate, load_file
>>> version = curate(load_file("tickets.csv"), seed=0)  # doctest: +SKIP
>>> version.report.exact_duplicates, version.report.rows_out  # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from niche.data.near_duplicates import SHINGLE_SIZE, NearDuplicates
from niche.data.normalise import normalise_text
from niche.data.rows import Rows, _check_label
from niche.data.version import CurationReport, DatasetVersion, fingerprint_splits
from niche.errors import ConfigurationError, DataValidationError

__all__ = ["MAX_CONFLICT_EXAMPLES", "MIN_LABELS", "SHINGLE_SIZE", "check_usable", "curate"]

MAX_CONFLICT_EXAMPLES = 20
MIN_LABELS = 2
"""The fewest train labels a dataset version needs to be registered (a task of one label
has nothing to decide)."""


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
    sketches = NearDuplicates(near_duplicate_threshold)
    train = _clean(rows, report, sketches)
    if test_rows is not None:
        test = _clean(test_rows, report, sketches)
    else:
        train, test = _stratified_split(train, test_size, seed)
    leaked = set(sketches.leaks([row.text for row in train], [row.text for row in test]))
    report.leaks_removed = len(leaked)
    train = [row for i, row in enumerate(train) if i not in leaked]
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


def check_usable(version: DatasetVersion) -> None:
    """Refuse a version no specialist can be trained and gated on, before anything is saved.

    Raises :class:`~niche.errors.DataValidationError` naming the source when the train split
    has fewer than :data:`MIN_LABELS` labels or the test split has no rows.

        >>> check_usable(curate(load_file("one_label.csv")))  # doctest: +SKIP
        DataValidationError: one_label.csv: every row has the label 'a'; a task needs ...
    """
    labels = version.label_set
    if len(labels) < MIN_LABELS:
        shown = repr(labels[0]) if labels else "(none)"
        raise DataValidationError(
            f"every row left after curation has the label {shown}; a task needs at least "
            f"{MIN_LABELS} labels (check --label-col)",
            path=version.source,
            column="label",
        )
    if not version.splits["test"]:
        raise DataValidationError(
            "no test rows left after curation (a label needs 2 rows or more to give one to "
            "test, and test rows whose label is not in train are dropped); "
            "a dataset version needs test rows to be evaluated",
            path=version.source,
        )


def _clean(rows: Rows, report: CurationReport, sketches: NearDuplicates) -> list[_Row]:
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
    kept, same_label, other_label = sketches.dedupe(
        [row.text for row in unique], [row.label for row in unique]
    )
    report.near_duplicates += same_label
    report.near_duplicate_conflicts += other_label
    return [unique[i] for i in kept]


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
