"""Which aliases need a gate, which stored gates count, and writing a gate decision.

    >>> refusal(session, task, version, "champion", gate_fingerprint(spec)) is None
    True

The rules :class:`~niche.registry.stores.promotions.PromotionStore` applies inside its one
transaction. ``champion`` (all traffic) and ``challenger`` (canary traffic) are guarded; any
other alias (e.g. ``staging``) is free: it serves nothing unless asked for by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from niche.errors import ConflictError
from niche.registry.models import GateDecisionRow, ModelVersionRow, TaskRow
from niche.registry.stores.audit import write_event
from niche.registry.validation import json_value

__all__ = [
    "GUARDED_ALIASES",
    "GateDecision",
    "HasToDict",
    "check_same_spec",
    "plain_checks",
    "refusal",
    "write_gate",
]

# The gates that let a version take a guarded alias by hand: the champion's rule is the
# stricter (niche.registry.gates), so a version that passed it may be a challenger too.
_ACCEPTED_GATES: Final = {"champion": ("champion",), "challenger": ("challenger", "champion")}

GUARDED_ALIASES: Final = frozenset(_ACCEPTED_GATES)
"""Aliases that move only with a passed gate for the version (or forced, with a reason)."""


class HasToDict(Protocol):
    """A check given as an object: ``to_dict()`` gives its stored form."""

    def to_dict(self) -> dict[str, Any]: ...


class GateDecision(Protocol):
    """A fresh gate result, e.g. :class:`niche.registry.gates.GateResult`.

    It may also carry ``spec_fingerprint``, the task spec it was decided under; the registry
    then refuses it when the task has been edited since (:class:`~niche.errors.ConflictError`).
    """

    @property
    def passed(self) -> bool: ...

    @property
    def checks(self) -> Sequence[Mapping[str, Any] | HasToDict]: ...


def plain_checks(checks: Sequence[Mapping[str, Any] | HasToDict]) -> list[dict[str, Any]]:
    """Checks as JSON-ready dicts, as they are stored.

    >>> plain_checks(decision.checks)[0]["name"]
    'held_out'
    """
    as_dicts = [c.to_dict() if hasattr(c, "to_dict") else dict(c) for c in checks]
    plain: list[dict[str, Any]] = json_value(as_dicts, "checks")
    return plain


def check_same_spec(
    task: TaskRow, target: ModelVersionRow, alias: str, decision: GateDecision, spec: str
) -> None:
    """Raise :class:`~niche.errors.ConflictError` when ``decision`` was made under another spec.

    >>> check_same_spec(task, target, "champion", decision, gate_fingerprint(spec))
    """
    decided_under = getattr(decision, "spec_fingerprint", None)
    if decided_under is None or decided_under == spec:
        return
    raise ConflictError(
        f"task {task.name} changed while v{target.version} was being gated for {alias} "
        f"(its SLA, labels, general model or metric were edited): nothing was stored; gate it "
        f"again with `niche promote {task.name} {target.version} --alias {alias}`",
        task=task.name,
        alias=alias,
    )


def refusal(
    session: Session, task: TaskRow, target: ModelVersionRow, alias: str, spec: str
) -> str | None:
    """None when ``target`` may take ``alias`` by hand, else why not (a refusal message).

    A guarded alias needs a passed gate for ``target`` (for that alias, or for the stricter
    champion) whose spec fingerprint is ``spec``, the task's current one.

        >>> refusal(session, task, target, "staging", spec) is None  # a free alias
        True
    """
    accepted = _ACCEPTED_GATES.get(alias)
    if accepted is None:  # a free alias
        return None
    specs = set(
        session.scalars(
            select(GateDecisionRow.spec_fingerprint).where(
                GateDecisionRow.task_id == task.id,
                GateDecisionRow.model_version_id == target.id,
                GateDecisionRow.alias.in_(accepted),
                GateDecisionRow.passed.is_(True),
            )
        )
    )
    if spec in specs:
        return None
    again = f"`niche promote {task.name} {target.version} --alias {alias}`"
    if specs == {None}:  # stored before migration 0005: under which spec is unknown
        return (
            f"task {task.name} v{target.version} passed its gate for {alias} before niche "
            f"recorded the task spec a gate is decided under, so it no longer counts; gate it "
            f"again under the current spec with {again}, or send force: true with a reason"
        )
    if specs:
        return (
            f"task {task.name} changed since v{target.version} passed its gate for {alias} "
            f"(its SLA, labels, general model or metric were edited): that gate no longer counts; "
            f"gate it again under the current spec with {again}, or send force: true "
            "with a reason"
        )
    return (
        f"task {task.name} v{target.version} has no passed gate for {alias}; run "
        "`niche promote` (which gates it), or send force: true with a reason"
    )


def write_gate(
    session: Session,
    task: TaskRow,
    target: ModelVersionRow,
    alias: str,
    passed: bool,
    forced: bool,
    why: str | None,
    checks: list[dict[str, Any]],
    actor: str,
    now: datetime,
    spec: str | None,
) -> GateDecisionRow:
    """Add a gate decision decided under spec fingerprint ``spec``, and its audit event.

    >>> write_gate(session, task, target, "champion", True, False, None, [], "cli:ana", now, fp)
    """
    row = GateDecisionRow(
        task_id=task.id,
        model_version_id=target.id,
        alias=alias,
        passed=passed,
        forced=forced,
        why=why,
        checks=checks,
        actor=actor,
        at=now,
        spec_fingerprint=spec,
    )
    session.add(row)
    write_event(
        session,
        at=now,
        actor=actor,
        action="gate.decided",
        task=task.name,
        subject=f"v{target.version}",
        detail={
            "version": target.version,
            "alias": alias,
            "passed": passed,
            "forced": forced,
            "why": why,
            "failed": [c.get("name") for c in checks if not c.get("passed")],
        },
    )
    session.flush()
    return row
