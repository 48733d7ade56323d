"""The OpenAI wire format: request checks, chat completions, SSE chunks and error bodies.

Only what the gateway needs is checked (the model, the messages, ``stream``); every other
field passes through to the general model untouched.

    >>> request = parse_chat_request(b'{"model": "banking77", "messages": '
    ...                              b'[{"role": "user", "content": "card?"}]}')
    >>> last_user_text(request["messages"])
    'card?'
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from niche.errors import (
    AuthenticationError,
    BudgetExceededError,
    ConflictError,
    DatabaseError,
    GateRefusedError,
    NicheError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestError,
    UpstreamError,
)
from niche.specialists.prompting import content_text

__all__ = [
    "chat_completion",
    "client_message",
    "completion_chunks",
    "error_response",
    "last_user_text",
    "new_completion_id",
    "new_request_id",
    "only_fields",
    "parse_chat_request",
    "parse_json_object",
]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def parse_json_object(body: bytes) -> dict[str, Any]:
    """``body`` parsed as a JSON object, or a 400 naming what is wrong."""
    if not body:
        raise RequestError("the request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(data).__name__}")
    return data


def only_fields(data: dict[str, Any], allowed: set[str]) -> None:
    """Refuse fields a native route does not know (a misspelt field must not be ignored)."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}", param=unknown[0])


def parse_chat_request(body: bytes) -> dict[str, Any]:
    """A chat-completion request, checked as far as routing needs."""
    data = parse_json_object(body)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' must be a non-empty string", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise RequestError(
                f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}, got {role!r}",
                param=f"messages[{i}].role",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise RequestError(
                f"messages[{i}].content must be a string or an array of parts",
                param=f"messages[{i}].content",
            )
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false", param="stream")
    return data


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text a task classifies: the last user message (its text parts, joined)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            text = content_text(messages[i].get("content")).strip()
            if not text:
                raise RequestError(
                    f"messages[{i}] (the last user message) has no text to classify",
                    param=f"messages[{i}].content",
                )
            return text
    raise RequestError("a task request needs a user message to classify", param="messages")


# Request ids need to be unique, not secret: uuid4 reads os.urandom, which cost 14 % of the
# pass-through path's CPU here; a seeded PRNG per process is free.
_ids = random.Random()


def new_request_id(prefix: str = "chatcmpl-") -> str:
    return f"{prefix}{_ids.getrandbits(128):032x}"


def new_completion_id() -> str:
    return new_request_id()


def chat_completion(
    *,
    completion_id: str,
    model: str,
    content: str,
    usage: dict[str, int],
    niche: dict[str, Any],
    created: int | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object; ``niche`` is an extra top-level field SDKs keep."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
        "niche": niche,
    }


def completion_chunks(completion: dict[str, Any]) -> bytes:
    """``completion`` as the SSE stream a ``stream: true`` client expects, ``[DONE]`` included."""
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
    }
    content = completion["choices"][0]["message"]["content"]
    chunks = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": content},
                    "finish_reason": None,
                }
            ],
            "niche": completion["niche"],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks) + (
        b"data: [DONE]\n\n"
    )


# (error class, OpenAI error type, code, param), first match wins: subclasses before their
# bases. ``param`` names the request field at fault for an error that carries none itself
# (a refused gate is about the version asked for; a lost compare-and-set, expected_current).
# The status is always the error's own ``http_status``.
_ERROR_TYPES: tuple[tuple[type[NicheError], str, str | None, str | None], ...] = (
    (BudgetExceededError, "insufficient_quota", "insufficient_quota", None),
    (RateLimitError, "rate_limit_error", "rate_limit_exceeded", None),
    (AuthenticationError, "authentication_error", "invalid_api_key", None),
    (PermissionDeniedError, "permission_error", "insufficient_scope", None),
    (NotFoundError, "invalid_request_error", "model_not_found", None),
    (GateRefusedError, "invalid_request_error", "gate_required", "version"),
    (ConflictError, "invalid_request_error", "alias_conflict", "expected_current"),
    (UpstreamError, "api_error", "upstream_error", None),
)


def _error_type(exc: NicheError) -> tuple[str, str | None, str | None]:
    for cls, name, code, param in _ERROR_TYPES:
        if isinstance(exc, cls):
            return name, code, param
    return ("invalid_request_error" if exc.http_status < 500 else "server_error"), None, None


INTERNAL_ERROR = "internal error in the gateway; see its log for details"
DATABASE_UNAVAILABLE = "the registry database cannot be used right now; the gateway's log says why"
DATABASE_RETRY_AFTER_S = 2
"""``Retry-After`` of a 503 for an unreachable registry: long enough not to hammer a restarting
database, short enough that a blip costs a client one retry."""


def _from_database(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised because of, a database error (its own or a driver's:
    their messages name the host, port, user and database)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DatabaseError):
            return True
        module = type(current).__module__
        if module.startswith(("sqlalchemy", "psycopg", "sqlite3")):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def client_message(exc: BaseException) -> str:
    """What a client is told of ``exc``: never a database URL or a stack of foreign errors.

    A database error, or any error raised because of one, is told as one generic sentence;
    its full message goes to the log (:func:`~niche.gateway.asgi.send_error`). (Upstream
    errors name the general model, never its host: see ``upstream.py``.)
    """
    if _from_database(exc):
        return DATABASE_UNAVAILABLE
    if isinstance(exc, NicheError):
        return exc.message
    return INTERNAL_ERROR


def error_response(exc: NicheError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The status, OpenAI-style JSON body and extra headers for ``exc``.

    The one place a :class:`NicheError` becomes what a client sees (the routing dispatcher
    calls it for every route): its own ``http_status``, and a ``type``, ``code`` and
    ``param`` from the table above. A database error is a 503 with ``Retry-After`` whose
    message names no host, port, user or database.
    """
    kind, code, param = _error_type(exc)
    if isinstance(exc, RequestError) and exc.code:
        code = exc.code
    body = {
        "error": {
            "message": client_message(exc),
            "type": kind,
            "param": getattr(exc, "param", None) or param,
            "code": code,
        }
    }
    headers: list[tuple[bytes, bytes]] = []
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is None and isinstance(exc, DatabaseError):
        retry_after = DATABASE_RETRY_AFTER_S
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    return exc.http_status, orjson.dumps(body), headers
