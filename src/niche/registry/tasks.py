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
    "LOOP_TRIGGERS",
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
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
# A label answer needs a few tokens; JSON around it a few more.
DEFAULT_MAX_TOKENS = 64
DEFAULT_MIN_AGREEMENT = 0.8
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
        _non_negative(self.latency_p95_ms, "sla.latency_p95_ms")
        _non_negative(self.max_cost_per_1k_usd, "sla.max_cost_per_1k_usd")
        if self.min_quality is not None and not 0 <= self.min_quality <= 1:
            raise ValidationError(f"sla.min_quality must be in [0, 1], got {self.min_quality}")
        _fraction(self.min_agreement_with_general, "sla.min_agreement_with_general")
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
        _fraction(self.shadow_fraction, "serving.shadow_fraction")
        _fraction(self.canary_fraction, "serving.canary_fraction")
        if not isinstance(self.capture, bool):
            raise ValidationError(f"serving.capture must be true or false, got {self.capture!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingSpec:
        return cls(**_strict(cls, data, "serving"))


def _count(value: Any, name: str, *, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _alpha(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValidationError(
            f"{name} must be a false-alarm rate in (0, 1), e.g. 0.01, got {value!r}"
        )


_DURATION = re.compile(r"^\d+[smhdw]$")  # as parse_since reads it: whole units


@dataclass(frozen=True)
class MonitoringSpec:
    """How ``niche monitor`` judges a task's champion; each ``*_alpha`` is the false-alarm
    rate of one check (its p-value threshold), each ``min_*`` a floor.

    ``window``: the latest ``N`` records (an integer) or a duration back from now (``"1h"``).
    A window of fewer than ``min_rows`` records is reported but raises no alarm.
    ``reference_rows``: how many of the champion's training rows (a seeded sample) make the
    reference, with the traffic of its first serving window. ``min_agreement``: live
    agreement with the general model whose Wilson upper bound falls below it alarms.
    ``min_accuracy``: the floor for accuracy on gold labels and its calibrated estimate
    (None: the SLA's ``min_quality``). ``max_error_rate``: share of failed requests.

        >>> MonitoringSpec(window="1h", input_drift_alpha=0.001).window
        '1h'
    """

    window: int | str = 500
    min_rows: int = 50
    reference_rows: int = 2000
    input_drift_alpha: float = 0.01
    prediction_drift_alpha: float = 0.01
    confidence_drift_alpha: float = 0.01
    cascade_rate_alpha: float = 0.01
    min_agreement: float | None = 0.8
    min_accuracy: float | None = None
    max_error_rate: float | None = 0.05

    def __post_init__(self) -> None:
        window = self.window
        if isinstance(window, bool) or not (
            (isinstance(window, int) and window >= 1)
            or (isinstance(window, str) and _DURATION.match(window))
        ):
            raise ValidationError(
                "monitoring.window must be a number of records (>= 1) or a duration such as "
                f"'30m', '1h', '2d', got {window!r}"
            )
        _count(self.min_rows, "monitoring.min_rows", minimum=1)
        _count(self.reference_rows, "monitoring.reference_rows", minimum=10)
        for name in ("input_drift", "prediction_drift", "confidence_drift", "cascade_rate"):
            _alpha(getattr(self, f"{name}_alpha"), f"monitoring.{name}_alpha")
        _fraction(self.min_agreement, "monitoring.min_agreement")
        _fraction(self.min_accuracy, "monitoring.min_accuracy")
        _fraction(self.max_error_rate, "monitoring.max_error_rate")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MonitoringSpec:
        return cls(**_strict(cls, data, "monitoring"))


LOOP_TRIGGERS = ("first", "drift", "agreement", "accuracy", "new_rows", "schedule")
"""What may start a retrain: ``first`` (traffic but no champion yet), ``drift`` (an open
drift alarm), ``agreement`` / ``accuracy`` (below the monitoring floor), ``new_rows``
(``loop.new_rows`` teacher-labelled rows since the champion's training), ``schedule``
(``loop.schedule_s`` since the champion's training)."""


@dataclass(frozen=True)
class LoopSpec:
    """What ``niche loop`` may do for a task, on its own.

    ``enabled``: whether the loop touches the task at all. ``triggers``: which of
    :data:`LOOP_TRIGGERS` start a retrain. ``min_rows``: the fewest labelled records (teacher
    or gold) a distilled dataset needs. ``new_rows``: the ``new_rows`` trigger's count.
    ``cooldown_s``: the least time between two trainings of the task; ``max_retrains_per_day``:
    trainings in any 24 hours. ``schedule_s``: the ``schedule`` trigger's period (None: off).
    ``since``: how far back distillation reads (a duration; None: all captured traffic).

        >>> LoopSpec(min_rows=300, triggers=("first", "drift")).cooldown_s
        3600.0
    """

    enabled: bool = True
    triggers: tuple[str, ...] = ("first", "drift", "agreement", "accuracy", "new_rows")
    min_rows: int = 200
    new_rows: int = 1000
    cooldown_s: float = 3600.0
    max_retrains_per_day: int = 6
    schedule_s: float | None = None
    since: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValidationError(f"loop.enabled must be true or false, got {self.enabled!r}")
        triggers = self.triggers
        if isinstance(triggers, str) or not all(isinstance(t, str) for t in triggers):
            raise ValidationError(
                f"loop.triggers must be a list of {', '.join(LOOP_TRIGGERS)}, got {triggers!r}"
            )
        unknown = sorted(set(triggers) - set(LOOP_TRIGGERS))
        if unknown:
            raise ValidationError(
                f"loop.triggers: unknown trigger(s) {', '.join(unknown)}; known: "
                f"{', '.join(LOOP_TRIGGERS)}"
            )
        object.__setattr__(self, "triggers", tuple(dict.fromkeys(triggers)))
        _count(self.min_rows, "loop.min_rows", minimum=2)
        _count(self.new_rows, "loop.new_rows", minimum=1)
        _count(self.max_retrains_per_day, "loop.max_retrains_per_day", minimum=0)
        _non_negative(self.cooldown_s, "loop.cooldown_s")
        object.__setattr__(self, "cooldown_s", float(self.cooldown_s))
        if self.schedule_s is not None:
            if isinstance(self.schedule_s, bool) or not isinstance(self.schedule_s, int | float):
                raise ValidationError(f"loop.schedule_s must be seconds, got {self.schedule_s!r}")
            if self.schedule_s <= 0:
                raise ValidationError(f"loop.schedule_s must be positive, got {self.schedule_s}")
        if self.since is not None and not (
            isinstance(self.since, str) and _DURATION.match(self.since)
        ):
            raise ValidationError(f"loop.since must be a duration such as '7d', got {self.since!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopSpec:
        data = dict(_strict(cls, data, "loop"))
        if isinstance(data.get("triggers"), list):
            data["triggers"] = tuple(data["triggers"])
        return cls(**data)


_SECTIONS: dict[str, Any] = {}


def _json_ready(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in items}


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
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    loop: LoopSpec = field(default_factory=LoopSpec)
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
        """A JSON-ready dict (tuples as lists, as JSON reads them back); :meth:`from_dict`
        reads it back."""
        return asdict(self, dict_factory=_json_ready)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        data = dict(_strict(cls, data, "task"))
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
        data = dict(_strict(type(self), changes, f"task {self.name}"))
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
    # Added after gates were first stored: at its default it is left out, so the decisions
    # stored before it still hold.
    if view["sla"].get("min_agreement_with_general") == DEFAULT_MIN_AGREEMENT:
        del view["sla"]["min_agreement_with_general"]
    text = json.dumps(view, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
