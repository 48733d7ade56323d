"""Curation's bulk near-duplicate finder decides exactly as datasketch's own objects would, on
real texts, and curates in bounded memory."""

from __future__ import annotations

import csv
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from niche.data import curate, load_file
from niche.data.near_duplicates import _LSH_WEIGHTS, NearDuplicates, shingles

UNICODE = [
    "hi",
    "Straße café ☕ naïve — 日本語のテキスト",
    "ab",
    "ÉCOLE",
    "xxxx",
    "yyyyy",
    "emoji 😀😀😀 end",
    " ".join(f"word{i}" for i in range(40000)),  # one text of ~250k shingles
]


def _banking(datasets_dir: Path, n: int) -> tuple[list[str], list[str]]:
    with (datasets_dir / "banking77" / "train.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1 : n + 1]
    return [r[0] for r in rows], [r[1] for r in rows]


def _variants(texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """The texts, then near-copies of some (same or another label)."""
    extra = [f"{t} please" for t in texts[::3]] + [f"{t}!!" for t in texts[1::4]]
    extra_labels = labels[::3] + ["other"] * len(texts[1::4])
    return texts + extra, labels + extra_labels


def test_signatures_equal_datasketch_minhash(datasets_dir: Path) -> None:
    texts = _banking(datasets_dir, 500)[0] + UNICODE
    ours = NearDuplicates(0.9).signatures(texts)
    sketches = MinHash.bulk(
        [[s.encode("utf-8") for s in shingles(t)] for t in texts],
        num_perm=128,
        seed=1,
        hashfunc=zlib.crc32,
    )
    assert np.array_equal(ours, np.array([m.hashvalues for m in sketches]))


def _reference_dedupe(texts: list[str], labels: list[str], threshold: float) -> tuple:
    """Near-duplicate removal through datasketch's MinHashLSH, one text at a time."""
    sketches = MinHash.bulk(
        [[s.encode("utf-8") for s in shingles(t)] for t in texts],
        num_perm=128,
        seed=1,
        hashfunc=zlib.crc32,
    )
    lsh = MinHashLSH(threshold=threshold, num_perm=128, weights=_LSH_WEIGHTS)
    kept, same, other = [], 0, 0
    for i, text in enumerate(texts):
        matched = set()
        for j in lsh.query(sketches[i]):
            a, b = shingles(text), shingles(texts[j])
            if len(a & b) / len(a | b) >= threshold:
                matched.add(labels[j])
        if not matched:
            lsh.insert(i, sketches[i])
            kept.append(i)
        elif labels[i] in matched:
            same += 1
        else:
            other += 1
    return kept, same, other


@pytest.mark.parametrize("threshold", [0.9, 0.7])
def test_dedupe_decides_as_datasketch_lsh(datasets_dir: Path, threshold: float) -> None:
    texts, labels = _variants(*_banking(datasets_dir, 1500))
    ours = NearDuplicates(threshold).dedupe(texts, labels)
    assert ours == _reference_dedupe(texts, labels, threshold)
    assert ours[1] > 50 and ours[2] > 50  # the variants were found, with either label


def test_leaks_are_the_train_texts_near_a_test_text(datasets_dir: Path) -> None:
    texts, _ = _banking(datasets_dir, 600)
    test = texts[:200]
    train = texts[200:] + [f"{t}." for t in test[:50]] + test[50:60]
    leaked = NearDuplicates(0.9).leaks(train, test)
    expected = [
        i
        for i, t in enumerate(train)
        if any(len(shingles(t) & shingles(u)) / len(shingles(t) | shingles(u)) >= 0.9 for u in test)
    ]
    # LSH may miss a pair right at the threshold, never report one below it.
    assert set(leaked) <= set(expected)
    assert len(leaked) >= 0.9 * len(expected) and set(range(400, 460)) <= set(expected)


def test_curation_memory_stays_bounded(datasets_dir: Path, tmp_path: Path) -> None:
    texts, labels = _banking(datasets_dir, 10000)
    path = tmp_path / "big.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(20000):
            writer.writerow([f"{texts[i % len(texts)]} ref {i // len(texts)}", labels[i % 10000]])
    size = path.stat().st_size
    tracemalloc.start()
    try:
        rows = load_file(path)
        version = curate(rows, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert version.report.rows_in == 20000
    # Keeping every sketch and shingle set alive cost over 100x the file (232 MB here).
    assert peak < 25 * size, (peak, size)
