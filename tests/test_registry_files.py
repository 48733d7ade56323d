"""Dataset version files: saved once per fingerprint, found again by prefix."""

from __future__ import annotations

import pytest

from niche.data import Rows, curate
from niche.errors import NotFoundError
from niche.registry import LocalStore
from niche.settings import Settings


def _version(extra: str = ""):
    texts = [f"my card has not arrived {i}{extra}" for i in range(5)] + [
        f"someone stole my wallet and card number {i}{extra}" for i in range(5)
    ]
    rows = Rows(texts=tuple(texts), labels=("arrival",) * 5 + ("stolen",) * 5, source="mem")
    return curate(rows, test_size=0.4, seed=0, source="mem")


def test_save_and_load_by_prefix_and_full_fingerprint(niche_home):
    store = LocalStore(Settings())
    version = _version()
    path = store.save_dataset(version)
    assert path == niche_home / "datasets" / version.fingerprint[:16]
    assert store.save_dataset(version) == path  # idempotent
    for ref in (version.fingerprint[:6], version.fingerprint):
        assert store.load_dataset(ref).fingerprint == version.fingerprint
    assert store.dataset_ids() == [version.fingerprint[:16]]


def test_unknown_and_ambiguous_references(tmp_path):
    store = LocalStore(Settings(home=str(tmp_path)))
    with pytest.raises(NotFoundError, match="none saved yet"):
        store.load_dataset("abc")
    for name in ("abc1", "abc2"):
        (tmp_path / "datasets" / name).mkdir(parents=True)
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.load_dataset("abc")
