"""Specialist kinds as plug-ins: entry points, lazy discovery, clear errors, contexts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from niche.errors import ArtifactError, ConfigurationError, ValidationError
from niche.settings import Settings
from niche.specialists import (
    ENTRY_POINT_GROUP,
    FitContext,
    LoadContext,
    SpecialistKind,
    TextKind,
    ZeroShotKind,
    available_kinds,
    get_kind,
    load_predictor,
)
from niche.specialists import kinds as kinds_module

# A third-party kind as a plug-in package would ship it: a module and its dist-info.
DEMO_MODULE = '''
"""A third-party kind: labels a text by the first keyword of the training set it contains."""

import json
from pathlib import Path

import numpy as np

from niche.specialists import Predictions, SpecialistKind, Usage, check_fit_arguments
from niche.specialists import check_text_inputs


class KeywordPredictor:
    kind = "demo-keywords"

    def __init__(self, keywords):
        self.keywords = dict(keywords)

    @property
    def label_set(self):
        return sorted(set(self.keywords.values()))

    def predict(self, inputs):
        texts = check_text_inputs(self.kind, inputs)
        labels = [
            next((v for k, v in self.keywords.items() if k in t), self.label_set[0])
            for t in texts
        ]
        return Predictions(labels, np.ones(len(labels)), usage=Usage(compute_s=0.0))

    def save(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "keywords.json").write_text(json.dumps(self.keywords))
        return directory


class DemoKind(SpecialistKind):
    name = "demo-keywords"
    input_kind = "text"

    def fit(self, inputs, labels, context):
        labels = check_fit_arguments(self, inputs, labels)
        return KeywordPredictor({t.split()[0]: label for t, label in zip(inputs, labels)})

    def load(self, directory, context):
        return KeywordPredictor(json.loads((Path(directory) / "keywords.json").read_text()))
'''


def install_plugin(
    root: Path, monkeypatch: pytest.MonkeyPatch, entry_points: dict[str, str], modules: dict
) -> None:
    """Put a distribution ``niche-demo`` declaring ``entry_points`` on ``sys.path``."""
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    dist = root / "niche_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: niche-demo\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    monkeypatch.syspath_prepend(str(root))


@pytest.fixture(autouse=True)
def fresh_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no kind loaded, and leaves none of its plug-ins behind."""
    monkeypatch.setattr(kinds_module, "_loaded", {})


def test_the_built_in_kinds_are_declared_as_entry_points() -> None:
    declared = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert declared == {
        "remote": "niche.specialists.remote:RemoteKind",
        "text": "niche.specialists.text:TextKind",
        "text-finetuned": "niche.specialists.finetuned:FineTunedKind",
        "text-two-stage": "niche.specialists.twostage:TwoStageKind",
        "zero-shot": "niche.specialists.zeroshot:ZeroShotKind",
    }
    assert available_kinds() == ["remote", "text", "text-finetuned", "text-two-stage", "zero-shot"]
    text, zero_shot = get_kind("text"), get_kind("zero-shot")
    assert isinstance(text, TextKind) and isinstance(zero_shot, ZeroShotKind)
    assert (text.name, text.input_kind) == ("text", "text")
    assert (zero_shot.name, zero_shot.input_kind) == ("zero-shot", "text")
    assert get_kind("text") is text  # loaded once


def test_no_entry_point_is_read_at_import_time() -> None:
    script = textwrap.dedent(
        """
        from importlib import metadata
        calls = []
        real = metadata.entry_points
        metadata.entry_points = lambda *a, **k: calls.append(k) or real(*a, **k)
        import niche, niche.specialists, niche.training, niche.evaluation, niche.testing
        print(len(calls))
        niche.specialists.get_kind("text")
        print(len(calls))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["0", "1"]


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValidationError, match="unknown specialist kind 'lora'") as caught:
        get_kind("lora")
    assert "known kinds: remote, text, text-finetuned, text-two-stage, zero-shot" in str(
        caught.value
    )
    assert caught.value.param == "kind"
    assert caught.value.exit_code == 2


def test_a_third_party_kind_is_discovered_from_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder
) -> None:
    install_plugin(
        tmp_path,
        monkeypatch,
        {"demo-keywords": "niche_demo_kind:DemoKind"},
        {"niche_demo_kind": DEMO_MODULE},
    )
    assert "niche_demo_kind" not in sys.modules
    assert available_kinds() == [
        "demo-keywords",
        "remote",
        "text",
        "text-finetuned",
        "text-two-stage",
        "zero-shot",
    ]
    assert "niche_demo_kind" not in sys.modules  # listing kinds imports none of them
    kind = get_kind("demo-keywords")
    assert type(kind).__module__ == "niche_demo_kind"
    predictor = kind.fit(["card lost", "refund please"], ["card", "refund"], FitContext())
    predictor.save(tmp_path / "model")
    loaded = load_predictor("demo-keywords", tmp_path / "model", LoadContext(encoder=encoder))
    assert loaded.predict(["refund now", "card gone"]).labels == ["refund", "card"]


@pytest.mark.parametrize(
    ("module", "source", "message"),
    [
        (
            "niche_broken_import",
            "raise ImportError('no module named lightgbm')",
            "failed to load: ImportError: no module named lightgbm",
        ),
        ("niche_broken_type", "Kind = 42", "is a int, not a SpecialistKind"),
        (
            "niche_broken_name",
            "from niche.specialists import TextKind as Kind",
            "calls itself 'text'",
        ),
    ],
)
def test_a_plugin_that_fails_to_load_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str, message: str
) -> None:
    install_plugin(tmp_path, monkeypatch, {"broken": f"{module}:Kind"}, {module: source})
    with pytest.raises(ConfigurationError, match=message) as caught:
        get_kind("broken")
    assert f"specialist kind 'broken' from {module}:Kind" in str(caught.value)
    assert "distribution niche-demo 0.1" in str(caught.value)
    # The other kinds are unaffected.
    assert isinstance(get_kind("text"), TextKind)


def test_a_kind_declared_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, {"text": "niche_demo_kind:DemoKind"}, {})
    with pytest.raises(ConfigurationError, match="'text' is declared more than once"):
        get_kind("text")


def test_built_in_kinds_are_found_without_their_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    # An editable install made before the entry points existed declares none.
    monkeypatch.setattr(kinds_module.metadata, "entry_points", lambda **_: [])
    assert available_kinds() == ["remote", "text", "text-finetuned", "text-two-stage", "zero-shot"]
    assert isinstance(get_kind("zero-shot"), ZeroShotKind)


def test_a_misspelt_option_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"has no option 'C' \(options: c, calib") as caught:
        get_kind("text").fit(["a", "b"], ["x", "y"], FitContext(options={"C": 1.0}))
    assert caught.value.param == "C"


@pytest.mark.parametrize(
    ("inputs", "labels", "message"),
    [
        ("just one text", ["x"], "not a single str"),
        (["a", 2], ["x", "y"], r"inputs\[1\] is int"),
        (["a", "b"], ["x"], "2 inputs but 1 labels"),
        (["a", "b"], ["x", 3], r"labels\[1\] is int"),
    ],
)
def test_fit_refuses_inputs_of_the_wrong_kind(inputs, labels, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        get_kind("text").fit(inputs, labels, FitContext())


def test_the_load_context_builds_its_encoder_once_on_first_use(encoder_cache_dir: Path) -> None:
    from niche.encoders import CachedEncoder, OnnxEncoder

    settings = Settings(cache_dir=str(encoder_cache_dir))
    context = LoadContext(settings)
    assert not context.has_encoder
    assert isinstance(context.encoder, CachedEncoder)
    assert context.has_encoder and context.encoder is context.encoder
    uncached = LoadContext(settings, embedding_cache=False).encoder
    assert isinstance(uncached, OnnxEncoder) and uncached.id == context.encoder.id
    given = LoadContext(encoder=uncached)
    assert given.has_encoder and given.encoder is uncached


def test_the_fit_context_takes_its_seed_from_the_settings() -> None:
    assert FitContext(Settings(seed=7)).seed == 7
    assert FitContext(Settings(seed=7), seed=3).seed == 3
    context = FitContext(options={"c": 1.0})
    with pytest.raises(TypeError):
        context.options["c"] = 2.0


def test_load_predictor_takes_an_encoder_or_a_context(encoder, tmp_path: Path) -> None:
    spec = get_kind("zero-shot").fit([], ["spam", "ham"], FitContext(encoder=encoder))
    spec.save(tmp_path / "zs")
    by_encoder = load_predictor("zero-shot", tmp_path / "zs", encoder)
    by_context = load_predictor("zero-shot", tmp_path / "zs", LoadContext(encoder=encoder))
    assert by_encoder.label_set == by_context.label_set == ["spam", "ham"]
    with pytest.raises(
        ArtifactError, match=r"no loader for model kind 'lora' \(known: remote, text"
    ):
        load_predictor("lora", tmp_path / "zs", encoder)


def test_a_kind_must_implement_fit_and_load() -> None:
    class Half(SpecialistKind):
        name = "half"

        def fit(self, inputs, labels, context):
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract method"):
        Half()
