"""A client of a running niche gateway, over HTTP only (it imports nothing of
:mod:`niche.gateway`): what it serves, waiting for a promotion to be picked up, and chat
completions and feedback sent as an application would — plain HTTP (aiohttp) or the official
OpenAI SDK.

    >>> gateway_models("http://127.0.0.1:8000")
    {'assistant': {'champion': 2}}
    >>> wait_until_served("http://127.0.0.1:8000", "assistant", 2)
    1.2

Nothing answering at the URL, a refused key, or something that does not answer like a niche
gateway is a :class:`~niche.errors.ValidationError` naming the URL.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from niche.errors import NicheError, ValidationError

__all__ = [
    "CLIENTS",
    "HttpClient",
    "OpenAIClient",
    "Reply",
    "auth_headers",
    "base_url",
    "gateway_models",
    "reason",
    "served_models",
    "unreachable",
    "wait_until_served",
]

CLIENTS = ("http", "openai")
"""How requests are sent: ``http`` (aiohttp, always installed) or ``openai`` (the official
SDK, ``pip install openai``)."""

Clock = Callable[[], float]


def gateway_models(
    url: str, *, api_key: str | None = None, timeout_s: float = 10.0
) -> dict[str, dict[str, int]]:
    """What the gateway at ``url`` serves: each task and its served aliases' versions.

    >>> gateway_models("http://127.0.0.1:8000")
    {'assistant': {'champion': 2}}
    """
    base = base_url(url)
    request = urllib.request.Request(f"{base}/v1/models", headers=auth_headers(api_key))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
        exc.close()
    except OSError as exc:
        raise unreachable(base, exc) from exc
    return served_models(base, status, body)


def wait_until_served(
    url: str,
    task: str,
    version: int,
    *,
    alias: str = "champion",
    api_key: str | None = None,
    timeout_s: float = 60.0,
    poll_s: float = 0.2,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Block until the gateway at ``url`` serves ``version`` of ``task`` as ``alias`` (it
    picks a promotion up at its next refresh); the seconds it took.

    Raises :class:`~niche.errors.NicheError` when it does not within ``timeout_s``.

    >>> wait_until_served("http://127.0.0.1:8000", "assistant", 2)
    1.2
    """
    start = clock()
    while True:
        served = gateway_models(url, api_key=api_key).get(task, {})
        if served.get(alias) == version:
            return clock() - start
        if clock() - start > timeout_s:
            raise NicheError(
                f"the gateway at {base_url(url)} still serves {task} {alias} "
                f"{_version(served.get(alias))} after {timeout_s:.0f} s, not v{version} "
                "(it reloads every NICHE_GATEWAY_REFRESH_S; see its log)"
            )
        sleep(poll_s)


def _version(version: int | None) -> str:
    return "nothing" if version is None else f"v{version}"


def base_url(url: str) -> str:
    """The gateway's root: ``http://host:port`` (a trailing ``/v1`` or ``/`` dropped)."""
    base = url.strip().rstrip("/")
    base = base.removesuffix("/v1")
    if not base.startswith(("http://", "https://")):
        raise ValidationError(
            f"--url must be the gateway's http(s) URL, e.g. http://127.0.0.1:8000, got {url!r}",
            param="url",
        )
    return base


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def unreachable(base: str, exc: BaseException | str) -> ValidationError:
    reason = getattr(exc, "reason", None) or exc
    return ValidationError(
        f"nothing answers at {base} ({reason}): start the gateway with `niche serve`, or "
        "pass the URL it listens on with --url",
        param="url",
    )


def served_models(base: str, status: int, body: bytes) -> dict[str, dict[str, int]]:
    if status in (401, 403):
        raise ValidationError(
            f"the gateway at {base} refused the API key (HTTP {status}): pass one with "
            "--api-key or NICHE_REPLAY_API_KEY (`niche keys create --scope inference`)",
            param="api_key",
        )
    try:
        if status != 200:
            raise TypeError(status)
        payload = orjson.loads(body)
        models = {
            m["id"]: dict(m.get("niche") or {})
            for m in payload["data"]
            if m.get("owned_by") == "niche"
        }
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise ValidationError(
            f"{base} does not answer like a niche gateway (GET /v1/models: HTTP {status})",
            param="url",
        ) from exc
    return models


@dataclass(frozen=True)
class Reply:
    status: int
    answer: str | None = None
    route: str | None = None
    request_id: str | None = None
    error: str | None = None


class HttpClient:
    """Plain HTTP (aiohttp), as any application could send it."""

    name = "http"

    def __init__(self, base: str, key: str | None, timeout_s: float, concurrency: int) -> None:
        import aiohttp

        self.base = base
        self.session = aiohttp.ClientSession(
            headers=auth_headers(key),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(limit=concurrency * 2),
        )

    async def complete(self, task: str, text: str) -> Reply:
        import aiohttp

        body = {"model": task, "messages": [{"role": "user", "content": text}]}
        try:
            async with self.session.post(f"{self.base}/v1/chat/completions", json=body) as r:
                raw = await r.read()
                return reply(r.status, raw, r.headers.get("x-niche-route"))
        except TimeoutError:
            return Reply(status=0, error="timeout")
        except aiohttp.ClientError:
            return Reply(status=0, error="connection")

    async def feedback(self, request_id: str, label: str) -> int:
        import aiohttp

        body = {"request_id": request_id, "label": label}
        try:
            async with self.session.post(f"{self.base}/v1/feedback", json=body) as response:
                await response.read()
                return response.status
        except (TimeoutError, aiohttp.ClientError):
            return 0

    async def aclose(self) -> None:
        await self.session.close()


def reply(status: int, raw: bytes, route: str | None) -> Reply:
    if status != 200:
        return Reply(status=status)
    try:
        payload = orjson.loads(raw)
        answer = payload["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return Reply(status=status, error="malformed")
    niche = payload.get("niche") or {}
    return Reply(
        status=status,
        answer=answer,
        route=route or niche.get("route"),
        request_id=payload.get("id"),
    )


class OpenAIClient:
    """The official OpenAI SDK, as most applications call a model."""

    name = "openai"

    def __init__(self, base: str, key: str | None, timeout_s: float, concurrency: int) -> None:
        try:
            import openai
        except ImportError as exc:
            raise ValidationError(
                "--client openai needs the OpenAI SDK: pip install openai (or use --client http)",
                param="client",
            ) from exc
        # The local gateway needs no key, the SDK needs one: any placeholder will do.
        self.sdk = openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key=key or "local", max_retries=0, timeout=timeout_s
        )

    async def complete(self, task: str, text: str) -> Reply:
        import openai

        try:
            raw = await self.sdk.chat.completions.with_raw_response.create(
                model=task, messages=[{"role": "user", "content": text}]
            )
        except openai.APITimeoutError:
            return Reply(status=0, error="timeout")
        except openai.APIConnectionError:
            return Reply(status=0, error="connection")
        except openai.APIStatusError as exc:
            return Reply(status=exc.status_code)
        completion = raw.parse()
        niche = (completion.model_extra or {}).get("niche") or {}
        return Reply(
            status=raw.status_code,
            answer=completion.choices[0].message.content if completion.choices else None,
            route=raw.headers.get("x-niche-route") or niche.get("route"),
            request_id=completion.id,
        )

    async def feedback(self, request_id: str, label: str) -> int:
        import openai

        try:
            await self.sdk.post(
                "/feedback", cast_to=object, body={"request_id": request_id, "label": label}
            )
        except openai.APIStatusError as exc:
            return exc.status_code
        except openai.APIConnectionError:
            return 0
        return 200

    async def aclose(self) -> None:
        await self.sdk.close()


def reason(exc: BaseException) -> BaseException | str:
    """Why a request got no answer, as an error message says it."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return getattr(exc, "os_error", None) or exc
