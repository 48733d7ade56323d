"""The text-finetuned kind: MiniLM and a head trained end to end with torch, served int8.

Real parts throughout: the packaged encoder, torch on CPU, onnxruntime, a CLINC150 domain
with a few rows per label, one short epoch and short token limits so each fit takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from niche.errors import ChecksumMismatchError, ValidationError
from niche.settings import Settings
from niche.specialists import FitContext, LoadContext, get_kind
from niche.specialists.finetuned import FineTunedSpecialist
from niche.specialists.finetuning import (
    MODEL_FILE,
    WEIGHTS_FILE,
    FineTuneOptions,
    fine_tune,
)
from niche.testing import Rule, check_predictor
from niche.workflows import DataSpec, curate_data, load_data, promote, train_and_register

pytestmark = pytest.mark.slow

DOMAIN = "clinc150/banking"
FAST = {"epochs": 1, "max_tokens": 24, "batch_size": 16}


def _rows(split: str, per_label: int) -> tuple[list[str], list[str]]:
    loaded = load_data(DataSpec(dataset=DOMAIN))
    rows = loaded.train if split == "train" else loaded.test
    assert rows is not None
    taken: dict[str, int] = {}
    texts, labels = [], []
    for text, label in zip(rows.texts, rows.labels, strict=True):
        if taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            texts.append(text)
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    """A text-finetuned specialist fitted on 6 rows of each of the domain's 15 intents."""
    texts, labels = _rows("train", 6)
    fitted = get_kind("text-finetuned").fit(texts, labels, FitContext(seed=0, options=FAST))
    assert fitted.config_["training"]["validation_rows"] == 15  # one of each label's 6
    return fitted.save(tmp_path_factory.mktemp("finetuned") / "model")


def test_it_passes_the_conformance_kit(saved: Path) -> None:
    context = LoadContext(Settings())
    texts, _ = _rows("test", 1)
    passed = check_predictor(
        lambda: get_kind("text-finetuned").load(saved, context),
        texts[:8],
        context=context,
        # Static int8 (scales calibrated on its training texts): a text's confidence is the
        # same alone and in a batch (dynamic int8 moved one by up to 0.062 here).
        batch_atol=1e-5,
    )
    assert passed == tuple(Rule)


def test_a_save_and_load_round_trip_predicts_the_same(saved: Path, tmp_path: Path) -> None:
    texts, labels = _rows("test", 4)
    loaded = FineTunedSpecialist.load(saved)
    again = FineTunedSpecialist.load(loaded.save(tmp_path / "copy"))
    first, second = loaded.predict(texts), again.predict(texts)
    assert first.labels == second.labels
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    # Its own encoder (what monitoring embeds traffic with) gives the same probabilities.
    own = loaded.predict_proba_embeddings(loaded.encoder.encode(texts))
    np.testing.assert_array_equal(own, first.probabilities)
    assert loaded.encoder.id.startswith("all-MiniLM-L6-v2/fine-tuned-onnx-int8/")
    # It learned the domain: far above the 1/15 of chance on rows it never saw.
    assert np.mean(np.asarray(first.labels) == np.asarray(labels)) > 0.6
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == [
        "config.json",
        "model.onnx",
        "tokenizer.json",
        "weights.safetensors",
    ]


def test_serving_does_not_import_torch(saved: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from niche.specialists import LoadContext, get_kind; "
        f"p = get_kind('text-finetuned').load({str(saved)!r}, LoadContext()); "
        "p.predict(['what is my balance']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("name", [MODEL_FILE, WEIGHTS_FILE])
def test_a_corrupted_file_is_refused(saved: Path, tmp_path: Path, name: str) -> None:
    copy = FineTunedSpecialist.load(saved).save(tmp_path / "copy")
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=name):
        get_kind("text-finetuned").load(copy, LoadContext())


def test_bad_options_are_refused_before_any_work() -> None:
    kind = get_kind("text-finetuned")
    with pytest.raises(ValidationError, match="option epochs must be >= 1, got 0"):
        kind.fit(["a", "b"], ["x", "y"], FitContext(options={"epochs": 0}))
    with pytest.raises(ValidationError, match="option batch_size must be an integer"):
        kind.resolve_options({"batch_size": 2.5})
    with pytest.raises(ValidationError, match="has no option 'epoch'"):
        kind.resolve_options({"epoch": 2})


# -- training: early stopping and determinism, on 3 intents x 6 rows ------------------------


def _tiny() -> tuple[list[str], list[str]]:
    texts, labels = _rows("train", 6)
    keep = sorted(set(labels))[:3]
    pairs = [(t, label) for t, label in zip(texts, labels, strict=True) if label in keep]
    return [t for t, _ in pairs], [label for _, label in pairs]


def _validation_loss(directory: Path, texts: list[str], targets: np.ndarray) -> float:
    """The validation loss of the weights stored in ``directory``, recomputed with torch."""
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    from niche.encoders.export import load_base_model, pooled_module

    tensors = load_file(str(directory / WEIGHTS_FILE))
    model = load_base_model()
    encoder = {k.removeprefix("encoder."): v for k, v in tensors.items() if k[:8] == "encoder."}
    model.load_state_dict(encoder)
    pooled = pooled_module(model).eval()
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(FAST["max_tokens"])
    tokenizer.enable_padding()
    encodings = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    with torch.no_grad():
        logits = pooled(ids, mask) @ tensors["head.weight"].T + tensors["head.bias"]
        return float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(targets)))


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    texts, labels = _tiny()
    # A learning rate far too high: the epochs after the first one make things worse.
    options = FineTuneOptions(
        epochs=4, learning_rate=3e-3, patience=2, warmup=0.0, max_tokens=FAST["max_tokens"]
    )
    result = fine_tune(texts, labels, options, directory=tmp_path, seed=0)
    losses = [entry["validation_loss"] for entry in result.history]
    assert all(isinstance(loss, float) for loss in losses)
    assert result.best_epoch == int(np.argmin(losses))
    assert result.best_epoch < len(losses) - 1 and losses[-1] > losses[result.best_epoch]
    # Stopped after `patience` epochs without a better one, not after all 4.
    assert len(losses) - 1 == result.best_epoch + options.patience
    index = {label: i for i, label in enumerate(result.label_set)}
    rows = result.validation
    kept = _validation_loss(
        tmp_path, [texts[i] for i in rows], np.array([index[labels[i]] for i in rows])
    )
    assert kept == pytest.approx(losses[result.best_epoch], abs=1e-4)


def test_the_same_seed_gives_the_same_weights(tmp_path: Path) -> None:
    texts, labels = _tiny()
    options = FineTuneOptions(epochs=1, max_tokens=FAST["max_tokens"])
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        fine_tune(texts, labels, options, directory=tmp_path / name, seed=seed, threads=1)
    weights = {name: (tmp_path / name / WEIGHTS_FILE).read_bytes() for name in "abc"}
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]
    assert (tmp_path / "a" / MODEL_FILE).read_bytes() == (tmp_path / "b" / MODEL_FILE).read_bytes()


# -- the gate: a frozen champion against a fine-tuned challenger ------------------------------


def test_the_gate_decides_between_a_frozen_champion_and_a_finetuned_one(
    niche_home: Path, encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from niche.registry import Registry

    monkeypatch.setenv("NICHE_BOOTSTRAP_RESAMPLES", "200")
    settings = Settings()
    registry = Registry(settings=settings)
    curated = curate_data(DataSpec(dataset=DOMAIN), settings, seed=0, registry=registry)
    fingerprint = curated.version.fingerprint
    common = {"task": "bank", "encoder": encoder, "registry": registry, "fraction": 0.05}
    frozen = train_and_register(fingerprint, settings, kind="text", **common)
    champion = promote("bank", frozen.version, settings, encoder=encoder, registry=registry)
    assert champion.moved

    tuned = train_and_register(fingerprint, settings, kind="text-finetuned", options=FAST, **common)
    assert (tuned.kind, tuned.version) == ("text-finetuned", 2)
    assert tuned.lineage["params"]["epochs"] == 1 and "best_epoch" in tuned.lineage
    outcome = promote("bank", tuned.version, settings, encoder=encoder, registry=registry)
    checks = {check.name: check for check in outcome.decision.checks}
    # Decided like any challenger: against the general model and against the frozen champion.
    assert {"quality_vs_general", "non_inferior_to_champion"} <= set(checks)
    assert outcome.previous is not None and outcome.previous.version == frozen.version
    expected = {"champion": tuned.version if outcome.moved else frozen.version}
    assert registry.promotions.aliases("bank") == expected
    assert outcome.moved == outcome.decision.passed


# -- served through the same gateway ------------------------------------------------------


@pytest.mark.anyio
async def test_the_gateway_serves_it_as_a_champion(
    saved: Path, niche_home: Path, encoder_cache_dir: Path, gateway
) -> None:
    from niche.registry import Registry
    from niche.registry.artifacts import ArtifactStore
    from niche.registry.tasks import TaskSpec
    from tests.gateway_support import in_process

    settings = Settings(home=str(niche_home), cache_dir=str(encoder_cache_dir))
    served = FineTunedSpecialist.load(saved)
    artifact = ArtifactStore.from_settings(settings).put_dir(saved)
    with Registry(settings=settings) as registry:
        registry.tasks.create(TaskSpec(name="bank", labels=served.label_set))
        registry.models.register(
            "bank",
            kind="text-finetuned",
            artifact_digest=artifact.digest,
            artifact_uri=artifact.uri,
            dataset_fingerprint="clinc150-banking-slice",
            lineage={},
        )
        registry.promotions.move("bank", "champion", 1, actor="test", reason="fixture")
    texts, _ = _rows("test", 1)
    async with in_process(gateway(settings)) as http:
        response = await http.post("/v1/tasks/bank/predict", json={"inputs": texts[:5]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    alone = served.predict(texts[:5])
    # The specialist's confidence of every text, as served (batch-independent int8); those
    # under the task's threshold cascaded to the general model, the rest carry its label.
    assert [p["confidence"] for p in predictions] == pytest.approx(alone.confidences, abs=1e-6)
    for p, label in zip(predictions, alone.labels, strict=True):
        assert p["route"] in {"specialist", "general"}
        if p["route"] == "specialist":
            assert p["label"] == label
    assert any(p["route"] == "specialist" for p in predictions)
    assert {(p["alias"], p["model_version"]) for p in predictions} == {("champion", 1)}
