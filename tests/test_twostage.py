"""The text-two-stage kind: a static first tier before MiniLM, on real BANKING77 rows.

The static model is distilled once per test run into the run's encoder cache (~15-30 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from niche.encoders.static import EMBEDDINGS_FILE, StaticEncoder, ensure_static
from niche.errors import ArtifactError, ChecksumMismatchError, ValidationError
from niche.settings import Settings
from niche.specialists import FitContext, LoadContext, get_kind
from niche.specialists.tiers import choose_threshold
from niche.specialists.twostage import TwoStageSpecialist
from niche.testing import Rule, check_predictor
from tests.test_specialists import read_banking

KIND = "text-two-stage"


@pytest.fixture(scope="session")
def static_cache(encoder_cache_dir: Path) -> Path:
    """The run's encoder cache, holding the distilled static model (distilled once)."""
    ensure_static(encoder_cache_dir)
    return encoder_cache_dir


@pytest.fixture(scope="module")
def context(static_cache: Path) -> LoadContext:
    """The uncached serving encoder and the static model's cache, as the gateway loads them."""
    from niche.encoders.defaults import default_encoder

    settings = Settings(cache_dir=str(static_cache))
    return LoadContext(
        settings, encoder=default_encoder(settings, cache=False), embedding_cache=False
    )


@pytest.fixture(scope="module")
def rows(datasets_dir: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    train_texts, train_labels = read_banking(datasets_dir, "train.csv", 60)
    test_texts, test_labels = read_banking(datasets_dir, "test.csv", 10)
    return train_texts, train_labels, test_texts, test_labels


def fit_context(context: LoadContext, **options: object) -> FitContext:
    return FitContext(context.settings, encoder=context.encoder, seed=0, options=options)


@pytest.fixture(scope="module")
def fitted(context: LoadContext, rows, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-stage specialist with its threshold chosen on validation (48 rows), saved."""
    train_texts, train_labels, _, _ = rows
    spec = get_kind(KIND).fit(
        train_texts, train_labels, fit_context(context, min_validation_rows=40)
    )
    return spec.save(tmp_path_factory.mktemp("two-stage") / "model")


@pytest.mark.slow
def test_the_two_stage_kind_passes_check_predictor(
    context: LoadContext, fitted: Path, rows
) -> None:
    _, _, test_texts, _ = rows
    passed = check_predictor(
        lambda: get_kind(KIND).load(fitted, context),
        test_texts[::2],
        context=context,
        # The MiniLM tier is int8: a text alone moves by up to ~0.015 (see check_predictor);
        # the static tier, and so each text's route, does not depend on the batch.
        batch_atol=0.05,
    )
    assert passed == tuple(Rule)


def tree(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


@pytest.mark.slow
def test_save_and_load_give_identical_predictions_and_bytes(
    context: LoadContext, rows, tmp_path: Path
) -> None:
    train_texts, train_labels, test_texts, _ = rows
    spec = get_kind(KIND).fit(train_texts, train_labels, fit_context(context, threshold=0.8))
    before = spec.predict(test_texts)
    loaded = get_kind(KIND).load(spec.save(tmp_path / "model"), context)
    after = loaded.predict(test_texts)
    assert after.labels == before.labels
    assert np.array_equal(after.probabilities, before.probabilities)
    assert after.label_set == sorted(set(train_labels))
    assert after.usage is not None and after.usage.compute_s > 0
    # The artifact carries the static model it was fitted with, byte for byte.
    cached = ensure_static(Path(context.settings.cache_dir))
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    files = tree(tmp_path / "model")
    assert sorted(files) == [
        "config.json",
        "heads.safetensors",
        "static-tokenizer.json",
        "static.safetensors",
    ]
    assert files["static.safetensors"] == tree(cached)[EMBEDDINGS_FILE]
    assert files["static-tokenizer.json"] == tree(cached)["tokenizer.json"]
    assert config["static_model"] == {
        "id": "all-MiniLM-L6-v2/model2vec-256",
        "sha256": StaticEncoder(cache_dir=context.settings.cache_dir).fingerprint,
        "files": {
            name: {"sha256": files[name], "bytes": (tmp_path / "model" / name).stat().st_size}
            for name in ("static.safetensors", "static-tokenizer.json")
        },
    }
    # Saving the loaded one again gives the same bytes (model ids are digests of them).
    assert tree(loaded.save(tmp_path / "again")) == files


LOAD_ALONE = """
import json, sys
from pathlib import Path
from niche.settings import Settings
from niche.specialists import LoadContext, get_kind

cache, model, texts = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
context = LoadContext(Settings(cache_dir=cache), embedding_cache=False)
got = get_kind("text-two-stage").load(model, context).predict(texts)
heavy = sorted(m for m in ("torch", "transformers", "model2vec") if m in sys.modules)
print(json.dumps({"labels": got.labels, "probabilities": got.probabilities.tolist(), "heavy": heavy}))
"""


@pytest.mark.slow
def test_a_specialist_loads_in_a_fresh_cache_without_torch_or_a_distillation(
    context: LoadContext, fitted: Path, static_cache: Path, rows, tmp_path: Path
) -> None:
    """Another machine: a cache holding only the MiniLM export, no static model, and a
    process that never imports torch (checked in a subprocess's sys.modules)."""
    _, _, test_texts, _ = rows
    cache = tmp_path / "cache"
    export = static_cache / "encoders" / context.encoder.id.replace("/", "--")
    assert export.is_dir(), sorted(p.name for p in (static_cache / "encoders").iterdir())
    shutil.copytree(export, cache / "encoders" / export.name)
    done = subprocess.run(
        [sys.executable, "-c", LOAD_ALONE, str(cache), str(fitted), json.dumps(test_texts)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["heavy"] == []
    assert sorted(p.name for p in (cache / "encoders").iterdir()) == [export.name]
    expected = get_kind(KIND).load(fitted, context).predict(test_texts)
    assert got["labels"] == expected.labels
    assert np.allclose(got["probabilities"], expected.probabilities, atol=1e-6)


def copy_of_cache(static_cache: Path, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(static_cache / "encoders", cache / "encoders")
    return cache


def flip_a_byte(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    data[-7] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.slow
def test_a_corrupted_static_model_in_the_artifact_is_refused(
    context: LoadContext, fitted: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(fitted, model)
    flip_a_byte(model / "static.safetensors")
    with pytest.raises(ChecksumMismatchError, match=r"static\.safetensors.*sha256 mismatch"):
        get_kind(KIND).load(model, context)
    # A consistent config.json of edited hashes does not hide it: the fingerprint differs.
    config = json.loads((model / "config.json").read_text())
    data = (model / "static.safetensors").read_bytes()
    config["static_model"]["files"]["static.safetensors"]["sha256"] = hashlib.sha256(
        data
    ).hexdigest()
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="is not that of its files"):
        get_kind(KIND).load(model, context)
    shutil.rmtree(model)
    shutil.copytree(fitted, model)
    (model / "static-tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match=r"static-tokenizer\.json: cannot be read"):
        get_kind(KIND).load(model, context)


@pytest.mark.slow
def test_a_specialist_keeps_its_static_model_whatever_the_cache_holds(
    context: LoadContext, fitted: Path, static_cache: Path, rows, tmp_path: Path
) -> None:
    """A cache whose static model was distilled again (other bytes, a consistent manifest)
    changes nothing for a saved specialist; fitting with a corrupt one is refused."""
    _, _, test_texts, _ = rows
    cache = copy_of_cache(static_cache, tmp_path)
    (embeddings,) = cache.glob(f"encoders/*model2vec*/{EMBEDDINGS_FILE}")
    manifest_path = embeddings.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    data = flip_a_byte(embeddings)
    manifest["files"][EMBEDDINGS_FILE]["sha256"] = hashlib.sha256(data).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    other = LoadContext(Settings(cache_dir=str(cache)), encoder=context.encoder)
    expected = get_kind(KIND).load(fitted, context).predict(test_texts)
    got = get_kind(KIND).load(fitted, other).predict(test_texts)
    assert np.array_equal(got.probabilities, expected.probabilities)
    assert (
        StaticEncoder(cache_dir=cache).fingerprint
        != get_kind(KIND).load(fitted, other).static_fingerprint_
    )

    flip_a_byte(embeddings)  # back to the distilled bytes, which the manifest no longer lists
    with pytest.raises(ChecksumMismatchError, match=r"embeddings\.safetensors.*sha256 mismatch"):
        get_kind(KIND).fit(["a", "b", "c"], ["x", "y", "x"], fit_context(other))


@pytest.mark.slow
def test_the_chosen_threshold_keeps_within_half_a_point_of_minilm(
    context: LoadContext, fitted: Path
) -> None:
    spec = get_kind(KIND).load(fitted, context)
    lineage = get_kind(KIND).lineage(spec)
    validation = lineage["validation"]
    assert validation["source"] == "validation"
    assert validation["rows"] == 48  # a fifth of 60 rows of each of 4 labels
    assert lineage["threshold"] == validation["threshold"] == spec.threshold_
    assert validation["combined_accuracy"] >= validation["minilm_accuracy"] - 0.005
    assert 0 < validation["coverage"] <= 1
    assert lineage["static_model"]["id"] == "all-MiniLM-L6-v2/model2vec-256"


@pytest.mark.slow
def test_a_slice_too_small_to_weigh_half_a_point_keeps_the_static_tier_off(
    context: LoadContext, rows
) -> None:
    """48 validation rows: one row is 2 points, so "loses at most 0.5 points" cannot be
    told; by default (200 rows) MiniLM answers every text."""
    train_texts, train_labels, _, _ = rows
    spec = get_kind(KIND).fit(train_texts, train_labels, fit_context(context))
    validation = get_kind(KIND).lineage(spec)["validation"]
    assert (spec.threshold_, validation["source"], validation["rows"]) == (1.0, "validation", 48)
    assert "fewer than min_validation_rows=200" in validation["reason"]


def test_the_threshold_is_the_lowest_within_the_allowed_loss() -> None:
    # Six rows of two labels; the static tier's confidences rise with the row, and it is wrong
    # on row 1 only; MiniLM is right on every row.
    confidence = np.array([0.55, 0.6, 0.7, 0.8, 0.9, 0.95])
    static = np.stack([confidence, 1 - confidence], axis=1)
    static[1] = static[1, ::-1]
    targets = np.zeros(6, dtype=np.int64)
    minilm = np.tile([0.9, 0.1], (6, 1))
    # Any threshold below 0.6 routes row 1 (0.6 confident in the wrong label): -1/6 accuracy.
    strict = choose_threshold(static, minilm, targets, max_loss=0.005)
    assert strict["threshold"] == 0.6
    assert strict["coverage"] == pytest.approx(4 / 6)
    assert strict["combined_accuracy"] == strict["minilm_accuracy"] == 1.0
    lenient = choose_threshold(static, minilm, targets, max_loss=0.2)
    assert lenient["threshold"] == 0.0 and lenient["coverage"] == 1.0
    # A static tier that is wrong on its most confident row gets nothing to answer.
    static[5] = static[5, ::-1]
    assert choose_threshold(static, minilm, targets)["threshold"] == 1.0


@pytest.mark.slow
def test_threshold_one_is_the_text_kind_and_zero_is_the_static_tier(
    context: LoadContext, rows
) -> None:
    train_texts, train_labels, test_texts, _ = rows
    text = get_kind("text").fit(train_texts, train_labels, fit_context(context))
    all_minilm = get_kind(KIND).fit(train_texts, train_labels, fit_context(context, threshold=1.0))
    assert not all_minilm.route(test_texts)[1].any()
    expected = text.predict(test_texts)
    got = all_minilm.predict(test_texts)
    assert got.labels == expected.labels
    assert np.array_equal(got.probabilities, expected.probabilities)

    all_static = get_kind(KIND).fit(train_texts, train_labels, fit_context(context, threshold=0.0))
    assert isinstance(all_static, TwoStageSpecialist)
    assert all_static.route(test_texts)[1].all()
    static_only = all_static.static.predict(test_texts)
    assert all_static.predict(test_texts).labels == static_only.labels
    lineage = get_kind(KIND).lineage(all_static)
    assert lineage["validation"] == {"threshold": 0.0, "source": "option"}


def test_a_threshold_outside_zero_to_one_is_refused(context: LoadContext) -> None:
    with pytest.raises(ValidationError, match=r"threshold must lie in \[0, 1\]") as caught:
        get_kind(KIND).fit(["a", "b"], ["x", "y"], fit_context(context, threshold=1.5))
    assert caught.value.param == "threshold"


def test_a_static_embedding_does_not_depend_on_its_batch(static_cache: Path, rows) -> None:
    _, _, test_texts, _ = rows
    encoder = StaticEncoder(cache_dir=static_cache)
    batch = encoder.encode([*test_texts, "", "[UNK]"])
    alone = np.stack([encoder.encode([text])[0] for text in test_texts])
    assert np.array_equal(alone, batch[: len(test_texts)])
    assert np.allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-6)
    assert not batch[-2:].any()  # a text of no known token: zeros, not NaN
    assert encoder.encode([]).shape == (0, 256)


# -- the fit cache ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_training_on_the_same_rows_reuses_the_two_stage_fit(
    static_cache: Path, context: LoadContext, rows, tmp_path: Path
) -> None:
    from niche.data import Rows, curate
    from niche.training import train

    # A cache of its own (the fits), sharing the run's encoders and static model.
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "encoders").symlink_to(static_cache / "encoders")
    settings = Settings(cache_dir=str(tmp_path / "cache"))
    texts, labels, test_texts, _ = rows
    version = curate(Rows(texts=texts, labels=labels, source="banking77 four"), seed=0)

    def fit(**options: object) -> FitContext:
        return FitContext(settings, encoder=context.encoder, seed=0, options=options)

    first = train(version, KIND, fit(min_validation_rows=40))
    again = train(version, KIND, fit(min_validation_rows=40))
    other = train(version, KIND, fit(min_validation_rows=41))

    assert (first.lineage["head_cache"], again.lineage["head_cache"]) == ("miss", "hit")
    assert other.lineage["head_cache"] == "miss"  # another option: another fit
    assert again.specialist.kind == KIND
    assert again.lineage["threshold"] == first.lineage["threshold"]
    first_out, again_out = (
        first.specialist.predict(test_texts),
        again.specialist.predict(test_texts),
    )
    assert again_out.labels == first_out.labels
    np.testing.assert_allclose(again_out.confidences, first_out.confidences, atol=1e-6)
