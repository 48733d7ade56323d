"""Tasks from a caller's ``KEY=VALUE`` pairs: create, edit, show.

    >>> parse_changes(["sla.min_quality=0.9", "domain=finance"])
    {'sla': {'min_quality': 0.9}, 'domain': 'finance'}
    >>> edit_task("banking77", ["cascade_threshold=0.7"]).spec.cascade_threshold
    0.7

A value is read as JSON when it parses (``0.9``, ``true``, ``["a", "b"]``), else as text. A
pair that does not fit the task's spec is refused with :class:`~niche.errors.ValidationError`
naming the pair, before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any

from niche.errors import NicheError, ValidationError
from niche.settings import Settings
from niche.workflows._context import resolve

if TYPE_CHECKING:
    from niche.registry import Registry, TaskRecord
    from niche.registry.tasks import TaskSpec

__all__ = ["create_task", "edit_task", "parse_changes", "show_task"]


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_changes(pairs: Sequence[str]) -> dict[str, Any]:
    """``["sla.min_quality=0.9", "domain=finance"]`` → ``{"sla": {"min_quality": 0.9}, …}``.

    >>> parse_changes(["general.kind=openai", "general.model=gpt-4o-mini"])
    {'general': {'kind': 'openai', 'model': 'gpt-4o-mini'}}
    """
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"--set takes KEY=VALUE, got {pair!r}", param="set")
        head, dot, tail = key.partition(".")
        if dot:
            section = changes.setdefault(head, {})
            if not isinstance(section, dict) or not tail:
                raise ValidationError(
                    f"--set {pair!r}: {head} is given both as a value and by field", param="set"
                )
            section[tail] = _parse_value(raw)
        else:
            changes[key] = _parse_value(raw)
    return changes


_SHAPES = {
    "fields": "takes fields, e.g. --set {name}.FIELD=VALUE",
    "object": 'must be a JSON object, e.g. --set \'{name}={{"a": "…"}}\'',
    "list": 'must be a JSON list, e.g. --set \'{name}=["a", "b"]\'',
    "value": "takes one value, not fields or a list",
}


def _shape(value: Any) -> str:
    if is_dataclass(value):
        return "fields"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    return "value"


def _fits(value: Any, shape: str) -> bool:
    """Whether a change can set a field of ``shape`` (a section takes a JSON object)."""
    if shape in ("fields", "object"):
        return isinstance(value, dict)
    if shape == "list":
        return isinstance(value, list)
    return not isinstance(value, dict | list)


def _changed(spec: TaskSpec, pairs: Sequence[str], fixed: dict[str, Any]) -> TaskSpec:
    """``spec`` with ``pairs`` and then ``fixed`` applied; a pair that does not fit is named."""
    changes = parse_changes(pairs) | fixed
    known = {field.name for field in fields(spec)}
    for key, value in changes.items():
        if key not in known:
            continue  # the spec refuses it, listing the known fields
        expected = _shape(getattr(spec, key))
        if not _fits(value, expected):
            rule = _SHAPES[expected].format(name=key)
            raise ValidationError(f"task {spec.name}: {key} {rule}", param="set")
    try:
        return spec.with_changes(**changes)
    except (TypeError, ValueError) as exc:
        # The spec compares and converts values without checking their types first.
        raise ValidationError(
            f"task {spec.name}: {_culprit(spec, pairs)} has a value of the wrong type ({exc})",
            param="set",
        ) from exc


def _culprit(spec: TaskSpec, pairs: Sequence[str]) -> str:
    for pair in pairs:
        try:
            spec.with_changes(**parse_changes([pair]))
        except (TypeError, ValueError):
            return f"--set {pair}"
        except NicheError:  # refused for its range or name: not a type error
            continue
    return "--set " + " ".join(pairs) if pairs else "an option"


def create_task(
    name: str,
    settings: Settings | None = None,
    *,
    labels: Sequence[str] | None = None,
    domain: str | None = None,
    description: str | None = None,
    changes: Sequence[str] = (),
    registry: Registry | None = None,
) -> TaskRecord:
    """Create task ``name``; ``changes`` are ``KEY=VALUE`` pairs for any other field.

    >>> create_task("intents", labels=["a", "b"], changes=["sla.min_quality=0.9"]).name
    'intents'
    """
    from niche.registry.tasks import TaskSpec

    fixed: dict[str, Any] = {}
    if labels:
        fixed["labels"] = list(labels)
    if domain:
        fixed["domain"] = domain
    if description:
        fixed["description"] = description
    spec = _changed(TaskSpec(name=name), changes, fixed)
    _, registry = resolve(settings, registry)
    return registry.tasks.create(spec)


def edit_task(
    name: str,
    changes: Sequence[str],
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
) -> TaskRecord:
    """Change fields of task ``name``'s spec from ``KEY=VALUE`` pairs.

    >>> edit_task("banking77", ["sla.latency_p95_ms=20"]).spec.sla.latency_p95_ms
    20
    """
    _, registry = resolve(settings, registry)
    # Checked on the current spec first, so a bad pair is refused naming itself.
    _changed(registry.tasks.get(name).spec, changes, {})
    return registry.tasks.update(name, **parse_changes(changes))


def show_task(
    name: str, settings: Settings | None = None, *, registry: Registry | None = None
) -> dict[str, Any]:
    """Task ``name`` as a dict with its ``aliases`` (what ``niche tasks show`` prints).

    >>> show_task("banking77")["aliases"]
    {'champion': 3}
    """
    _, registry = resolve(settings, registry)
    return registry.tasks.get(name).to_dict() | {"aliases": registry.promotions.aliases(name)}
