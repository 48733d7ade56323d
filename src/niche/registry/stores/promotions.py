"""Aliases and gates, and the one promotion rule every caller uses.

    >>> outcome = registry.promotions.promote("banking77", "champion", 4, decision=result)
    >>> outcome.moved, outcome.gate.passed
    (True, True)

A promotion is one transaction: the gate decision, the alias move and their audit events are
committed together or not at all. The CLI (which gates a candidate first), the gateway's admin
route (which moves an alias by hand) and the retrain loop all call :meth:`PromotionStore.promote`.

Guarded aliases (:data:`GUARDED_ALIASES`: ``champion``, all traffic; ``challenger``, canary
traffic) move by hand only on a passed gate for that version decided under the task's current
spec (:func:`~niche.registry.tasks.gate_fingerprint`); any other alias (e.g. ``staging``) is
free: it serves nothing unless asked for by name, so it moves without a gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from niche.errors import ConflictError, GateRefusedError, ValidationError
from niche.registry.models import (
    AliasEventRow,
    AliasRow,
    GateDecisionRow,
    ModelVersionRow,
    TaskRow,
)
from niche.registry.records import (
    AliasEventRecord,
    GateRecord,
    ModelVersionRecord,
    PromotionRecord,
)
from niche.registry.stores.audit import write_event
from niche.registry.stores.base import Store, aliases_of, model_row, task_row
from niche.registry.stores.gating import (
    GUARDED_ALIASES,
    GateDecision,
    HasToDict,
    check_same_spec,
    plain_checks,
    refusal,
    write_gate,
)
from niche.registry.stores.models import gate_record, model_record
from niche.registry.tasks import TaskSpec, gate_fingerprint
from niche.registry.validation import alias_name

__all__ = ["GUARDED_ALIASES", "UNSET", "GateDecision", "PromotionStore", "alias_event_record"]


class _Unset:
    """Type of :data:`UNSET`: "no expectation given", distinct from ``None`` ("not set")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()
"""``move(..., expected_current=UNSET)``: move the alias whatever it points to now."""


def alias_event_record(row: AliasEventRow, task: str) -> AliasEventRecord:
    return AliasEventRecord(
        id=row.id,
        task=task,
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        reason=row.reason,
        at=row.at,
    )


def _forced_why(why: str | None) -> bool:
    return bool(why and why.strip())


class PromotionStore(Store):
    """Aliases, their history and the gate decisions behind them (``registry.promotions``)."""

    # -- reading ---------------------------------------------------------------------------

    def get(self, task: str, alias: str) -> ModelVersionRecord | None:
        """The model version ``alias`` points to, or None when it is not set."""
        alias_name(alias)
        with self.database.session() as session:
            task_ = task_row(session, task)
            row = session.scalars(
                select(ModelVersionRow)
                .join(AliasRow, AliasRow.model_version_id == ModelVersionRow.id)
                .where(AliasRow.task_id == task_.id, AliasRow.name == alias)
            ).one_or_none()
            return model_record(row, task_.name) if row is not None else None

    def aliases(self, task: str) -> dict[str, int]:
        """Each alias of ``task`` and the version it points to."""
        with self.database.session() as session:
            return aliases_of(session, task_row(session, task))

    def served(self) -> dict[str, dict[str, ModelVersionRecord]]:
        """Every task's aliases and the model versions they point to, in one query.

        Tasks without an alias are absent. The gateway's portfolio reads this each refresh.

            >>> registry.promotions.served()["banking77"]["champion"].version
            3
        """
        with self.database.session() as session:
            rows = session.execute(
                select(AliasRow.name, ModelVersionRow, TaskRow.name)
                .join(ModelVersionRow, AliasRow.model_version_id == ModelVersionRow.id)
                .join(TaskRow, AliasRow.task_id == TaskRow.id)
                .order_by(TaskRow.name, AliasRow.name)
            )
            served: dict[str, dict[str, ModelVersionRecord]] = {}
            for alias, model, task in rows:
                served.setdefault(task, {})[alias] = model_record(model, task)
            return served

    def history(self, task: str, alias: str | None = None) -> list[AliasEventRecord]:
        """Moves of ``alias`` (or of every alias of ``task``), oldest first."""
        with self.database.session() as session:
            task_ = task_row(session, task)
            query = select(AliasEventRow).where(AliasEventRow.task_id == task_.id)
            if alias is not None:
                query = query.where(AliasEventRow.alias == alias_name(alias))
            rows = session.scalars(query.order_by(AliasEventRow.id))
            return [alias_event_record(row, task_.name) for row in rows]

    def gates(self, task: str) -> list[GateRecord]:
        """Every gate decision for ``task``, oldest first."""
        with self.database.session() as session:
            task_ = task_row(session, task)
            rows = session.execute(
                select(GateDecisionRow, ModelVersionRow.version)
                .join(ModelVersionRow, GateDecisionRow.model_version_id == ModelVersionRow.id)
                .where(GateDecisionRow.task_id == task_.id)
                .order_by(GateDecisionRow.id)
            )
            return [gate_record(row, task_.name, version) for row, version in rows]

    # -- writing ---------------------------------------------------------------------------

    def record_gate(
        self,
        task: str,
        version: int | str,
        *,
        alias: str,
        passed: bool,
        checks: Sequence[Mapping[str, Any] | HasToDict],
        forced: bool = False,
        why: str | None = None,
        actor: str | None = None,
        spec_fingerprint: str | None = None,
    ) -> GateRecord:
        """Store a promotion decision, passed or failed, with its checks (no alias moves).

        ``checks`` are ``{name, passed, value, threshold, detail}`` dicts (or objects with
        ``to_dict()``, e.g. :class:`~niche.registry.gates.GateCheck`). ``spec_fingerprint``
        says which spec of the task it was decided under (default: the current one).

            >>> registry.promotions.record_gate("banking77", 4, alias="champion",
            ...     passed=False, checks=decision.checks, actor="cli:ana")
        """
        alias_name(alias)
        who = self._actor(actor)
        if forced and not _forced_why(why):
            raise ValidationError("a forced gate decision needs a reason (why)")
        plain = plain_checks(checks)
        now = self.database.now()
        with self.database.session(write=True) as session:
            task_ = task_row(session, task)
            model = model_row(session, task_, version)
            spec = spec_fingerprint or gate_fingerprint(TaskSpec.from_dict(task_.spec))
            row = write_gate(
                session, task_, model, alias, bool(passed), bool(forced), why, plain, who, now, spec
            )
            return gate_record(row, task_.name, model.version)

    def move(
        self,
        task: str,
        alias: str,
        version: int | str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        expected_current: int | _Unset | None = UNSET,
    ) -> AliasEventRecord:
        """Point ``alias`` at ``version`` and append the move to its history, atomically.

        No gate is consulted: this is the bare move (use :meth:`promote` for the rule). With
        ``expected_current`` (a version, or None for "not set yet") it is a compare-and-set:
        when the alias points elsewhere, :class:`~niche.errors.ConflictError` is raised and
        nothing changes, so racing promotions cannot silently overwrite each other.

            >>> registry.promotions.move("banking77", "champion", 4, actor="cli:ana",
            ...                          reason="gate passed", expected_current=3)
        """
        alias_name(alias)
        who = self._actor(actor)
        now = self.database.now()
        with self.database.session(write=True) as session:
            task_ = task_row(session, task, lock=True)
            target = model_row(session, task_, version)
            current, current_version = self._current(session, task_, alias)
            self._expect(task_, alias, expected_current, current_version)
            event = self._move(
                session,
                task_,
                alias,
                target,
                current,
                current_version,
                actor=who,
                reason=reason,
                now=now,
            )
            return alias_event_record(event, task_.name)

    def promote(
        self,
        task: str,
        alias: str,
        version: int | str,
        *,
        decision: GateDecision | None = None,
        force: bool = False,
        why: str | None = None,
        actor: str | None = None,
        expected_current: int | _Unset | None = UNSET,
    ) -> PromotionRecord:
        """The promotion rule: store the gate decision and move the alias it allows, at once.

        With ``decision`` (a fresh gate result: ``passed`` and ``checks``) the decision is
        stored, and the alias moves when it passed, or when ``force`` is given with a reason
        ``why`` (stored as a forced decision). A failed decision without ``force`` is stored
        and moves nothing: the result says ``moved=False``, the caller decides what to say.
        A decision made under an older spec of the task (its ``spec_fingerprint``) raises
        :class:`~niche.errors.ConflictError` and stores nothing: gate it again.

        Without ``decision`` (an alias moved by hand) a guarded alias (:data:`GUARDED_ALIASES`)
        needs a stored passed gate for this version, decided under the task's current spec,
        else :class:`~niche.errors.GateRefusedError`; with ``force`` and ``why`` it moves
        anyway and a forced gate decision is stored. A version that holds the alias already
        moves nothing. ``expected_current`` makes the move a compare-and-set
        (:class:`~niche.errors.ConflictError`, nothing stored).

            >>> registry.promotions.promote("banking77", "champion", 4, decision=result,
            ...                             expected_current=3).moved
            True
        """
        alias_name(alias)
        who = self._actor(actor)
        if force and not _forced_why(why):
            raise ValidationError(
                "a forced promotion needs a reason: say why (--why, or 'reason')", param="why"
            )
        checks = plain_checks(decision.checks) if decision is not None else []
        now = self.database.now()
        with self.database.session(write=True) as session:
            task_ = task_row(session, task, lock=True)
            target = model_row(session, task_, version)
            spec = gate_fingerprint(TaskSpec.from_dict(task_.spec))
            current, current_version = self._current(session, task_, alias)
            already = current_version == target.version
            gate: GateDecisionRow | None = None
            if decision is not None:
                check_same_spec(task_, target, alias, decision, spec)
                passed = bool(decision.passed)
                forced = force and not passed
                moving = (passed or forced) and not already
                if moving:
                    self._expect(task_, alias, expected_current, current_version)
                gate = write_gate(
                    session, task_, target, alias, passed, forced, why, checks, who, now, spec
                )
                reason = (why or f"gate passed ({len(checks)} checks)") if passed else None
            else:
                moving = not already
                if moving:
                    self._expect(task_, alias, expected_current, current_version)
                refused = refusal(session, task_, target, alias, spec) if moving else None
                if refused is not None and not force:
                    raise GateRefusedError(
                        refused, task=task_.name, version=target.version, alias=alias
                    )
                forced = refused is not None
                if forced:
                    gate = write_gate(
                        session, task_, target, alias, False, True, why, [], who, now, spec
                    )
                reason = why
            event: AliasEventRow | None = None
            if moving:
                event = self._move(
                    session,
                    task_,
                    alias,
                    target,
                    current,
                    current_version,
                    actor=who,
                    reason=f"forced: {why}" if forced else reason,
                    now=now,
                )
            return PromotionRecord(
                task=task_.name,
                alias=alias,
                version=target.version,
                previous_version=current_version,
                moved=moving,
                already=already,
                forced=forced,
                gate=gate_record(gate, task_.name, target.version) if gate is not None else None,
                event=alias_event_record(event, task_.name) if event is not None else None,
            )

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _current(session: Session, task: TaskRow, alias: str) -> tuple[AliasRow | None, int | None]:
        current = session.scalars(
            select(AliasRow).where(AliasRow.task_id == task.id, AliasRow.name == alias)
        ).one_or_none()
        if current is None:
            return None, None
        version = session.scalar(
            select(ModelVersionRow.version).where(ModelVersionRow.id == current.model_version_id)
        )
        return current, version

    @staticmethod
    def _expect(
        task: TaskRow, alias: str, expected: int | _Unset | None, actual: int | None
    ) -> None:
        if isinstance(expected, _Unset) or expected == actual:
            return
        now_at = f"v{actual}" if actual is not None else "unset"
        wanted = f"v{expected}" if expected is not None else "unset"
        raise ConflictError(
            f"alias {alias!r} of task {task.name!r} is {now_at}, not {wanted} as "
            f"expected: someone moved it meanwhile; check its history and decide again",
            task=task.name,
            alias=alias,
            expected=expected,
            actual=actual,
        )

    @staticmethod
    def _move(
        session: Session,
        task: TaskRow,
        alias: str,
        target: ModelVersionRow,
        current: AliasRow | None,
        current_version: int | None,
        *,
        actor: str,
        reason: str | None,
        now: datetime,
    ) -> AliasEventRow:
        """Point the alias at ``target``; append the move to its history and the audit trail."""
        if current is None:
            session.add(
                AliasRow(task_id=task.id, name=alias, model_version_id=target.id, updated_at=now)
            )
        else:
            current.model_version_id = target.id
            current.updated_at = now
        event = AliasEventRow(
            task_id=task.id,
            alias=alias,
            from_version=current_version,
            to_version=target.version,
            actor=actor,
            reason=reason,
            at=now,
        )
        session.add(event)
        write_event(
            session,
            at=now,
            actor=actor,
            action="alias.moved",
            task=task.name,
            subject=f"v{target.version}",
            detail={
                "alias": alias,
                "from_version": current_version,
                "to_version": target.version,
                "reason": reason,
            },
        )
        session.flush()
        return event
