"""Asking a general model a task's question and reading its answer back as a label.

Pure functions (no HTTP), below both the gateway (cascade, shadow) and evaluation (a remote
predictor): the prompt, the chat request body (bounded by ``max_tokens``, ended by ``stop``,
constrained to the labels by a ``response_format`` where the endpoint takes one), and the
label read back from the reply.

>>> render_prompt(None, "my card is late", ["card_arrival", "lost_card"])[:44]
'Classify the text into exactly one of these '
>>> body = chat_request("gpt-4o-mini", "…", ["ham", "spam"], max_tokens=64,
...                     response_format="json_schema")
>>> body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"]
['ham', 'spam']
>>> map_answer('{"label": "spam"}', ["ham", "spam"]), map_answer("Card arrival.", ["card_arrival"])
('spam', 'card_arrival')
>>> map_answer("The labels are ham, spam. Text: …", ["ham", "spam"]) is None
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from string import Formatter
from typing import Any

import orjson

from niche.errors import ConfigurationError

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "FORMAT_FALLBACK",
    "RESPONSE_FORMATS",
    "chat_request",
    "content_text",
    "first_format",
    "label_schema",
    "map_answer",
    "next_format",
    "render_prompt",
    "reply_content",
    "reply_usage",
]

DEFAULT_PROMPT_TEMPLATE = (
    "Classify the text into exactly one of these labels: {labels}.\n"
    "Answer with the label only, nothing else.\n\n"
    "Text: {text}"
)
RESPONSE_FORMATS = ("auto", "json_schema", "json_object", "text")
"""How a general model is asked to answer. ``json_schema``: OpenAI's and vLLM's structured
output (the label an enum). ``json_object``: llama.cpp's server (it refuses ``json_schema``
with 422 but honours a ``schema`` next to ``json_object``). ``text``: free text, mapped.
``auto``: ``json_schema`` first, then down :data:`FORMAT_FALLBACK` on a 400/422 refusal."""
FORMAT_FALLBACK = {"json_schema": "json_object", "json_object": "text"}
"""The format to try next after an endpoint refused one (``text`` is the last)."""
_FIELDS = frozenset({"text", "labels"})
_NON_WORD = re.compile(r"[^a-z0-9]+")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


def render_prompt(template: str | None, text: str, labels: Sequence[str]) -> str:
    """The user message for the general model: ``template`` with ``{text}`` and ``{labels}``."""
    template = template or DEFAULT_PROMPT_TEMPLATE
    try:
        names = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigurationError(f"general.prompt_template is malformed: {exc}") from exc
    unknown = sorted(names - _FIELDS)
    if unknown:
        raise ConfigurationError(
            f"general.prompt_template uses unknown field(s) {', '.join(unknown)}; "
            "use {text} and {labels} (double braces for literal ones)"
        )
    return template.format(text=text, labels=", ".join(labels))


def first_format(setting: str) -> str:
    """The format to ask for first under ``setting`` (one of :data:`RESPONSE_FORMATS`).

    >>> first_format("auto")
    'json_schema'
    """
    return "json_schema" if setting == "auto" else setting


# How an endpoint refuses a format it does not take (llama.cpp: 422 for json_schema).
_FORMAT_REFUSED = frozenset({400, 422})


def next_format(setting: str, asked: str, status: int | None) -> str | None:
    """The format to ask next after the endpoint answered ``status`` to ``asked``: a step down
    (:data:`FORMAT_FALLBACK`) when ``setting`` is ``auto`` and ``status`` refused the format,
    else None (no second try).

    >>> next_format("auto", "json_schema", 422)
    'json_object'
    >>> next_format("json_schema", "json_schema", 422) is None
    True
    """
    if setting != "auto" or status not in _FORMAT_REFUSED:
        return None
    return FORMAT_FALLBACK.get(asked)


def label_schema(labels: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of an answer naming one of ``labels``: ``{"label": <one of them>}``."""
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def _response_format(kind: str, labels: Sequence[str]) -> dict[str, Any] | None:
    if kind == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "label", "strict": True, "schema": label_schema(labels)},
        }
    if kind == "json_object":
        return {"type": "json_object", "schema": label_schema(labels)}
    if kind == "text":
        return None
    raise ConfigurationError(
        f"general.response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {kind!r}"
    )


def chat_request(
    model: str,
    prompt: str,
    labels: Sequence[str],
    *,
    max_tokens: int,
    stop: Sequence[str] | None = None,
    response_format: str = "text",
) -> dict[str, Any]:
    """The chat-completion body asking ``model`` to label ``prompt``: greedy, at most
    ``max_tokens`` tokens, ended at ``stop``, constrained to ``labels`` as ``response_format``
    says (``json_schema``, ``json_object`` or ``text``; resolve ``auto`` with
    :func:`first_format` first).

    >>> chat_request("m", "hi", ["a"], max_tokens=8)["max_tokens"]
    8
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        # max_tokens, not max_completion_tokens: llama.cpp's server ignores the latter.
        "max_tokens": max_tokens,
    }
    if stop:
        body["stop"] = list(stop)
    constrained = _response_format(response_format, labels)
    if constrained is not None:
        body["response_format"] = constrained
    return body


def reply_content(reply: Any) -> str | None:
    """The first choice's message text of a chat-completion ``reply`` (a parsed dict)."""
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None


def reply_usage(reply: Any) -> tuple[int | None, int | None]:
    """The prompt and completion tokens an OpenAI-style ``reply`` reports (None: unknown)."""
    found = reply.get("usage") if isinstance(reply, dict) else None
    if not isinstance(found, dict):
        return None, None
    prompt, completion = found.get("prompt_tokens"), found.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else None,
        completion if isinstance(completion, int) and not isinstance(completion, bool) else None,
    )


def _key(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def _json_label(answer: str) -> str | None:
    """The ``label`` of a JSON answer (``{"label": "spam"}``, perhaps in a code fence)."""
    fenced = _FENCE.match(answer)
    if fenced:
        answer = fenced.group(1)
    if not answer.startswith("{"):
        return None
    try:
        data = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    label = data.get("label") if isinstance(data, dict) else None
    return label if isinstance(label, str) else None


def map_answer(answer: str | None, labels: Sequence[str]) -> str | None:
    """The label ``answer`` names as a whole answer, or None.

    The whole answer must be the label, ignoring case, punctuation, quotes, a trailing
    period and ``_``/``-``/space differences, or be a JSON object ``{"label": …}`` naming
    it. A label inside a longer text does not count: an echo of the prompt lists every
    label, and a model that rambles has not answered.
    """
    if not answer:
        return None
    answer = answer.strip()
    inner = _json_label(answer)
    key = _key(inner if inner is not None else answer)
    if not key:
        return None
    matches = [label for label in labels if _key(label) == key]
    # Two labels that differ only in punctuation ("a-b", "a_b") cannot be told apart.
    return matches[0] if len(matches) == 1 else None


def content_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string, or its text parts joined by a
    space (other parts, and anything else, give "") — what a task classifies.

    >>> content_text([{"type": "text", "text": "card"}, {"type": "text", "text": "lost"}])
    'card lost'
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""
