"""niche.testing.check_predictor: both built-in kinds pass it; each broken kind fails its rule.

The built-in kinds run on the real encoder and real rows. The broken kinds are small
deterministic toys defined here and installed as a real plug-in (a dist-info with an
entry_points.txt on sys.path), so the kit finds them the way it finds any third-party kind,
in this process and in the fresh one it rebuilds them in.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from niche.errors import ValidationError
from niche.settings import Settings
from niche.specialists import (
    ENTRY_POINT_GROUP,
    FitContext,
    LoadContext,
    Predictions,
    Predictor,
    SpecialistKind,
    TextSpecialist,
    Usage,
    check_fit_arguments,
    check_text_inputs,
    get_kind,
)
from niche.specialists import kinds as kinds_module
from niche.testing import SAMPLE_INPUTS, PredictorCheckError, Rule, check_predictor
from tests.test_specialists import LABELS, read_banking

# -- a conforming toy kind, and broken variants of it --------------------------------------


class Toy:
    """Scores each label by a CRC of (label, text): deterministic, batch-independent."""

    kind = "toy"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)

    @property
    def label_set(self) -> list[str]:
        return list(self.labels)

    def texts(self, inputs: Sequence[str]) -> Sequence[str]:
        return check_text_inputs(self.kind, inputs)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        scores = np.array(
            [
                [zlib.crc32(f"{label}|{text}".encode()) % 1000 for label in self.labels]
                for text in texts
            ],
            dtype=np.float64,
        ).reshape(len(texts), len(self.labels))
        exp = np.exp(scores / 250.0)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, inputs: Sequence[str]) -> Predictions:
        probabilities = self.probabilities(self.texts(inputs))
        return Predictions.from_probabilities(
            probabilities, self.labels, usage=Usage(compute_s=0.001 * len(probabilities))
        )

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "toy.json").write_text(json.dumps({"kind": self.kind, "labels": self.labels}))
        return directory


class ToyKind(SpecialistKind):
    name = "toy"
    predictor: type[Toy] = Toy

    def fit(self, inputs, labels, context):
        return self.predictor(sorted(set(check_fit_arguments(self, inputs, labels))))

    def load(self, directory, context):
        return self.predictor(json.loads((Path(directory) / "toy.json").read_text())["labels"])


class Short(Toy):
    kind = "toy-short"

    def predict(self, inputs):
        predictions = super().predict(inputs)
        return Predictions(predictions.labels[:-1], predictions.confidences[:-1], usage=Usage())


class Noisy(Toy):
    kind = "toy-noisy"

    def probabilities(self, texts):
        probabilities = super().probabilities(texts) + np.random.default_rng().uniform(
            0, 1e-3, size=(len(texts), len(self.labels))
        )
        return probabilities / probabilities.sum(axis=1, keepdims=True)


class Sorted(Toy):
    kind = "toy-sorted"

    def predict(self, inputs):
        predictions = super().predict(inputs)
        order = np.argsort(predictions.labels, kind="stable")
        return Predictions(
            [predictions.labels[i] for i in order], predictions.confidences[order], usage=Usage()
        )


class EmptyHanded(Toy):
    kind = "toy-empty"

    def probabilities(self, texts):
        return np.stack([super(EmptyHanded, self).probabilities([t])[0] for t in texts])


class Improbable(Toy):
    kind = "toy-improbable"

    def predict(self, inputs):
        predictions = super().predict(inputs)
        return Predictions(
            predictions.labels,
            1.0 - predictions.confidences,
            label_set=predictions.label_set,
            probabilities=predictions.probabilities,
            usage=predictions.usage,
        )


class Unmetered(Toy):
    kind = "toy-unmetered"

    def predict(self, inputs):
        probabilities = self.probabilities(self.texts(inputs))
        return Predictions.from_probabilities(probabilities, self.labels)


class Lenient(Toy):
    kind = "toy-lenient"

    def texts(self, inputs):
        return list(inputs)


class Moody(Toy):
    """Its confidences depend on how many inputs share the batch."""

    kind = "toy-moody"

    def probabilities(self, texts):
        probabilities = super().probabilities(texts) ** (1 + 0.01 * len(texts))
        return probabilities / probabilities.sum(axis=1, keepdims=True)


class Forgetful(Toy):
    kind = "toy-forgetful"


class ForgetfulKind(ToyKind):
    name = "toy-forgetful"
    predictor = Forgetful

    def load(self, directory, context):
        return Forgetful(["a", "b"])  # the label set it was saved with is lost


class Unsafe(Toy):
    """Keeps the batch in a scratch attribute while it works: threads trample each other."""

    kind = "toy-unsafe"

    def predict(self, inputs):
        self.scratch = list(self.texts(inputs))
        time.sleep(0.02)
        return super().predict(self.scratch)


_IN_MEMORY: dict[str, Toy] = {}


class Local(Toy):
    kind = "toy-local"

    def save(self, directory):
        _IN_MEMORY[str(directory)] = self
        return Path(directory)


class LocalKind(ToyKind):
    """Loads only what this very process saved: another process cannot rebuild it."""

    name = "toy-local"
    predictor = Local

    def load(self, directory, context):
        return _IN_MEMORY[str(directory)]


class Unregistered(Toy):
    kind = "toy-unregistered"


def _kind(predictor: type[Toy]) -> type[ToyKind]:
    return type(
        f"{predictor.__name__}Kind", (ToyKind,), {"name": predictor.kind, "predictor": predictor}
    )


ShortKind = _kind(Short)
NoisyKind = _kind(Noisy)
SortedKind = _kind(Sorted)
EmptyHandedKind = _kind(EmptyHanded)
ImprobableKind = _kind(Improbable)
UnmeteredKind = _kind(Unmetered)
LenientKind = _kind(Lenient)
MoodyKind = _kind(Moody)
UnsafeKind = _kind(Unsafe)

PLUGINS = {
    "toy": "ToyKind",
    "toy-short": "ShortKind",
    "toy-noisy": "NoisyKind",
    "toy-sorted": "SortedKind",
    "toy-empty": "EmptyHandedKind",
    "toy-improbable": "ImprobableKind",
    "toy-unmetered": "UnmeteredKind",
    "toy-lenient": "LenientKind",
    "toy-moody": "MoodyKind",
    "toy-forgetful": "ForgetfulKind",
    "toy-unsafe": "UnsafeKind",
    "toy-local": "LocalKind",
}

TOY_LABELS = ["billing", "card", "other", "refund"]


@pytest.fixture(autouse=True)
def toy_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the toy kinds as a plug-in distribution on sys.path, for this test only."""
    dist = tmp_path / "plugins" / "niche_toys-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: niche-toys\nVersion: 1.0\n")
    lines = "".join(f"{name} = {__name__}:{obj}\n" for name, obj in PLUGINS.items())
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setattr(kinds_module, "_loaded", {})


def toy(kind: str) -> Callable[[], Predictor]:
    return lambda: get_kind(kind).fit(TOY_LABELS, TOY_LABELS, FitContext())


# -- the built-in kinds pass ------------------------------------------------------------


@pytest.fixture(scope="module")
def serving_context(encoder, encoder_cache_dir: Path) -> LoadContext:
    """The uncached encoder, as serving and evaluation use it: every check does real work."""
    settings = Settings(cache_dir=str(encoder_cache_dir))
    return LoadContext(settings, encoder=encoder.encoder, embedding_cache=False)


@pytest.mark.slow
def test_the_text_kind_passes_on_real_rows(
    encoder, serving_context: LoadContext, datasets_dir: Path, tmp_path: Path
) -> None:
    train_texts, train_labels = read_banking(datasets_dir, "train.csv", 40)
    test_texts, _ = read_banking(datasets_dir, "test.csv", 4)
    fitted = get_kind("text").fit(train_texts, train_labels, FitContext(encoder=encoder))
    fitted.save(tmp_path / "text-model")
    passed = check_predictor(
        lambda: get_kind("text").load(tmp_path / "text-model", serving_context),
        test_texts,
        context=serving_context,
        # Static int8: a text's vector does not depend on its batch (dynamic int8 needed 0.05).
        batch_atol=1e-6,
    )
    assert passed == tuple(Rule)


@pytest.mark.slow
def test_the_text_kind_passes_on_the_sample_inputs(
    serving_context: LoadContext, datasets_dir: Path, tmp_path: Path
) -> None:
    from tests.gateway_support import read_sms

    texts, labels = read_sms(datasets_dir)
    # Fitted on the uncached serving encoder: the run's shared embedding cache holds whatever
    # batches other tests encoded these texts in, and int8 embeddings depend on their batch,
    # so a fit through it would differ with the test order (the tolerance below is near it).
    TextSpecialist(serving_context.encoder).fit(texts[:300], labels[:300]).save(tmp_path / "sms")
    passed = check_predictor(
        lambda: TextSpecialist.load(tmp_path / "sms", serving_context.encoder),
        context=serving_context,
        batch_atol=0.05,
        rebuild="pickle",
    )
    assert passed == tuple(Rule)
    assert len(SAMPLE_INPUTS["text"]) >= 10


@pytest.mark.slow
def test_the_zero_shot_kind_passes(serving_context: LoadContext, datasets_dir: Path) -> None:
    test_texts, _ = read_banking(datasets_dir, "test.csv", 4)
    fit_context = FitContext(serving_context.settings, encoder=serving_context.encoder)
    passed = check_predictor(
        lambda: get_kind("zero-shot").fit([], LABELS, fit_context),
        test_texts,
        context=serving_context,
        # Cosines / temperature 0.05 move 20x as much as the vectors (dynamic int8 needed 0.1).
        batch_atol=1e-5,
    )
    assert passed == tuple(Rule)


# -- a third-party kind passes, in a fresh process and by pickle --------------------------


@pytest.mark.parametrize("rebuild", ["subprocess", "pickle"])
def test_a_conforming_plugin_kind_passes(rebuild) -> None:
    assert check_predictor(toy("toy"), rebuild=rebuild) == tuple(Rule)


# -- each broken kind fails with its rule's name -------------------------------------------


@pytest.mark.parametrize(
    ("kind", "rule", "detail"),
    [
        ("toy-short", Rule.ONE_PER_INPUT, "12 inputs gave 11 labels"),
        ("toy-empty", Rule.EMPTY, "raised ValueError"),
        ("toy-improbable", Rule.PROBABILITIES, "confidence"),
        ("toy-unmetered", Rule.USAGE, "predictions.usage is None, not a Usage"),
        ("toy-lenient", Rule.INPUT_TYPES, "predict accepted a single str"),
        ("toy-noisy", Rule.DETERMINISTIC, "a second call"),
        ("toy-sorted", Rule.IN_ORDER, "reversed inputs"),
        ("toy-moody", Rule.ALONE, "alone: the probabilities of input 0 moved"),
        ("toy-forgetful", Rule.SAVE_LOAD, "the label set"),
        ("toy-unsafe", Rule.THREADS, "thread"),
        ("toy-local", Rule.REBUILD, "a fresh process could not rebuild it"),
    ],
)
def test_a_broken_kind_fails_naming_its_rule(kind: str, rule: Rule, detail: str) -> None:
    with pytest.raises(PredictorCheckError) as caught:
        check_predictor(toy(kind))
    assert caught.value.rule is rule
    assert caught.value.kind == kind
    assert f"kind {kind!r} breaks rule {str(rule)!r}" in str(caught.value)
    assert detail in str(caught.value)


def test_an_unregistered_kind_fails_naming_its_rule() -> None:
    with pytest.raises(PredictorCheckError) as caught:
        check_predictor(lambda: Unregistered(TOY_LABELS))
    assert caught.value.rule is Rule.REGISTERED
    assert "breaks rule 'kind registered': unknown specialist kind 'toy-unregistered'" in str(
        caught.value
    )


def test_something_that_is_not_a_predictor_fails_the_protocol() -> None:
    with pytest.raises(PredictorCheckError, match="breaks rule 'is a Predictor'"):
        check_predictor(lambda: object())


def test_the_kit_refuses_bad_arguments() -> None:
    with pytest.raises(ValidationError, match="make must be a callable"):
        check_predictor(Toy(TOY_LABELS))
    with pytest.raises(ValidationError, match="at least 2 inputs"):
        check_predictor(toy("toy"), ["only one"])
    with pytest.raises(ValidationError, match="sequence of str"):
        check_predictor(toy("toy"), [1, 2])


def test_the_thread_check_really_runs_threads_at_once() -> None:
    seen: set[str] = set()

    class Watched(Toy):
        kind = "toy"

        def predict(self, inputs):
            seen.add(threading.current_thread().name)
            return super().predict(inputs)

    check_predictor(lambda: Watched(TOY_LABELS), threads=3, rebuild="pickle")
    assert len(seen - {threading.current_thread().name}) == 3
