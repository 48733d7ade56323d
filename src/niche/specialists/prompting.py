"""Asking a general model a task's question and reading its answer back as a label.

Pure functions, below both the gateway (cascade, shadow) and evaluation (a remote predictor).

>>> render_prompt(None, "my card is late", ["card_arrival", "lost_card"])[:44]
'Classify the text into exactly one of these '
>>> map_answer("Card arrival.", ["card_arrival", "lost_card"])
'card_arrival'
>>> map_answer("I am not sure", ["card_arrival", "lost_card"]) is None
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from string import Formatter

from niche.errors import ConfigurationError

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "map_answer", "render_prompt"]

DEFAULT_PROMPT_TEMPLATE = (
    "Classify the text into exactly one of these labels: {labels}.\n"
    "Answer with the label only, nothing else.\n\n"
    "Text: {text}"
)
_FIELDS = frozenset({"text", "labels"})
_NON_WORD = re.compile(r"[^a-z0-9]+")


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


def _key(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def map_answer(answer: str | None, labels: Sequence[str]) -> str | None:
    """The label ``answer`` names, or None when it names none or several.

    Matching ignores case, punctuation, quotes and ``_``/``-``/space differences; a longer
    answer maps when exactly one label appears in it as whole words.
    """
    if not answer:
        return None
    key = _key(answer)
    if not key:
        return None
    by_key = {_key(label): label for label in labels}
    if key in by_key:
        return by_key[key]
    padded = f" {key} "
    found = {label for k, label in by_key.items() if k and f" {k} " in padded}
    # "card arrival" inside "lost card arrival": keep the longest names only.
    longest = {
        label
        for label in found
        if not any(other != label and f" {_key(label)} " in f" {_key(other)} " for other in found)
    }
    return next(iter(longest)) if len(longest) == 1 else None
