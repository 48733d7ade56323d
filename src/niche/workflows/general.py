"""``niche general check``: one probe of a task's general model (or the gateway's own), to see
that it answers, how fast, and whether its answer maps to a label — before traffic finds out.

    >>> check = check_general("banking77")
    >>> check.latency_ms, check.answer, check.label, check.format_accepted
    (412.0, '{"label": "card_arrival"}', 'card_arrival', True)

The probe is the request the gateway's cascade sends (:func:`niche.specialists.prompting.
chat_request`: the task's prompt, ``max_tokens``, ``stop`` and constrained format), sent once
with the standard library's HTTP client (one call needs no connection pool). Under
``response_format: auto`` a refused format (400/422) steps down as the gateway does, and the
check says which was accepted.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from niche.errors import ConfigurationError, UpstreamError, UpstreamTimeoutError
from niche.registry.tasks import GeneralModelSpec, global_general_model
from niche.settings import Settings
from niche.specialists.prompting import (
    chat_request,
    first_format,
    map_answer,
    next_format,
    render_prompt,
    reply_content,
    reply_usage,
)
from niche.workflows._context import resolve

if TYPE_CHECKING:
    from niche.registry import Registry

__all__ = ["PROBE_LABELS", "PROBE_TEXT", "GeneralCheck", "check_general"]

PROBE_TEXT = "Hello! I would like to know where my card is: it has not arrived yet."
"""What the probe asks about when the caller gives no text."""
PROBE_LABELS = ("question", "complaint", "greeting")
"""The labels of a probe of the gateway's own general model (no task to take them from)."""


@dataclass(frozen=True)
class GeneralCheck:
    """What one probe of a general model found.

    ``formats`` is each response format asked for with the HTTP status it got (more than
    one when ``auto`` stepped down); ``format_accepted`` is whether the one asked for first
    was taken (None: ``text`` was asked, nothing to accept).
    """

    task: str | None
    model: str
    base_url: str
    text: str
    labels: list[str]
    latency_ms: float
    status: int
    answer: str | None
    label: str | None
    response_format: str
    format_accepted: bool | None
    formats: list[tuple[str, int]] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def maps_to_label(self) -> bool:
        return self.label is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``maps_to_label``."""
        return asdict(self) | {"maps_to_label": self.maps_to_label}


def _spec_for(
    task: str | None, settings: Settings, registry: Registry | None
) -> tuple[GeneralModelSpec, list[str]]:
    fallback = global_general_model(settings)
    if task is None:
        if fallback is None:
            raise ConfigurationError(
                "no general model is configured: set NICHE_GENERAL_BASE_URL and "
                "NICHE_GENERAL_MODEL, or name a task whose general.kind is 'openai'",
                setting="NICHE_GENERAL_BASE_URL",
            )
        return fallback, list(PROBE_LABELS)
    _, registry = resolve(settings, registry)
    spec = registry.tasks.get(task).spec
    labels = list(spec.labels) or list(PROBE_LABELS)
    if spec.general.kind == "openai":
        return spec.general, labels
    if fallback is None:
        raise ConfigurationError(
            f"task {task} has no general model endpoint (general.kind is "
            f"{spec.general.kind!r}: the offline zero-shot model) and NICHE_GENERAL_BASE_URL "
            f"is unset; set one with `niche tasks edit {task} --set general.kind=openai "
            "--set general.base_url=… --set general.model=…`",
            setting="NICHE_GENERAL_BASE_URL",
        )
    return fallback, labels


def _post(
    url: str, body: dict[str, Any], headers: dict[str, str], timeout_s: float, model: str
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:  # an answer, of a refusing status
        return exc.code, exc.read()
    except TimeoutError as exc:
        raise UpstreamTimeoutError(
            f"general model {model} at {url} did not answer within {timeout_s:g} s"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise UpstreamTimeoutError(
                f"general model {model} at {url} did not answer within {timeout_s:g} s"
            ) from exc
        raise UpstreamError(
            f"general model {model} at {url} cannot be reached: {reason} (is it running?)"
        ) from exc


def check_general(
    task: str | None = None,
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    text: str | None = None,
    timeout_s: float | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> GeneralCheck:
    """Send one probe to ``task``'s general model (its own endpoint, else the gateway's;
    no task: the gateway's) and report what came back.

    Raises :class:`ConfigurationError` (exit 2) when no general model endpoint is
    configured or its key variable is unset, :class:`UpstreamError` (exit 1; its timeout
    kind too) when the endpoint is down, too slow or refuses the probe.

    >>> check_general(None).maps_to_label
    True
    """
    settings = settings or Settings()
    spec, labels = _spec_for(task, settings, registry)
    environ = os.environ if environ is None else environ
    headers = {"content-type": "application/json"}
    if spec.api_key_env:
        key = environ.get(spec.api_key_env)
        if not key:
            raise ConfigurationError(
                f"general model {spec.model}: environment variable {spec.api_key_env} "
                "(its API key) is not set",
                setting=spec.api_key_env,
            )
        headers["authorization"] = f"Bearer {key}"
    timeout_s = timeout_s or settings.get("NICHE_GATEWAY_TIMEOUT_S")
    url = (spec.base_url or "").rstrip("/") + "/chat/completions"
    model = spec.model or ""
    text = text or PROBE_TEXT
    prompt = render_prompt(spec.prompt_template, text, labels)
    asked = kind = first_format(spec.response_format)
    formats: list[tuple[str, int]] = []
    while True:
        body = chat_request(
            model,
            prompt,
            labels,
            max_tokens=spec.max_tokens,
            stop=spec.stop,
            response_format=kind,
        )
        started = clock()
        status, payload = _post(url, body, headers, timeout_s, model)
        latency_ms = (clock() - started) * 1000.0
        formats.append((kind, status))
        fallback = next_format(spec.response_format, kind, status)
        if fallback is not None:
            kind = fallback
            continue
        break
    if status >= 400:
        raise UpstreamError(
            f"general model {model} at {url} answered HTTP {status}: "
            f"{payload[:300].decode('utf-8', 'replace')}",
            status=status,
        )
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise UpstreamError(
            f"general model {model} at {url} answered with invalid JSON ({exc})", status=status
        ) from exc
    answer = reply_content(data)
    input_tokens, output_tokens = reply_usage(data)
    return GeneralCheck(
        task=task,
        model=model,
        base_url=spec.base_url or "",
        text=text,
        labels=labels,
        latency_ms=round(latency_ms, 1),
        status=status,
        answer=answer,
        label=map_answer(answer, labels),
        response_format=kind,
        format_accepted=None if asked == "text" else kind == asked,
        formats=formats,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )
