"""The file store: content-addressed model ids, verified digests, prefix lookup."""

from __future__ import annotations

import pytest

from niche.errors import ChecksumMismatchError, NotFoundError
from niche.registry import LocalStore
from niche.settings import Settings
from niche.specialists import TextSpecialist
from niche.training import TrainedModel

TEXTS = [
    "my card has not arrived yet",
    "when will my new card arrive",
    "still waiting for the card in the post",
    "the card never came",
    "i lost my wallet with my card",
    "my card was stolen yesterday",
    "someone took my card",
    "please block my stolen card",
]
LABELS = ["card_arrival"] * 4 + ["lost_or_stolen_card"] * 4


@pytest.fixture
def trained(encoder) -> TrainedModel:
    spec = TextSpecialist(encoder).fit(TEXTS, LABELS)
    return TrainedModel(spec, {"dataset_fingerprint": "f" * 64, "encoder_id": encoder.id})


def test_save_and_load_a_model(niche_home, encoder, trained):
    store = LocalStore(Settings())
    record = store.save_model(trained)
    assert record.path == niche_home / "models" / record.id
    assert len(record.id) == 16
    assert record.lineage["dataset_fingerprint"] == "f" * 64
    assert set(record.lineage["sha256"]) == {"head.safetensors", "config.json"}
    loaded, again = store.load_model(record.id[:6], encoder)
    assert again.id == record.id
    assert loaded.predict(TEXTS).labels == trained.specialist.predict(TEXTS).labels
    # Same content, same id: saving twice keeps one copy.
    assert store.save_model(trained).id == record.id
    assert store.model_ids() == [record.id]
    assert not [p for p in (niche_home / "models").iterdir() if p.name.startswith(".")]


def test_a_tampered_model_is_refused_naming_the_file(encoder, trained):
    store = LocalStore(Settings())
    record = store.save_model(trained)
    head = record.path / "head.safetensors"
    data = bytearray(head.read_bytes())
    data[-1] ^= 0xFF
    head.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=r"head\.safetensors: sha256 mismatch"):
        store.load_model(record.id, encoder)


def test_unknown_and_ambiguous_references(tmp_path):
    store = LocalStore(Settings(home=str(tmp_path)))
    with pytest.raises(NotFoundError, match="none saved yet"):
        store.model_record("abc")
    for name in ("abc1", "abc2"):
        (tmp_path / "models" / name).mkdir(parents=True)
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.model_record("abc")
