"""One declarative table of ``NICHE_*`` settings.

Every knob niche reads from the environment is a row of :data:`SETTINGS`, with its default,
its type and a help text; units are part of the name (``_usd``, ``_s``, ``_ms``, ``_watts``).
A test checks that each one is documented in the README.

    >>> from niche.settings import Settings
    >>> Settings().home
    PosixPath('.niche')
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from niche.errors import ConfigurationError

__all__ = ["SETTINGS", "Setting", "Settings"]

_Default = str | int | float | None | Callable[["Settings"], Any]
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Setting:
    """One environment setting: ``name`` (``NICHE_…``), default, type and help text.

    A callable default is computed from the other settings (e.g. paths under ``NICHE_HOME``).
    """

    name: str
    default: _Default
    help: str
    type: type = str

    def parse(self, raw: str) -> Any:
        if self.type is str:
            return raw
        if self.type is bool:
            lowered = raw.strip().lower()
            if lowered in _TRUE or lowered in _FALSE:
                return lowered in _TRUE
            raise ConfigurationError(
                f"{self.name}={raw!r} is not a boolean (use 1/0, true/false, on/off)",
                setting=self.name,
            )
        try:
            return self.type(raw)
        except ValueError as exc:
            raise ConfigurationError(
                f"{self.name}={raw!r} is not a valid {self.type.__name__}", setting=self.name
            ) from exc


SETTINGS: tuple[Setting, ...] = (
    Setting("NICHE_HOME", ".niche", "Directory for niche's state: datasets, models, caches."),
    Setting(
        "NICHE_DATASETS",
        None,
        "Directory with local copies of catalog datasets (one folder per dataset, e.g. "
        "banking77/). When unset or missing a file, the catalog downloads it instead.",
    ),
    Setting(
        "NICHE_DATASET_MIRROR",
        None,
        "Base URL that replaces https://raw.githubusercontent.com in catalog download URLs "
        "(for a mirror or an air-gapped copy).",
    ),
    Setting(
        "NICHE_DATABASE_URL",
        lambda s: f"sqlite:///{s.home / 'niche.db'}",
        "SQLAlchemy URL of the registry database (SQLite under NICHE_HOME by default).",
    ),
    Setting(
        "NICHE_ARTIFACTS_URL",
        lambda s: str(s.home / "artifacts"),
        "Where model artifacts and dataset files are stored, content-addressed: a local directory or any fsspec "
        "URL (s3://bucket/prefix, gs://…, memory://… for tests).",
    ),
    Setting(
        "NICHE_CACHE_DIR",
        lambda s: str(s.home / "cache"),
        "Directory for the exported encoder, the embedding cache and the head cache.",
    ),
    Setting(
        "NICHE_CPU_HOUR_USD",
        0.045,
        "Price of one CPU core for one hour, in USD (cost per 1M predictions).",
        float,
    ),
    Setting(
        "NICHE_CPU_WATTS_PER_CORE",
        10.0,
        "Power drawn by one busy CPU core, in watts (energy per query, CodeCarbon's "
        "TDP fallback method).",
        float,
    ),
    Setting(
        "NICHE_ENCODER_PRECISION",
        "int8-static",
        "Precision of the ONNX text encoder: int8-static (activation scales calibrated once: "
        "a text's vector does not depend on its batch), int8 (dynamic quantisation) or fp32.",
    ),
    Setting(
        "NICHE_ENCODER_THREADS",
        0,
        "onnxruntime intra-op threads for the encoder; 0 means one per CPU core.",
        int,
    ),
    Setting("NICHE_ENCODER_BATCH_SIZE", 64, "Texts per encoder batch.", int),
    Setting("NICHE_ENCODER_MAX_TOKENS", 256, "Texts are truncated to this many tokens.", int),
    Setting(
        "NICHE_HEAD_CACHE",
        True,
        "Whether training reuses a head fitted before on the same data, kind, options, "
        "encoder and metric (cached under NICHE_CACHE_DIR/heads) instead of refitting.",
        bool,
    ),
    Setting("NICHE_SEED", 0, "Seed for splits, bootstrap resampling and training.", int),
    Setting(
        "NICHE_BOOTSTRAP_RESAMPLES",
        1000,
        "Bootstrap resamples for confidence intervals and paired tests.",
        int,
    ),
    # -- the general model (per task in its spec, or these for every task and pass-through) --
    Setting(
        "NICHE_GENERAL_BASE_URL",
        None,
        "Base URL of the OpenAI-compatible general model (e.g. https://api.openai.com/v1). The "
        "gateway passes unknown models through to it and cascades tasks without their own.",
    ),
    Setting("NICHE_GENERAL_MODEL", None, "Model name the gateway asks the general model for."),
    Setting(
        "NICHE_GENERAL_API_KEY_ENV",
        None,
        "Name of the environment variable holding the general model's API key (never the key).",
    ),
    Setting(
        "NICHE_GENERAL_PRICE_INPUT_PER_1M_TOKENS_USD",
        0.0,
        "Price of 1M input tokens of the global general model, in USD (cost and budgets).",
        float,
    ),
    Setting(
        "NICHE_GENERAL_PRICE_OUTPUT_PER_1M_TOKENS_USD",
        0.0,
        "Price of 1M output tokens of the global general model, in USD.",
        float,
    ),
    Setting(
        "NICHE_GENERAL_MAX_TOKENS",
        64,
        "Most tokens the global general model may generate per cascade or shadow answer (a "
        "label needs a few; a task's own general model sets general.max_tokens).",
        int,
    ),
    Setting(
        "NICHE_GENERAL_RESPONSE_FORMAT",
        "auto",
        "How the global general model is asked for a label: json_schema (OpenAI, vLLM), "
        "json_object (llama.cpp's server), text, or auto (json_schema, then json_object, then "
        "text, each step once per endpoint on a 400/422 refusal).",
        str,
    ),
    # -- the general model in evaluation and gates (a remote endpoint, kind `remote`) --
    Setting(
        "NICHE_EVALUATION_GENERAL_ROWS",
        None,
        "Most rows an endpoint general model is asked in `niche evaluate` and gates: a seeded "
        "sample of the split, stated in the report with its wider interval (unset: every row).",
        int,
    ),
    Setting(
        "NICHE_REMOTE_CONCURRENCY",
        4,
        "Calls a remote predictor (an endpoint general model in evaluation) makes at once.",
        int,
    ),
    Setting(
        "NICHE_REMOTE_TIMEOUT_S",
        60.0,
        "Seconds one call of a remote predictor may take before it is retried.",
        float,
    ),
    Setting(
        "NICHE_REMOTE_RETRIES",
        3,
        "Retries of a remote predictor's call on a transient error (connection, timeout, HTTP "
        "429 or 5xx), with exponential backoff.",
        int,
    ),
    # -- the closed loop (`niche loop`) --
    Setting(
        "NICHE_LOOP_INTERVAL_S",
        600.0,
        "Seconds between two passes of `niche loop` (without --once) when --interval is not given.",
        float,
    ),
    Setting(
        "NICHE_LOOP_LEASE_TTL_S",
        1800.0,
        "Seconds a loop's lease on a task lasts unless renewed (it is renewed between steps): "
        "longer than any one step (a training), so a crashed loop's task is free again after it.",
        float,
    ),
    # -- the gateway (`niche serve`) --
    Setting(
        "NICHE_GATEWAY_TIMEOUT_S",
        30.0,
        "Upstream timeout in seconds for tasks that set none (serving.timeout_s) and for "
        "pass-through requests.",
        float,
    ),
    Setting(
        "NICHE_GATEWAY_MAX_CONCURRENCY",
        256,
        "Requests the gateway serves at once; more get 429 with Retry-After.",
        int,
    ),
    Setting(
        "NICHE_GATEWAY_MAX_BODY_BYTES",
        1_048_576,
        "Largest request body accepted, in bytes (larger: 413).",
        int,
    ),
    Setting(
        "NICHE_GATEWAY_BATCH_MAX",
        32,
        "Concurrent specialist requests micro-batched into one encoder call, at most.",
        int,
    ),
    Setting(
        "NICHE_GATEWAY_BATCH_WAIT_MS",
        2.0,
        "How long a micro-batch waits for more requests after its first, in milliseconds.",
        float,
    ),
    Setting(
        "NICHE_GATEWAY_SHADOW_FRACTION",
        0.05,
        "Fraction of each task's requests drawn at random, whatever the specialist's "
        "confidence, to get the general model's label too (in the background when the "
        "specialist answers): the unbiased teacher sample that monitoring and distillation "
        "read. 0 turns it off; tasks may set serving.shadow_fraction.",
        float,
    ),
    Setting(
        "NICHE_GATEWAY_CANARY_FRACTION",
        0.0,
        "Fraction of a task's requests answered by its `challenger` alias, when it has one "
        "(tasks may set serving.canary_fraction).",
        float,
    ),
    Setting(
        "NICHE_GATEWAY_CAPTURE",
        True,
        "Whether the gateway records every request as traffic (tasks may turn it off).",
        bool,
    ),
    Setting(
        "NICHE_GATEWAY_REDACT",
        None,
        "A `module:function` called on each traffic record before it is stored; it returns "
        "the record to store (e.g. with emails masked in `input` and `text`) or None to drop "
        "it. When it changes `input` but leaves `text` as it was, `text` is not stored.",
    ),
    Setting(
        "NICHE_GATEWAY_CAPTURE_FLUSH_MS",
        200.0,
        "How often the capture writer flushes traffic records to the database, in ms.",
        float,
    ),
    # -- traffic capture: what a record may hold, where refused records go, how long to keep --
    Setting(
        "NICHE_GATEWAY_CAPTURE_MAX_INPUT_BYTES",
        65_536,
        "Largest input stored in a traffic record, in bytes of JSON; a longer one is clipped "
        "and its original size kept in the record's input_bytes.",
        int,
    ),
    Setting(
        "NICHE_TRAFFIC_DEAD_LETTER_DIR",
        lambda s: str(s.home / "dead-letters"),
        "Directory of the dead-letter file (traffic.jsonl): traffic records the database "
        "refused or could not take in time (`niche traffic dead-letters`).",
    ),
    Setting(
        "NICHE_TRAFFIC_RETENTION_DAYS",
        None,
        "Days traffic records are kept: the gateway deletes older ones every hour, and "
        "`niche traffic prune` without --older-than does (unset: kept until pruned).",
        int,
    ),
    Setting(
        "NICHE_GATEWAY_REFRESH_S",
        2.0,
        "How often the gateway re-reads tasks, aliases and keys (promotions take effect "
        "within this many seconds, without a restart).",
        float,
    ),
    Setting(
        "NICHE_GATEWAY_BREAKER_FAILURES",
        5,
        "Consecutive upstream failures that open the circuit breaker.",
        int,
    ),
    Setting(
        "NICHE_GATEWAY_BREAKER_RESET_S",
        30.0,
        "Seconds an open circuit breaker waits before letting one trial request through.",
        float,
    ),
    # -- bounded clients: what one client (or a slow one) may hold of the gateway --
    Setting(
        "NICHE_GATEWAY_HEADER_TIMEOUT_S",
        10.0,
        "Seconds a client has to send a request's headers, from connecting or from the first "
        "byte of a request on a kept-alive connection (then 408 and the connection closes).",
        float,
    ),
    Setting(
        "NICHE_GATEWAY_BODY_TIMEOUT_S",
        10.0,
        "Seconds a client has to send a request's whole body (then 408); a request takes one "
        "of NICHE_GATEWAY_MAX_CONCURRENCY's slots only once its body is read.",
        float,
    ),
    Setting(
        "NICHE_GATEWAY_SPECIALIST_TIMEOUT_S",
        10.0,
        "Seconds a specialist has to answer an input, waiting for its batch included; past "
        "it the input cascades to the general model.",
        float,
    ),
    Setting(
        "NICHE_GATEWAY_PREDICT_MAX_INPUTS",
        256,
        "Most inputs in one /v1/tasks/{task}/predict call (more: 400).",
        int,
    ),
    Setting(
        "NICHE_GATEWAY_PREDICT_MAX_CHARS",
        262_144,
        "Most characters in all inputs of one /v1/tasks/{task}/predict call (more: 413).",
        int,
    ),
    Setting(
        "NICHE_GATEWAY_PREDICT_CONCURRENCY",
        8,
        "Inputs of one /v1/tasks/{task}/predict call answered at once: bounds the call's "
        "general-model calls, and lets other requests to the task interleave with it.",
        int,
    ),
    # -- the gateway through a registry outage, and budgets --
    Setting(
        "NICHE_GATEWAY_KEY_STALE_S",
        300.0,
        "How long a key's last good verdict is used while the registry database cannot be "
        "reached, in seconds (a key never verified gets 503 with Retry-After meanwhile).",
        float,
    ),
    Setting(
        "NICHE_GATEWAY_RESERVATION_TTL_S",
        600.0,
        "Seconds a budgeted request's reservation of its worst-case cost is held when nobody "
        "settles it (a crashed worker's lapses then); longer than any request runs.",
        float,
    ),
    Setting(
        "NICHE_GATEWAY_PASSTHROUGH_MAX_TOKENS",
        4096,
        "Output tokens a budgeted pass-through request is assumed to cost at worst when it "
        "sets no max_tokens or max_completion_tokens.",
        int,
    ),
    # -- the dashboard (`niche serve` at /ui) --
    Setting(
        "NICHE_UI_REFRESH_S",
        10.0,
        "Seconds between two refreshes of the dashboard's numbers in an open page; the figures "
        "behind them are computed at most once per this many seconds, however many pages are open.",
        float,
    ),
    Setting(
        "NICHE_UI_SESSION_S",
        28_800,
        "Seconds a dashboard login lasts (the session cookie's Max-Age; default 8 hours).",
        int,
    ),
    Setting(
        "NICHE_UI_SINCE",
        None,
        "Traffic window of the dashboard's leaderboard figures: ISO-8601 or a duration back "
        "from now (30d); unset: all captured traffic, as `niche leaderboard`.",
    ),
    # -- monitoring alerts --
    Setting(
        "NICHE_ALERT_WEBHOOKS",
        None,
        "Comma-separated http(s) URLs that each opened or resolved monitoring alert is "
        "POSTed to as JSON, in the background, retried with backoff (unset: none).",
    ),
    Setting(
        "NICHE_ALERT_WEBHOOK_TIMEOUT_S",
        5.0,
        "Seconds one alert webhook call may take before it is abandoned (and retried).",
        float,
    ),
    # -- total cost of ownership (`niche tco`) --
    Setting(
        "NICHE_GRID_GCO2E_PER_KWH",
        480.0,
        "Carbon intensity of the electricity, in gCO2e per kWh (emissions in `niche tco`). "
        "Default: the 2023 world average, 480 g/kWh (Ember, Global Electricity Review 2024); "
        "set your grid's.",
        float,
    ),
    Setting(
        "NICHE_GENERAL_WH_PER_1K_TOKENS",
        2.0,
        "Energy of the general model per 1,000 output tokens, in Wh (`niche tco`). Default: "
        "an order-of-magnitude figure for a mid-size (~70B) model in the range EcoLogits "
        "publishes (ecologits.ai); set your model's from its calculator.",
        float,
    ),
    Setting(
        "NICHE_TCO_TRAINING_CPU_S",
        600.0,
        "CPU-seconds one training of a specialist is assumed to take when its model's lineage "
        "records no fit_seconds (`niche tco`).",
        float,
    ),
    Setting(
        "NICHE_TCO_RETRAIN_EVERY_MONTHS",
        1,
        "A specialist is retrained every this many months after its first training in month "
        "1 (`niche tco`); 0: never retrained.",
        int,
    ),
    Setting(
        "NICHE_TCO_MAINTENANCE_USD_PER_MONTH",
        0.0,
        "Maintenance allowance per specialised task per month, in USD (`niche tco`).",
        float,
    ),
    # -- niche replay: a client of a gateway --
    Setting(
        "NICHE_REPLAY_API_KEY",
        None,
        "API key `niche replay` sends to the gateway (unset: none, the gateway's local mode); "
        "--api-key wins. Never logged.",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


class Settings:
    """Values of :data:`SETTINGS`, read from ``environ`` (default ``os.environ``).

    ``overrides`` (keyword names without the ``NICHE_`` prefix, lower case) win over the
    environment: ``Settings(home="/tmp/x")``.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, **overrides: Any) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._overrides: dict[str, Any] = {}
        for key, value in overrides.items():
            name = "NICHE_" + key.upper()
            if name not in _BY_NAME:
                raise ConfigurationError(f"unknown setting {key!r}", setting=name)
            self._overrides[name] = value

    def get(self, name: str) -> Any:
        """The value of setting ``name`` (``NICHE_…``), parsed to its type."""
        setting = _BY_NAME.get(name)
        if setting is None:
            raise ConfigurationError(f"unknown setting {name!r}", setting=name)
        if name in self._overrides:
            return self._overrides[name]
        raw = self._environ.get(name)
        if raw is not None and raw != "":
            return setting.parse(raw)
        default = setting.default
        return default(self) if callable(default) else default

    def source(self, name: str) -> str:
        """Where the value of ``name`` comes from: ``override``, ``env`` or ``default``."""
        if name in self._overrides:
            return "override"
        if self._environ.get(name):
            return "env"
        return "default"

    def table(self) -> list[dict[str, Any]]:
        """Every setting with its value, source and help, for ``niche settings``."""
        return [
            {
                "name": s.name,
                "value": self.get(s.name),
                "source": self.source(s.name),
                "help": s.help,
            }
            for s in SETTINGS
        ]

    @property
    def home(self) -> Path:
        return Path(self.get("NICHE_HOME"))

    @property
    def cache_dir(self) -> Path:
        return Path(self.get("NICHE_CACHE_DIR"))

    @property
    def datasets_dir(self) -> Path | None:
        value = self.get("NICHE_DATASETS")
        return Path(value) if value else None
