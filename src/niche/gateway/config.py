"""The gateway's configuration, read once from ``NICHE_*`` settings.

>>> config = GatewayConfig.from_settings(Settings())
>>> config.max_concurrency
256
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from niche.errors import ConfigurationError
from niche.registry.tasks import GeneralModelSpec, global_general_model
from niche.settings import Settings

__all__ = ["GatewayConfig", "load_redactor"]


def _positive(value: float, name: str) -> None:
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, got {value!r}", setting=name)


def _fraction(value: float, name: str) -> None:
    if not 0 <= value <= 1:
        raise ConfigurationError(f"{name} must be in [0, 1], got {value!r}", setting=name)


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway reads from settings; tasks may override the serving fields."""

    general: GeneralModelSpec | None
    timeout_s: float
    max_concurrency: int
    max_body_bytes: int
    batch_max: int
    batch_wait_s: float
    shadow_fraction: float
    canary_fraction: float
    capture: bool
    redact: str | None
    capture_flush_s: float
    refresh_s: float
    breaker_failures: int
    breaker_reset_s: float
    cpu_hour_usd: float
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    specialist_timeout_s: float = 10.0
    predict_max_inputs: int = 256
    predict_max_chars: int = 262_144
    predict_concurrency: int = 8
    key_stale_s: float = 300.0
    reservation_ttl_s: float = 600.0
    passthrough_max_tokens: int = 4096

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayConfig:
        general = global_general_model(settings)
        config = cls(
            general=general,
            timeout_s=settings.get("NICHE_GATEWAY_TIMEOUT_S"),
            max_concurrency=settings.get("NICHE_GATEWAY_MAX_CONCURRENCY"),
            max_body_bytes=settings.get("NICHE_GATEWAY_MAX_BODY_BYTES"),
            batch_max=settings.get("NICHE_GATEWAY_BATCH_MAX"),
            batch_wait_s=settings.get("NICHE_GATEWAY_BATCH_WAIT_MS") / 1000.0,
            shadow_fraction=settings.get("NICHE_GATEWAY_SHADOW_FRACTION"),
            canary_fraction=settings.get("NICHE_GATEWAY_CANARY_FRACTION"),
            capture=settings.get("NICHE_GATEWAY_CAPTURE"),
            redact=settings.get("NICHE_GATEWAY_REDACT"),
            capture_flush_s=settings.get("NICHE_GATEWAY_CAPTURE_FLUSH_MS") / 1000.0,
            refresh_s=settings.get("NICHE_GATEWAY_REFRESH_S"),
            breaker_failures=settings.get("NICHE_GATEWAY_BREAKER_FAILURES"),
            breaker_reset_s=settings.get("NICHE_GATEWAY_BREAKER_RESET_S"),
            cpu_hour_usd=settings.get("NICHE_CPU_HOUR_USD"),
            header_timeout_s=settings.get("NICHE_GATEWAY_HEADER_TIMEOUT_S"),
            body_timeout_s=settings.get("NICHE_GATEWAY_BODY_TIMEOUT_S"),
            specialist_timeout_s=settings.get("NICHE_GATEWAY_SPECIALIST_TIMEOUT_S"),
            predict_max_inputs=settings.get("NICHE_GATEWAY_PREDICT_MAX_INPUTS"),
            predict_max_chars=settings.get("NICHE_GATEWAY_PREDICT_MAX_CHARS"),
            predict_concurrency=settings.get("NICHE_GATEWAY_PREDICT_CONCURRENCY"),
            key_stale_s=settings.get("NICHE_GATEWAY_KEY_STALE_S"),
            reservation_ttl_s=settings.get("NICHE_GATEWAY_RESERVATION_TTL_S"),
            passthrough_max_tokens=settings.get("NICHE_GATEWAY_PASSTHROUGH_MAX_TOKENS"),
        )
        for name, value in (
            ("NICHE_GATEWAY_TIMEOUT_S", config.timeout_s),
            ("NICHE_GATEWAY_MAX_CONCURRENCY", config.max_concurrency),
            ("NICHE_GATEWAY_MAX_BODY_BYTES", config.max_body_bytes),
            ("NICHE_GATEWAY_BATCH_MAX", config.batch_max),
            ("NICHE_GATEWAY_CAPTURE_FLUSH_MS", config.capture_flush_s),
            ("NICHE_GATEWAY_REFRESH_S", config.refresh_s),
            ("NICHE_GATEWAY_BREAKER_FAILURES", config.breaker_failures),
            ("NICHE_GATEWAY_BREAKER_RESET_S", config.breaker_reset_s),
            ("NICHE_GATEWAY_HEADER_TIMEOUT_S", config.header_timeout_s),
            ("NICHE_GATEWAY_BODY_TIMEOUT_S", config.body_timeout_s),
            ("NICHE_GATEWAY_SPECIALIST_TIMEOUT_S", config.specialist_timeout_s),
            ("NICHE_GATEWAY_PREDICT_MAX_INPUTS", config.predict_max_inputs),
            ("NICHE_GATEWAY_PREDICT_MAX_CHARS", config.predict_max_chars),
            ("NICHE_GATEWAY_PREDICT_CONCURRENCY", config.predict_concurrency),
            ("NICHE_GATEWAY_RESERVATION_TTL_S", config.reservation_ttl_s),
            ("NICHE_GATEWAY_PASSTHROUGH_MAX_TOKENS", config.passthrough_max_tokens),
        ):
            _positive(value, name)
        if config.batch_wait_s < 0:
            raise ConfigurationError(
                "NICHE_GATEWAY_BATCH_WAIT_MS must not be negative",
                setting="NICHE_GATEWAY_BATCH_WAIT_MS",
            )
        if config.key_stale_s < 0:
            raise ConfigurationError(
                "NICHE_GATEWAY_KEY_STALE_S must not be negative (0: no stale verdicts)",
                setting="NICHE_GATEWAY_KEY_STALE_S",
            )
        _fraction(config.shadow_fraction, "NICHE_GATEWAY_SHADOW_FRACTION")
        _fraction(config.canary_fraction, "NICHE_GATEWAY_CANARY_FRACTION")
        return config


def load_redactor(spec: str | None) -> Callable[[Any], Any] | None:
    """The ``module:function`` named by ``NICHE_GATEWAY_REDACT``, imported, or None."""
    if not spec:
        return None
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"NICHE_GATEWAY_REDACT={spec!r} must look like 'package.module:function'",
            setting="NICHE_GATEWAY_REDACT",
        )
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"NICHE_GATEWAY_REDACT={spec!r} cannot be imported: {exc}",
            setting="NICHE_GATEWAY_REDACT",
        ) from exc
    if not callable(function):
        raise ConfigurationError(
            f"NICHE_GATEWAY_REDACT={spec!r} is not callable", setting="NICHE_GATEWAY_REDACT"
        )
    redactor: Callable[[Any], Any] = function
    return redactor
