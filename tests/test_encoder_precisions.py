"""A text specialist on the static int8 encoder answers a text the same alone and in a batch,
and a specialist trained on another precision still loads after the default changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from niche.encoders import CachedEncoder, OnnxEncoder
from niche.settings import Settings
from niche.specialists import FitContext, LoadContext, get_kind

pytestmark = pytest.mark.slow

DOMAIN = "banking"


@pytest.fixture(scope="module")
def clinc_domain(datasets_dir: Path) -> tuple[list[str], list[str]]:
    """CLINC150's banking domain: 20 training rows per intent (300 rows, 15 intents)."""
    root = datasets_dir / "clinc150"
    intents = set(json.loads((root / "domains.json").read_text())[DOMAIN])
    data = json.loads((root / "data_full.json").read_text())
    counts: dict[str, int] = {}
    texts, labels = [], []
    for text, label in data["train"]:
        if label in intents and counts.get(label, 0) < 20:
            counts[label] = counts.get(label, 0) + 1
            texts.append(text)
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def encoders(encoder_cache_dir: Path) -> dict[str, OnnxEncoder]:
    return {
        p: OnnxEncoder(precision=p, threads=2, cache_dir=encoder_cache_dir).load()
        for p in ("int8-static", "int8")
    }


def _confidences(encoder: OnnxEncoder, domain: tuple[list[str], list[str]]) -> tuple[float, float]:
    texts, labels = domain
    specialist = get_kind("text").fit(texts, labels, FitContext(encoder=encoder, seed=0))
    text = "how much money is in my checking account"
    mates = [" ".join(texts[i : i + 5]) for i in range(63)]
    alone = specialist.predict([text]).confidences[0]
    in_batch = specialist.predict([*mates[:30], text, *mates[30:]]).confidences[30]
    return float(alone), float(in_batch)


def test_a_confidence_is_the_same_alone_and_in_a_batch_of_64(encoders, clinc_domain) -> None:
    alone, in_batch = _confidences(encoders["int8-static"], clinc_domain)

    assert abs(alone - in_batch) <= 1e-6
    # Dynamic int8 (the former default) fails the same check: its scales follow the batch.
    dynamic_alone, dynamic_in_batch = _confidences(encoders["int8"], clinc_domain)
    assert abs(dynamic_alone - dynamic_in_batch) > 1e-6


def test_a_model_trained_on_dynamic_int8_loads_on_its_own_encoder(
    encoders, clinc_domain, encoder_cache_dir: Path, tmp_path: Path
) -> None:
    texts, labels = clinc_domain
    kind = get_kind("text")
    old = kind.fit(texts, labels, FitContext(encoder=encoders["int8"], seed=0))
    directory = old.save(tmp_path / "old")
    context = LoadContext(Settings(cache_dir=str(encoder_cache_dir)), embedding_cache=False)

    loaded = kind.load(directory, context)

    assert context.encoder.id == "all-MiniLM-L6-v2/onnx-int8-static"
    assert loaded.encoder.id == "all-MiniLM-L6-v2/onnx-int8"
    assert context.encoder_for("all-MiniLM-L6-v2/onnx-int8") is loaded.encoder
    assert context.encoder_for("all-MiniLM-L6-v2/onnx-int8-static") is context.encoder
    np.testing.assert_allclose(
        loaded.predict(texts[:8]).probabilities, old.predict(texts[:8]).probabilities, atol=1e-6
    )


def test_encoder_for_keeps_the_embedding_cache_and_unknown_ids_get_the_shared_one(
    encoder_cache_dir: Path,
) -> None:
    context = LoadContext(Settings(cache_dir=str(encoder_cache_dir)))

    other = context.encoder_for("all-MiniLM-L6-v2/onnx-fp32")

    assert isinstance(other, CachedEncoder)
    assert other.id == "all-MiniLM-L6-v2/onnx-fp32"
    assert context.encoder_for("all-MiniLM-L6-v2/onnx-fp32") is other
    assert context.encoder_for("some-other-model/v1") is context.encoder
