"""The loop's policy: whether a task retrains now, and why — a pure function of the task's
``loop.*`` spec, the facts a pass gathered and the time (no registry, no clock of its own).

    >>> decide(LoopSpec(min_rows=200), LoopFacts(labelled_rows=37), now).reason
    'only 37 labelled rows, 200 needed (loop.min_rows)'

Triggers (``loop.triggers``): ``first`` (no champion yet), ``drift``, ``agreement`` and
``accuracy`` (an alarming monitor signal, by :data:`SIGNAL_TRIGGERS`), ``new_rows`` and
``schedule``; guards: ``loop.min_rows``, ``loop.cooldown_s`` and
``loop.max_retrains_per_day``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from niche.registry.tasks import LOOP_TRIGGERS, LoopSpec

__all__ = ["DAY", "SIGNAL_TRIGGERS", "Decision", "LoopFacts", "decide", "signal_trigger"]

DAY: Final = timedelta(days=1)
"""The window of ``loop.max_retrains_per_day``."""

SIGNAL_TRIGGERS: Final = (
    ("input_drift", "drift"),
    ("prediction_drift", "drift"),
    ("confidence_drift", "drift"),
    ("cascade_rate", "drift"),
    ("agreement", "agreement"),
    ("accuracy", "accuracy"),
    ("estimated_accuracy", "accuracy"),
)
"""Which trigger an alarming monitor signal pulls, by the signal's name (or name prefix:
``input_drift_projection`` pulls ``drift``). Signals not listed (latency, errors, cost)
pull none: retraining does not fix them."""


@dataclass(frozen=True)
class LoopFacts:
    """What :func:`decide` knows about a task at one moment.

    ``champion``: the champion's version (None: none yet), trained at ``champion_trained_at``.
    ``labelled_rows``: captured records with a teacher or gold label in ``loop.since``;
    ``new_rows``: those since the champion's training data ends (None without a champion).
    ``alarms``: names of the signals alarming in this pass's monitor report. ``trainings``:
    when the loop started retrains of the task (recent ones: at least the last day and the
    cooldown); ``last_model_at``: when the newest model version was registered, by anyone.

        >>> LoopFacts(labelled_rows=420).champion is None
        True
    """

    champion: int | None = None
    champion_trained_at: datetime | None = None
    labelled_rows: int = 0
    new_rows: int | None = None
    alarms: tuple[str, ...] = ()
    trainings: tuple[datetime, ...] = ()
    last_model_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    """What the policy says: ``train`` or ``skip``, why, and which trigger (if any) fired.

    ``fired`` lists every trigger that fired (``trigger`` is the first of them, in
    :data:`~niche.registry.tasks.LOOP_TRIGGERS` order); ``numbers`` the figures behind it.
    """

    action: Literal["train", "skip"]
    reason: str
    trigger: str | None = None
    fired: tuple[str, ...] = ()
    numbers: dict[str, Any] = field(default_factory=dict)


def signal_trigger(name: str) -> str | None:
    """The trigger an alarming signal named ``name`` pulls (:data:`SIGNAL_TRIGGERS`), or None."""
    for prefix, trigger in SIGNAL_TRIGGERS:
        if name == prefix or name.startswith(prefix + "_"):
            return trigger
    return None


def decide(spec: LoopSpec, facts: LoopFacts, now: datetime) -> Decision:
    """Whether the loop retrains a task now, under its ``loop.*`` policy ``spec``.

    A trigger of ``spec.triggers`` must fire — ``first`` (no champion yet), ``drift``,
    ``agreement`` or ``accuracy`` (that kind of monitor signal alarms), ``new_rows``
    (``spec.new_rows`` labelled rows since the champion's data), ``schedule``
    (``spec.schedule_s`` since the champion was trained) — and every guard hold: at least
    ``spec.min_rows`` labelled rows, ``spec.cooldown_s`` since the last training (the loop's
    or anyone's), fewer than ``spec.max_retrains_per_day`` retrains started in the last 24 h.

        >>> decide(LoopSpec(min_rows=200), LoopFacts(labelled_rows=37), now).reason
        'only 37 labelled rows, 200 needed (loop.min_rows)'
    """
    if not spec.enabled:
        return Decision("skip", "loop.enabled is false")
    fired = _fired(spec, facts, now)
    numbers: dict[str, Any] = {"labelled_rows": facts.labelled_rows, "min_rows": spec.min_rows}
    if facts.champion is not None:
        numbers["new_rows"] = facts.new_rows
        numbers["new_rows_needed"] = spec.new_rows
    too_few = f"only {facts.labelled_rows} labelled rows, {spec.min_rows} needed (loop.min_rows)"
    if not fired:
        if facts.champion is None:
            if "first" not in spec.triggers:
                return Decision("skip", "no champion yet, and loop.triggers leaves out first")
            return Decision("skip", too_few, numbers=numbers)
        return Decision("skip", "no trigger fired: " + _quiet(spec, facts, now), numbers=numbers)
    trigger = fired[0]
    if facts.labelled_rows < spec.min_rows:
        return Decision("skip", too_few, trigger, fired, numbers)
    trained = [*facts.trainings, *([facts.last_model_at] if facts.last_model_at else [])]
    since_last = (now - max(trained)).total_seconds() if trained else math.inf
    if since_last < spec.cooldown_s:
        numbers |= {"seconds_since_training": round(since_last, 3), "cooldown_s": spec.cooldown_s}
        return Decision(
            "skip",
            f"cooling down: trained {since_last:.0f} s ago, loop.cooldown_s={spec.cooldown_s:g} "
            f"({spec.cooldown_s - since_last:.0f} s left)",
            trigger,
            fired,
            numbers,
        )
    today = sum(now - DAY < at <= now for at in facts.trainings)
    if today >= spec.max_retrains_per_day:
        numbers |= {"retrains_24h": today, "max_retrains_per_day": spec.max_retrains_per_day}
        return Decision(
            "skip",
            f"{today} retrains started in the last 24 h, "
            f"loop.max_retrains_per_day={spec.max_retrains_per_day}",
            trigger,
            fired,
            numbers,
        )
    return Decision("train", _why(trigger, spec, facts, now), trigger, fired, numbers)


def _fired(spec: LoopSpec, facts: LoopFacts, now: datetime) -> tuple[str, ...]:
    fired: set[str] = set()
    if facts.champion is None:
        if facts.labelled_rows >= spec.min_rows:
            fired.add("first")
    else:
        fired.update(t for t in map(signal_trigger, facts.alarms) if t is not None)
        if facts.new_rows is not None and facts.new_rows >= spec.new_rows:
            fired.add("new_rows")
        if _schedule_due(spec, facts, now):
            fired.add("schedule")
    return tuple(t for t in LOOP_TRIGGERS if t in fired and t in spec.triggers)


def _schedule_due(spec: LoopSpec, facts: LoopFacts, now: datetime) -> bool:
    if spec.schedule_s is None or facts.champion_trained_at is None:
        return False
    return (now - facts.champion_trained_at).total_seconds() >= spec.schedule_s


def _why(trigger: str, spec: LoopSpec, facts: LoopFacts, now: datetime) -> str:
    if trigger == "first":
        return (
            f"first: no champion yet, {facts.labelled_rows} labelled rows "
            f"(loop.min_rows={spec.min_rows})"
        )
    if trigger in ("drift", "agreement", "accuracy"):
        names = [a for a in facts.alarms if signal_trigger(a) == trigger]
        return f"{trigger}: {', '.join(names)} alarmed on v{facts.champion}"
    if trigger == "new_rows":
        return (
            f"new_rows: {facts.new_rows} labelled rows since v{facts.champion}'s data "
            f"(loop.new_rows={spec.new_rows})"
        )
    trained = facts.champion_trained_at
    age = (now - trained).total_seconds() if trained is not None else 0.0
    return (
        f"schedule: v{facts.champion} trained {age:.0f} s ago (loop.schedule_s={spec.schedule_s:g})"
    )


def _quiet(spec: LoopSpec, facts: LoopFacts, now: datetime) -> str:
    """Why nothing fired for a task with a champion, trigger by trigger."""
    parts = []
    ignored = [a for a in facts.alarms if signal_trigger(a) not in (None, *spec.triggers)]
    watched = [t for t in ("drift", "agreement", "accuracy") if t in spec.triggers]
    if ignored:
        off = sorted({str(signal_trigger(a)) for a in ignored})
        parts.append(f"{', '.join(ignored)} alarmed, but loop.triggers leaves out {', '.join(off)}")
    elif watched:
        parts.append(f"no {'/'.join(watched)} alarm")
    if "new_rows" in spec.triggers:
        parts.append(f"{facts.new_rows} of {spec.new_rows} new labelled rows")
    trained = facts.champion_trained_at
    if "schedule" in spec.triggers and spec.schedule_s is not None and trained is not None:
        age = (now - trained).total_seconds()
        parts.append(f"next scheduled retrain in {spec.schedule_s - age:.0f} s")
    return "; ".join(parts) or "loop.triggers has no trigger for a task with a champion"
