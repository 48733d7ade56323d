"""Near-duplicate detection for curation: MinHash LSH over character 5-grams, in bulk.

The sketches are datasketch's MinHash (scheme ``affine32``: each shingle hashed with crc32 of
its UTF-8 bytes, mixed with the murmur3 finaliser, then permuted by datasketch's own
``(a, b)`` for the seed), and the bands are those :class:`datasketch.MinHashLSH` picks for the
threshold and weights. They are computed over a chunk of texts at a time with numpy, because
datasketch's one-object-per-text API spent ~200 µs of Python per text and kept every sketch
and shingle set alive (2 GB for 200k rows); ``tests/test_data_near_duplicates.py`` checks the
signatures and the decisions equal datasketch's. Only 9 band keys (64-bit) per text are kept;
shingle sets are built again only for candidate pairs, which exact Jaccard confirms.

    >>> finder = NearDuplicates(0.9)
    >>> finder.dedupe(["my card has not arrived", "my card has not arrived!"], ["a", "a"])
    ([0], 1, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = ["SHINGLE_SIZE", "NearDuplicates", "shingles"]

SHINGLE_SIZE = 5
_NUM_PERM = 128
# Fixed so that near-duplicate decisions never depend on the split seed.
_MINHASH_SEED = 1
# Candidates are confirmed by exact Jaccard, so a false positive costs one set comparison
# while a false negative keeps a duplicate. The default (0.5, 0.5) bands find only ~30 % of
# pairs at exactly the threshold; these find ~90 % (and ~98 % three points above).
_LSH_WEIGHTS = (0.05, 0.95)
# Texts sketched per numpy pass (their shingles are then permuted in blocks).
_CHUNK_TEXTS = 256
# Shingles permuted per numpy pass: a (permutations x shingles) matrix of 8 MB at most.
_SHINGLE_BLOCK = 16384
# Shingle sets kept for Jaccard checks; candidates cluster, so a small cache hits often.
_SHINGLE_CACHE = 2048
_FNV_PRIME = np.uint64(0x100000001B3)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)


def shingles(text: str) -> set[str]:
    """The character 5-grams of the casefolded text (the whole text when shorter).

    >>> sorted(shingles("Hello!"))
    ['ello!', 'hello']
    """
    folded = text.casefold()
    if len(folded) < SHINGLE_SIZE:
        return {folded}
    return {folded[i : i + SHINGLE_SIZE] for i in range(len(folded) - SHINGLE_SIZE + 1)}


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1)
    return table.astype(np.uint32)


_CRC_TABLE = _crc_table()


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    mixed: np.ndarray = h ^ (h >> np.uint32(16))
    return mixed


class NearDuplicates:
    """Band keys of texts (computed once per text) and the two curation decisions.

    ``threshold`` is the Jaccard similarity of 5-gram sets at which two texts are
    near-duplicates.
    """

    def __init__(self, threshold: float) -> None:
        from datasketch import MinHash, MinHashLSH

        self.threshold = threshold
        lsh = MinHashLSH(threshold=threshold, num_perm=_NUM_PERM, weights=_LSH_WEIGHTS)
        self._bands: list[tuple[int, int]] = list(lsh.hashranges)
        self._a, self._b = (
            np.asarray(p, dtype=np.uint32)
            for p in MinHash(num_perm=_NUM_PERM, seed=_MINHASH_SEED).permutations
        )
        self._index: dict[str, int] = {}
        self._keys = np.zeros((0, len(self._bands)), dtype=np.uint64)
        self._shingles = lru_cache(maxsize=_SHINGLE_CACHE)(shingles)

    # -- sketches ------------------------------------------------------------------------

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """MinHash signatures (uint32, one row per text), equal to datasketch's ``hashvalues``."""
        return np.concatenate(
            [
                self._signatures(texts[i : i + _CHUNK_TEXTS])
                for i in range(0, len(texts), _CHUNK_TEXTS)
            ]
            or [np.zeros((0, _NUM_PERM), dtype=np.uint32)]
        )

    def _signatures(self, texts: Sequence[str]) -> np.ndarray:
        encoded = [text.casefold().encode("utf-8") for text in texts]
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        # Byte offset of every code point (UTF-8 continuation bytes are 10xxxxxx), then the end.
        starts_of_chars = np.append(np.flatnonzero((data & 0xC0) != 0x80), len(data))
        chars = np.fromiter(
            (len(e.decode("utf-8")) for e in encoded), dtype=np.int64, count=len(encoded)
        )
        first_char = np.concatenate(([0], np.cumsum(chars)[:-1]))
        windows = np.maximum(chars - SHINGLE_SIZE + 1, 1)
        text_of = np.repeat(np.arange(len(texts)), windows)
        window_start = np.concatenate(([0], np.cumsum(windows)[:-1]))
        offset = np.arange(int(windows.sum())) - np.repeat(window_start, windows)
        char_from = first_char[text_of] + offset
        char_to = char_from + np.minimum(chars, SHINGLE_SIZE)[text_of]
        begin, end = starts_of_chars[char_from], starts_of_chars[char_to]
        # zlib.crc32 of each shingle's bytes, table-driven over all shingles at once.
        crc = np.full(len(begin), 0xFFFFFFFF, dtype=np.uint32)
        length = end - begin
        for step in range(int(length.max(initial=0))):
            live = length > step
            byte = data[np.where(live, begin + step, 0)].astype(np.uint32)
            updated = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> np.uint32(8))
            crc = np.where(live, updated, crc)
        hashed = _fmix32(crc ^ np.uint32(0xFFFFFFFF))
        # Permutations by shingles, so that each text's minimum is over a contiguous run; in
        # blocks of shingles, so that one very long text cannot take the memory.
        out = np.full((len(self._a), len(texts)), np.iinfo(np.uint32).max, dtype=np.uint32)
        for first in range(0, len(hashed), _SHINGLE_BLOCK):
            block = slice(first, first + _SHINGLE_BLOCK)
            owners = text_of[block]
            starts = np.flatnonzero(np.diff(owners, prepend=-1))
            permuted = self._a[:, None] * hashed[None, block] + self._b[:, None]
            ids = owners[starts]
            out[:, ids] = np.minimum(out[:, ids], np.minimum.reduceat(permuted, starts, axis=1))
        return out.T

    def _band_keys(self, signatures: np.ndarray) -> np.ndarray:
        keys = np.empty((len(signatures), len(self._bands)), dtype=np.uint64)
        for band, (start, stop) in enumerate(self._bands):
            # FNV-1a over the band's values: equal bands give equal keys; a rare collision
            # only adds a candidate, which exact Jaccard then rejects.
            key = np.full(len(signatures), _FNV_OFFSET, dtype=np.uint64)
            for column in range(start, stop):
                key = (key ^ signatures[:, column].astype(np.uint64)) * _FNV_PRIME
            keys[:, band] = key
        return keys

    def keys(self, texts: Sequence[str]) -> np.ndarray:
        """Band keys of ``texts`` (one row per text), each text sketched once per instance."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._index))
        if missing:
            fresh = [
                self._band_keys(self._signatures(missing[i : i + _CHUNK_TEXTS]))
                for i in range(0, len(missing), _CHUNK_TEXTS)
            ]
            base = len(self._keys)
            self._keys = np.concatenate([self._keys, *fresh])
            self._index.update((text, base + i) for i, text in enumerate(missing))
        return self._keys[[self._index[t] for t in texts]]

    def _similar(self, a: str, b: str) -> bool:
        x, y = self._shingles(a), self._shingles(b)
        common = len(x & y)
        return common / (len(x) + len(y) - common) >= self.threshold

    # -- decisions -----------------------------------------------------------------------

    def dedupe(self, texts: Sequence[str], labels: Sequence[str]) -> tuple[list[int], int, int]:
        """Indices of texts with no near-duplicate among the earlier kept ones, in order.

        Returns (kept indices, removed with the same label, removed with another label).
        """
        keys = self.keys(texts)
        groups = _shared_groups(keys)
        kept = np.ones(len(texts), dtype=bool)
        tables: list[dict[int, list[int]]] = [{} for _ in self._bands]
        same_label = other_label = 0
        for i in np.flatnonzero((groups >= 0).any(axis=1)).tolist():
            row = groups[i].tolist()
            verdict = self._match(i, row, tables, texts, labels)
            if verdict is None:
                for band, group in enumerate(row):
                    if group >= 0:
                        tables[band].setdefault(group, []).append(i)
                continue
            kept[i] = False
            if verdict:
                same_label += 1
            else:
                other_label += 1
        return np.flatnonzero(kept).tolist(), same_label, other_label

    def _match(
        self,
        i: int,
        row: list[int],
        tables: list[dict[int, list[int]]],
        texts: Sequence[str],
        labels: Sequence[str],
    ) -> bool | None:
        """None: no earlier kept near-duplicate; True: one has the same label; False: only
        others have another label."""
        seen: set[int] = set()
        found = False
        for band, group in enumerate(row):
            for j in tables[band].get(group, ()) if group >= 0 else ():
                if j in seen:
                    continue
                seen.add(j)
                if self._similar(texts[i], texts[j]):
                    if labels[j] == labels[i]:
                        return True
                    found = True
        return False if found else None

    def leaks(self, train: Sequence[str], test: Sequence[str]) -> list[int]:
        """Indices of ``train`` texts equal or near-equal to a ``test`` text."""
        test_texts = set(test)
        train_keys, test_keys = self.keys(train), self.keys(test)
        tables: list[dict[int, list[int]]] = []
        hits = np.zeros(len(train), dtype=bool)
        for band in range(len(self._bands)):
            shared = np.intersect1d(train_keys[:, band], test_keys[:, band])
            table: dict[int, list[int]] = {}
            for j in np.flatnonzero(np.isin(test_keys[:, band], shared)).tolist():
                table.setdefault(int(test_keys[j, band]), []).append(j)
            tables.append(table)
            hits |= np.isin(train_keys[:, band], shared)
        return [
            i
            for i, text in enumerate(train)
            if text in test_texts
            or (
                hits[i]
                and any(
                    self._similar(text, test[j])
                    for band, key in enumerate(train_keys[i].tolist())
                    for j in tables[band].get(key, ())
                )
            )
        ]


def _shared_groups(keys: np.ndarray) -> np.ndarray:
    """Per band, a group number for each key that occurs more than once, else -1."""
    groups = np.full(keys.shape, -1, dtype=np.int64)
    for band in range(keys.shape[1]):
        _, inverse, counts = np.unique(keys[:, band], return_inverse=True, return_counts=True)
        groups[:, band] = np.where(counts[inverse] > 1, inverse, -1)
    return groups
