"""A task as data: what it takes and gives, its general model, its SLA.

    >>> spec = TaskSpec(name="banking77", labels=["card_arrival", "lost_or_stolen_card"],
    ...                 sla=SLA(latency_p95_ms=50, min_quality=0.9))
    >>> TaskSpec.from_dict(spec.to_dict()) == spec
    True

Specs are strict: an unknown field is refused at once (a misspelt SLA field must not be
silently ignored), and numbers are checked for range. API keys are never stored: a general
model names the environment variable that holds its key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from niche.errors import ConfigurationError, ValidationError
from niche.registry.policies import LOOP_TRIGGERS, LoopSpec, MonitoringSpec
from niche.registry.spec_checks import fraction, non_negative, strict
from niche.settings import Settings
from niche.specialists.prompting import RESPONSE_FORMATS

__all__ = [
    "GATE_SPEC_FIELDS",
    "INPUT_KINDS",
    "LOOP_TRIGGERS",
    "METRICS",
    "OUTPUT_KINDS",
    "SLA",
    "GeneralModelSpec",
    "LoopSpec",
    "MonitoringSpec",
    "ServingSpec",
    "TaskSpec",
    "gate_fingerprint",
    "global_general_model",
]

INPUT_KINDS = ("text", "tabular", "chat")
OUTPUT_KINDS = ("label", "text")
METRICS = ("accuracy", "macro_f1")
"""What a task's gate and leaderboard measure quality with (:attr:`TaskSpec.metric`)."""
DEFAULT_METRIC = "accuracy"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
# A label answer needs a few tokens; JSON around it a few more.
DEFAULT_MAX_TOKENS = 64
DEFAULT_MIN_AGREEMENT = 0.8
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SLA:
    """Service levels a specialist must meet to be promoted and, later, to keep serving.

    ``min_quality``: absolute accuracy floor. ``min_quality_vs_general``: accuracy minus the
    general model's accuracy must be at least this (0.0 = at least as good; -0.02 = within two
    points). ``min_agreement_with_general``: for a specialist distilled from traffic, whose
    test labels are mostly the general model's own answers, the least share of them it must
    agree with (one-sided 95 % lower bound) while fewer than 30 gold-labelled test rows can
    measure "at least as good" directly. ``None`` leaves a level unchecked.
    """

    latency_p95_ms: float | None = None
    min_quality: float | None = None
    min_quality_vs_general: float | None = 0.0
    max_cost_per_1k_usd: float | None = None
    min_agreement_with_general: float | None = DEFAULT_MIN_AGREEMENT

    def __post_init__(self) -> None:
        non_negative(self.latency_p95_ms, "sla.latency_p95_ms")
        non_negative(self.max_cost_per_1k_usd, "sla.max_cost_per_1k_usd")
        if self.min_quality is not None and not 0 <= self.min_quality <= 1:
            raise ValidationError(f"sla.min_quality must be in [0, 1], got {self.min_quality}")
        fraction(self.min_agreement_with_general, "sla.min_agreement_with_general")
        if self.min_quality_vs_general is not None and not -1 <= self.min_quality_vs_general <= 1:
            raise ValidationError(
                f"sla.min_quality_vs_general must be in [-1, 1], got {self.min_quality_vs_general}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SLA:
        return cls(**strict(cls, data, "sla"))


@dataclass(frozen=True)
class GeneralModelSpec:
    """The general model a task is compared with and falls back to.

    ``kind="zero-shot"``: the built-in offline model. ``kind="openai"``: any OpenAI-compatible
    endpoint at ``base_url`` serving ``model``; ``api_key_env`` names the environment variable
    holding the key (the key itself is never stored). ``max_tokens`` bounds every answer the
    gateway and evaluation ask for (a label needs a few tokens; an unbounded request lets a
    server generate until its context is full); ``stop`` ends an answer early.
    ``response_format`` asks for a constrained answer (the label as a JSON enum):
    ``json_schema`` (OpenAI, vLLM), ``json_object`` (llama.cpp's server), ``text`` (free
    text, mapped), or ``auto`` (the default: ``json_schema``, then ``json_object``, then
    ``text``, each step taken once per endpoint on a 400/422 refusal — at most two refused
    calls, then every answer is as constrained as the endpoint allows).
    """

    kind: str = "zero-shot"
    base_url: str | None = None
    model: str | None = None
    prompt_template: str | None = None
    price_input_per_1m_tokens_usd: float = 0.0
    price_output_per_1m_tokens_usd: float = 0.0
    api_key_env: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] | None = None
    response_format: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in ("zero-shot", "openai"):
            raise ValidationError(
                f"general.kind must be 'zero-shot' or 'openai', got {self.kind!r}"
            )
        if self.kind == "openai" and not (self.base_url and self.model):
            raise ValidationError("an 'openai' general model needs base_url and model")
        if self.api_key_env is not None and not _ENV_NAME.match(self.api_key_env):
            raise ValidationError(
                f"general.api_key_env must name an environment variable, got {self.api_key_env!r}"
                " (store the variable's name, never the key)"
            )
        non_negative(self.price_input_per_1m_tokens_usd, "general.price_input_per_1m_tokens_usd")
        non_negative(self.price_output_per_1m_tokens_usd, "general.price_output_per_1m_tokens_usd")
        if (
            isinstance(self.max_tokens, bool)
            or not isinstance(self.max_tokens, int)
            or not 1 <= self.max_tokens <= 65_536
        ):
            raise ValidationError(
                f"general.max_tokens must be an integer in [1, 65536], got {self.max_tokens!r}"
            )
        if self.stop is not None:
            stop = self.stop
            if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
                raise ValidationError(
                    f"general.stop must be a list of non-empty strings, got {stop!r}"
                )
            if len(stop) > 4:
                raise ValidationError(
                    f"general.stop takes at most 4 strings (the OpenAI limit), got {len(stop)}"
                )
            object.__setattr__(self, "stop", tuple(stop))
        if self.response_format not in RESPONSE_FORMATS:
            raise ValidationError(
                f"general.response_format must be one of {', '.join(RESPONSE_FORMATS)}, "
                f"got {self.response_format!r}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneralModelSpec:
        return cls(**strict(cls, data, "general"))


def global_general_model(settings: Settings) -> GeneralModelSpec | None:
    """The gateway's own general model, from ``NICHE_GENERAL_*`` (None: both URL and model
    unset). A half-set or bad value raises :class:`ConfigurationError` naming its setting.

    >>> global_general_model(Settings(general_base_url="http://localhost:8080/v1",
    ...                               general_model="gemma")).max_tokens
    64
    """
    base_url = settings.get("NICHE_GENERAL_BASE_URL")
    model = settings.get("NICHE_GENERAL_MODEL")
    if not (base_url or model):
        return None
    if not (base_url and model):
        raise ConfigurationError(
            "set both NICHE_GENERAL_BASE_URL and NICHE_GENERAL_MODEL, or neither "
            "(the built-in zero-shot model then answers low-confidence requests)",
            setting="NICHE_GENERAL_BASE_URL" if not base_url else "NICHE_GENERAL_MODEL",
        )
    try:
        return GeneralModelSpec(
            kind="openai",
            base_url=base_url,
            model=model,
            api_key_env=settings.get("NICHE_GENERAL_API_KEY_ENV"),
            price_input_per_1m_tokens_usd=settings.get(
                "NICHE_GENERAL_PRICE_INPUT_PER_1M_TOKENS_USD"
            ),
            price_output_per_1m_tokens_usd=settings.get(
                "NICHE_GENERAL_PRICE_OUTPUT_PER_1M_TOKENS_USD"
            ),
            max_tokens=settings.get("NICHE_GENERAL_MAX_TOKENS"),
            response_format=settings.get("NICHE_GENERAL_RESPONSE_FORMAT"),
        )
    except ValidationError as exc:
        # "general.max_tokens must be …" names the field: its setting is NICHE_GENERAL_<FIELD>.
        field_name = exc.message.partition(" ")[0].removeprefix("general.")
        setting = f"NICHE_GENERAL_{field_name.upper()}" if field_name.isidentifier() else None
        raise ConfigurationError(
            f"{setting or 'NICHE_GENERAL_*'}: {exc.message}", setting=setting
        ) from exc


@dataclass(frozen=True)
class ServingSpec:
    """How the gateway serves a task; ``None`` takes the ``NICHE_GATEWAY_*`` setting.

    ``timeout_s``: how long the general model may take before the specialist's answer is
    used (``specialist-fallback``). ``shadow_fraction``: requests drawn at random, whatever the
    specialist's confidence, that get the general model's label too (a background shadow call
    when the specialist answers; records ``sampled``). ``canary_fraction``: requests answered by the
    ``challenger`` alias. ``capture``: whether requests are recorded as traffic.
    """

    timeout_s: float | None = None
    shadow_fraction: float | None = None
    canary_fraction: float | None = None
    capture: bool = True

    def __post_init__(self) -> None:
        if self.timeout_s is not None and (
            isinstance(self.timeout_s, bool)
            or not isinstance(self.timeout_s, int | float)
            or self.timeout_s <= 0
        ):
            raise ValidationError(
                f"serving.timeout_s must be a positive number of seconds, got {self.timeout_s!r}"
            )
        fraction(self.shadow_fraction, "serving.shadow_fraction")
        fraction(self.canary_fraction, "serving.canary_fraction")
        if not isinstance(self.capture, bool):
            raise ValidationError(f"serving.capture must be true or false, got {self.capture!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingSpec:
        return cls(**strict(cls, data, "serving"))


_SECTIONS: dict[str, Any] = {}


def _json_ready(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in items}


@dataclass(frozen=True)
class TaskSpec:
    """One narrow job: its input and output kinds, labels, general model, SLA and weights.

    ``metric`` (one of :data:`METRICS`) is what "quality" means for the task: the gate checks
    ``sla.min_quality`` against it and compares with the general model and the champion on
    its paired difference; the leaderboard scores the task on it. ``macro_f1`` suits skewed
    label sets, where a model that always answers the majority label scores high accuracy.
    """

    name: str
    labels: list[str] = field(default_factory=list)
    # What the zero-shot general model compares texts with, for labels whose name says little.
    label_descriptions: dict[str, str] = field(default_factory=dict)
    domain: str | None = None
    description: str | None = None
    input_kind: str = "text"
    output_kind: str = "label"
    general: GeneralModelSpec = field(default_factory=GeneralModelSpec)
    sla: SLA = field(default_factory=SLA)
    serving: ServingSpec = field(default_factory=ServingSpec)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    loop: LoopSpec = field(default_factory=LoopSpec)
    cascade_threshold: float = 0.5
    leaderboard_weight: float = 1.0
    metric: str = DEFAULT_METRIC

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValidationError(
                f"task name {self.name!r} must be 1-64 lower-case letters, digits, '_', '-' "
                "or '.', starting with a letter or digit"
            )
        if self.input_kind not in INPUT_KINDS:
            raise ValidationError(
                f"task {self.name}: input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}"
            )
        if self.output_kind not in OUTPUT_KINDS:
            raise ValidationError(
                f"task {self.name}: output_kind must be one of {OUTPUT_KINDS}, "
                f"got {self.output_kind!r}"
            )
        if len(set(self.labels)) != len(self.labels):
            raise ValidationError(f"task {self.name}: labels must be unique")
        unknown = sorted(set(self.label_descriptions) - set(self.labels))
        if self.labels and unknown:
            raise ValidationError(
                f"task {self.name}: label_descriptions for labels not in the label set: "
                f"{', '.join(unknown)}"
            )
        if not 0 <= self.cascade_threshold <= 1:
            raise ValidationError(
                f"task {self.name}: cascade_threshold must be in [0, 1], "
                f"got {self.cascade_threshold}"
            )
        non_negative(self.leaderboard_weight, "leaderboard_weight")
        if self.metric not in METRICS:
            raise ValidationError(
                f"task {self.name}: metric must be one of {', '.join(METRICS)}, got {self.metric!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists, as JSON reads them back); :meth:`from_dict`
        reads it back."""
        return asdict(self, dict_factory=_json_ready)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        data = dict(strict(cls, data, "task"))
        for name, section in _SECTIONS.items():
            if isinstance(data.get(name), dict):
                data[name] = section.from_dict(data[name])
        if "labels" in data:
            data["labels"] = list(data["labels"])
        if data.get("label_descriptions") is None:
            data.pop("label_descriptions", None)
        return cls(**data)

    def with_changes(self, **changes: Any) -> TaskSpec:
        """A copy with ``changes`` applied (each section, ``sla``, ``general``, ``serving``,
        ``monitoring`` and ``loop``, accepts a partial dict)."""
        data = dict(strict(type(self), changes, f"task {self.name}"))
        for name, section in _SECTIONS.items():
            if isinstance(data.get(name), dict):
                data[name] = section.from_dict({**asdict(getattr(self, name)), **data[name]})
        return replace(self, **data)


_SECTIONS.update(
    general=GeneralModelSpec,
    sla=SLA,
    serving=ServingSpec,
    monitoring=MonitoringSpec,
    loop=LoopSpec,
)

GATE_SPEC_FIELDS = (
    "labels",
    "label_descriptions",
    "input_kind",
    "output_kind",
    "general",
    "sla",
    "metric",
)
"""The fields of a :class:`TaskSpec` a gate decision depends on (what it measures against)."""


def gate_fingerprint(spec: TaskSpec) -> str:
    """sha256 of the spec fields a gate depends on: a passed gate holds while this is unchanged.

    Serving settings, the cascade threshold, the description and the name of the key's
    environment variable do not change what a gate measured, so they are left out.

        >>> gate_fingerprint(spec) == gate_fingerprint(spec.with_changes(cascade_threshold=0.9))
        True
    """
    data = spec.to_dict()
    view = {name: data[name] for name in GATE_SPEC_FIELDS}
    view["general"] = {k: v for k, v in view["general"].items() if k != "api_key_env"}
    # Added after gates were first stored: at its default it is left out, so the decisions
    # stored before it still hold.
    if view["sla"].get("min_agreement_with_general") == DEFAULT_MIN_AGREEMENT:
        del view["sla"]["min_agreement_with_general"]
    if view["metric"] == DEFAULT_METRIC:
        del view["metric"]
    text = json.dumps(view, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
