"""A second training on the same data reuses the fitted head (issue 12): keyed by the dataset
version, split, fraction, seed, kind, options, encoder and metric; checksum-verified, a
corrupt entry refitted; ``NICHE_HEAD_CACHE=false`` turns it off.

The real part: SMS spam rows curated into a real dataset version, the real encoder (counted
by a wrapper that keeps its id), real files under a real cache directory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from niche.settings import Settings
from niche.specialists import FitContext
from niche.training import train
from niche.training.head_cache import ENTRY_FILE
from tests.gateway_support import read_sms


class Counting:
    """The real encoder, counting the texts it is asked to embed (``id`` can be changed)."""

    def __init__(self, encoder: Any, id: str | None = None) -> None:
        self.encoder = encoder
        self.id = id or encoder.id
        self.dim = encoder.dim
        self.texts = 0

    def encode(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        self.texts += len(texts)
        return self.encoder.encode(texts, **kwargs)


@pytest.fixture(scope="module")
def version(datasets_dir: Path):
    from niche.data import Rows, curate

    texts, labels = read_sms(datasets_dir)
    return curate(Rows(texts[:240], labels[:240], "sms_spam"), test_size=0.25, seed=0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(cache_dir=str(tmp_path / "cache"))


def entries(settings: Settings) -> list[Path]:
    root = settings.cache_dir / "heads"
    return sorted(root.iterdir()) if root.exists() else []


def saved_bytes(trained: Any, directory: Path) -> dict[str, bytes]:
    path = trained.specialist.save(directory)
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_the_same_data_twice_reuses_the_head_byte_for_byte(
    version, encoder, settings: Settings, tmp_path: Path
) -> None:
    counting = Counting(encoder)
    first = train(version, "text", FitContext(settings, encoder=counting))
    fitted_texts = counting.texts
    second = train(version, "text", FitContext(settings, encoder=counting))
    assert (first.lineage["head_cache"], second.lineage["head_cache"]) == ("miss", "hit")
    assert fitted_texts == len(version.splits["train"]) and counting.texts == fitted_texts
    # Reusing is fast, but the version still costs (in TCO) the fit that made its head.
    assert second.lineage["reuse_seconds"] < first.lineage["fit_seconds"] / 3
    assert first.lineage["fit_seconds"] / 2 < second.lineage["fit_seconds"]
    assert second.lineage["fit_seconds"] <= first.lineage["fit_seconds"]
    assert "reuse_seconds" not in first.lineage
    assert saved_bytes(first, tmp_path / "a") == saved_bytes(second, tmp_path / "b")
    for name in ("head", "params", "temperature", "encoder_id", "dataset_fingerprint"):
        assert second.lineage[name] == first.lineage[name], name
    (entry,) = entries(settings)
    manifest = json.loads((entry / ENTRY_FILE).read_text())
    assert manifest["key"] == entry.name
    assert manifest["parts"]["dataset_fingerprint"] == version.fingerprint
    assert sorted(manifest["files"]) == ["model/config.json", "model/head.safetensors"]


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"fraction": 0.5},
        {"split": "test"},
        {"options": {"c": 4.0}},
        {"metric": "macro_f1"},
        {"encoder_id": "all-MiniLM-L6-v2/another-build"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_change_of_any_key_part_fits_anew(version, encoder, settings: Settings, change) -> None:
    base: dict[str, Any] = {"seed": 0, "fraction": 1.0, "split": "train", "options": {}}
    train(version, "text", FitContext(settings, encoder=encoder))
    parts = {**base, "metric": "accuracy", **change}
    counting = Counting(encoder, id=change.get("encoder_id"))
    context = FitContext(
        settings,
        encoder=counting,
        seed=parts["seed"],
        options=parts["options"],
        metric=parts["metric"],
    )
    again = train(version, "text", context, fraction=parts["fraction"], split=parts["split"])
    assert again.lineage["head_cache"] == "miss"
    assert counting.texts > 0
    assert len(entries(settings)) == 2


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda entry: (entry / "model" / "head.safetensors").write_bytes(b"\0" * 64), "SHA-256"),
        (lambda entry: (entry / ENTRY_FILE).write_text("{not json"), "Expecting property name"),
        (lambda entry: (entry / "model" / "config.json").unlink(), "No such file"),
        (
            lambda entry: (entry / ENTRY_FILE).write_text(
                (entry / ENTRY_FILE).read_text().replace('"seed": 0', '"seed": 9')
            ),
            "fails its checksum",
        ),
    ],
    ids=["weights", "manifest", "missing-file", "edited-manifest"],
)
def test_a_corrupt_entry_is_refitted_with_a_warning_and_repaired(
    version, encoder, settings: Settings, tmp_path: Path, caplog, damage, why
) -> None:
    first = train(version, "text", FitContext(settings, encoder=encoder))
    (entry,) = entries(settings)
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="niche.training.head_cache"):
        refitted = train(version, "text", FitContext(settings, encoder=encoder))
    assert refitted.lineage["head_cache"] == "miss"
    (warning,) = [r for r in caplog.records if r.name == "niche.training.head_cache"]
    assert str(entry) in warning.getMessage() and why in warning.getMessage()
    assert saved_bytes(refitted, tmp_path / "a") == saved_bytes(first, tmp_path / "b")
    assert train(version, "text", FitContext(settings, encoder=encoder)).lineage["head_cache"] == (
        "hit"
    )


def test_niche_head_cache_off_writes_nothing(version, encoder, tmp_path: Path) -> None:
    settings = Settings({"NICHE_HEAD_CACHE": "false"}, cache_dir=str(tmp_path / "cache"))
    for _ in range(2):
        trained = train(version, "text", FitContext(settings, encoder=encoder))
        assert trained.lineage["head_cache"] == "off"
    assert not (settings.cache_dir / "heads").exists()


def test_a_kind_without_a_fit_identity_is_not_cached(version, encoder, settings) -> None:
    trained = train(version, "zero-shot", FitContext(settings, encoder=encoder))
    assert "head_cache" not in trained.lineage
    assert entries(settings) == []


def test_an_unwritable_cache_is_skipped_with_a_warning(
    version, encoder, tmp_path: Path, caplog
) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    settings = Settings(cache_dir=str(blocker))
    with caplog.at_level(logging.WARNING, logger="niche.training.head_cache"):
        trained = train(version, "text", FitContext(settings, encoder=encoder))
    assert trained.lineage["head_cache"] == "miss"
    assert any("cannot write the head cache entry" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_second_quickstart_reuses_the_head(
    cli_env, four_intents: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from niche.workflows import DataSpec, quickstart

    # A cache of this test's own, so the first quickstart fits whatever ran before.
    monkeypatch.setenv("NICHE_CACHE_DIR", str(tmp_path / "cache"))
    from tests.test_cli_newcomer import RecordingProgress

    steps = [RecordingProgress(), RecordingProgress()]
    first = quickstart(DataSpec(data=four_intents), task="intents", progress=steps[0])
    second = quickstart(DataSpec(data=four_intents), task="intents", progress=steps[1])
    said = [[s for s in p.steps if "head" in s] for p in steps]
    assert said[0] == ["choosing the head by cross-validation", "fitting the head"]
    assert len(said[1]) == 1 and said[1][0].startswith("reusing the head fitted before (cache ")
    assert second.model.artifact_digest == first.model.artifact_digest
    assert second.model.version == first.model.version == 1
    assert first.model.lineage["head_cache"] == "miss"
    assert len(entries(Settings())) == 1
    assert second.timings_s["train"] < first.timings_s["train"]
