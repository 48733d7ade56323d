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
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from niche.errors import ConfigurationError, ValidationError
from niche.settings import Settings
from niche.specialists.prompting import RESPONSE_FORMATS

__all__ = [
    "GATE_SPEC_FIELDS",
    "INPUT_KINDS",
    "OUTPUT_KINDS",
    "SLA",
    "GeneralModelSpec",
    "ServingSpec",
    "TaskSpec",
    "gate_fingerprint",
    "global_general_model",
]

INPUT_KINDS = ("text", "tabular", "chat")
OUTPUT_KINDS = ("label", "text")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
# A label answer needs a few tokens; JSON around it a few more.
DEFAULT_MAX_TOKENS = 64
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _strict(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValidationError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return data


def _non_negative(value: float | None, name: str) -> None:
    if value is not None and (not isinstance(value, int | float) or value < 0):
        raise ValidationError(f"{name} must be a non-negative number, got {value!r}")


@dataclass(frozen=True)
class SLA:
    """Service levels a specialist must meet to be promoted and, later, to keep serving.

    ``min_quality``: absolute accuracy floor. ``min_quality_vs_general``: accuracy minus the
    general model's accuracy must be at least this (0.0 = at least as good; -0.02 = within two
    points). ``None`` leaves a level unchecked.
    """

    latency_p95_ms: float | None = None
    min_quality: float | None = None
    min_quality_vs_general: float | None = 0.0
    max_cost_per_1k_usd: float | None = None

    def __post_init__(self) -> None:
        _non_negative(self.latency_p95_ms, "sla.latency_p95_ms")
        _non_negative(self.max_cost_per_1k_usd, "sla.max_cost_per_1k_usd")
        if self.min_quality is not None and not 0 <= self.min_quality <= 1:
            raise ValidationError(f"sla.min_quality must be in [0, 1], got {self.min_quality}")
        if self.min_quality_vs_general is not None and not -1 <= self.min_quality_vs_general <= 1:
            raise ValidationError(
                f"sla.min_quality_vs_general must be in [-1, 1], got {self.min_quality_vs_general}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SLA:
        return cls(**_strict(cls, data, "sla"))


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
        _non_negative(self.price_input_per_1m_tokens_usd, "general.price_input_per_1m_tokens_usd")
        _non_negative(self.price_output_per_1m_tokens_usd, "general.price_output_per_1m_tokens_usd")
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
        return cls(**_strict(cls, data, "general"))


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


def _fraction(value: float | None, name: str) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1
    ):
        raise ValidationError(f"{name} must be a number in [0, 1], got {value!r}")


@dataclass(frozen=True)
class ServingSpec:
    """How the gateway serves a task; ``None`` takes the ``NICHE_GATEWAY_*`` setting.

    ``timeout_s``: how long the general model may take before the specialist's answer is
    used (``specialist-fallback``). ``shadow_fraction``: specialist answers also sent to the
    general model in the background. ``canary_fraction``: requests answered by the
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
        _fraction(self.shadow_fraction, "serving.shadow_fraction")
        _fraction(self.canary_fraction, "serving.canary_fraction")
        if not isinstance(self.capture, bool):
            raise ValidationError(f"serving.capture must be true or false, got {self.capture!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingSpec:
        return cls(**_strict(cls, data, "serving"))


@dataclass(frozen=True)
class TaskSpec:
    """One narrow job: its input and output kinds, labels, general model, SLA and weights."""

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
    cascade_threshold: float = 0.5
    leaderboard_weight: float = 1.0

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
        _non_negative(self.leaderboard_weight, "leaderboard_weight")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        data = dict(_strict(cls, data, "task"))
        if isinstance(data.get("general"), dict):
            data["general"] = GeneralModelSpec.from_dict(data["general"])
        if isinstance(data.get("sla"), dict):
            data["sla"] = SLA.from_dict(data["sla"])
        if isinstance(data.get("serving"), dict):
            data["serving"] = ServingSpec.from_dict(data["serving"])
        if "labels" in data:
            data["labels"] = list(data["labels"])
        if data.get("label_descriptions") is None:
            data.pop("label_descriptions", None)
        return cls(**data)

    def with_changes(self, **changes: Any) -> TaskSpec:
        """A copy with ``changes`` applied (``sla``/``general``/``serving`` accept partial dicts)."""
        data = dict(_strict(type(self), changes, f"task {self.name}"))
        if isinstance(data.get("serving"), dict):
            data["serving"] = ServingSpec.from_dict({**asdict(self.serving), **data["serving"]})
        if isinstance(data.get("sla"), dict):
            data["sla"] = SLA.from_dict({**asdict(self.sla), **data["sla"]})
        if isinstance(data.get("general"), dict):
            data["general"] = GeneralModelSpec.from_dict(
                {**asdict(self.general), **data["general"]}
            )
        return replace(self, **data)


GATE_SPEC_FIELDS = ("labels", "label_descriptions", "input_kind", "output_kind", "general", "sla")
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
    text = json.dumps(view, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
