"""A scheduled shift of a labelled stream: which row a replay sends at each position.

Pure and seeded: :func:`parse_shift` reads a ``--shift`` spec into phases, :func:`build_stream`
turns a dataset's rows and those phases into the ordered requests (text, gold label, phase),
the same for the same seed. ``niche replay`` sends them; tests check them without a gateway.

    >>> phases = parse_shift("after=500,share=0.10,labels=card_arrival|lost_or_stolen_card")
    >>> stream = build_stream(rows, phases, seed=0, limit=1000)
    >>> sum(item.phase for item in stream), stream[0].phase
    (500, 0)

The grammar (phases separated by ``;``, each a comma-separated list of ``KEY=VALUE``)::

    SPEC   := PHASE (";" PHASE)*
    PHASE  := "after=" K "," TARGET ["," "share=" F]      (keys in any order)
    TARGET := "labels=" LABEL ("|" LABEL)*                  only rows of these labels
            | "domain=" DOMAIN                              a CLINC150 domain's rows
            | "mix=" LABEL ":" W ("," LABEL ":" W)*         these labels, drawn with weights W

``after=K``: the phase starts at request K (0-based: K requests come before it), K strictly
increasing over phases. ``share=F`` (0 < F ≤ 1): only F of the phase's requests come from its
target, spread evenly (any run of n requests holds ⌊nF⌋ or ⌈nF⌉ of them); the others go on
as the stream before it. Without ``share`` the whole stream switches. Labels a ``labels=`` or
``domain=`` phase brings in are held back from the phases before it, so a shift brings labels
the stream has not shown yet. No row is sent twice: the stream ends at ``limit`` or when the
rows a position needs run out, whichever comes first.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from niche.data.catalog import CLINC150_DOMAINS
from niche.data.rows import Rows
from niche.errors import ValidationError

__all__ = ["SHIFT_KEYS", "ShiftPhase", "StreamItem", "build_stream", "parse_shift"]

SHIFT_KEYS = ("after", "labels", "domain", "mix", "share")
"""The keys a ``--shift`` phase takes."""
_TARGETS = ("labels", "domain", "mix")


@dataclass(frozen=True)
class ShiftPhase:
    """One scheduled change: from request ``after`` on, draw from one target.

    Exactly one of ``labels``, ``domain`` and ``mix`` (label, weight pairs) is set. ``share``
    is the part of the requests that come from the target (None: all of them).

        >>> ShiftPhase(after=500, domain="travel").describe()
        'after=500,domain=travel'
    """

    after: int
    labels: tuple[str, ...] = ()
    domain: str | None = None
    mix: tuple[tuple[str, float], ...] = ()
    share: float | None = None

    def __post_init__(self) -> None:
        targets = [bool(self.labels), self.domain is not None, bool(self.mix)]
        if sum(targets) != 1:
            raise ValidationError(
                "a shift phase needs exactly one of labels=, domain= or mix=", param="shift"
            )

    @property
    def target(self) -> str:
        """``labels``, ``domain`` or ``mix``."""
        if self.labels:
            return "labels"
        return "domain" if self.domain is not None else "mix"

    def describe(self) -> str:
        """The phase as a spec :func:`parse_shift` reads back."""
        if self.labels:
            target = "labels=" + "|".join(self.labels)
        elif self.domain is not None:
            target = f"domain={self.domain}"
        else:
            target = "mix=" + ",".join(f"{label}:{weight:g}" for label, weight in self.mix)
        share = "" if self.share is None else f",share={self.share:g}"
        return f"after={self.after}{share},{target}"


@dataclass(frozen=True)
class StreamItem:
    """One request of a replay: the text, its gold label, and the phase it belongs to
    (0 before the first shift, i after the i-th). ``feedback``: whether the replay posts the
    gold label for it."""

    text: str
    label: str
    phase: int
    feedback: bool = False


def parse_shift(spec: str) -> tuple[ShiftPhase, ...]:
    """The phases of a ``--shift`` spec (see the module for the grammar).

    Raises :class:`~niche.errors.ValidationError` naming the phase and the part at fault.

    >>> parse_shift("after=500,domain=travel;after=900,mix=balance:0.7,bill_due:0.3")[1].mix
    (('balance', 0.7), ('bill_due', 0.3))
    """
    if not spec or not spec.strip():
        raise ValidationError(
            "--shift is empty; e.g. --shift after=500,domain=travel", param="shift"
        )
    parts = spec.split(";")
    phases: list[ShiftPhase] = []
    for number, part in enumerate(parts, start=1):
        where = f"--shift phase {number} ({part.strip()!r})" if len(parts) > 1 else "--shift"
        phase = _parse_phase(part.strip(), where)
        if phases and phase.after <= phases[-1].after:
            raise ValidationError(
                f"{where}: after={phase.after} must be later than the phase before it "
                f"(after={phases[-1].after})",
                param="shift",
            )
        phases.append(phase)
    return tuple(phases)


def _pairs(part: str, where: str) -> dict[str, str]:
    """``KEY=VALUE`` pairs of a phase; a piece without ``=`` continues a ``mix=`` list."""
    if not part:
        raise ValidationError(f"{where} is empty", param="shift")
    values: dict[str, str] = {}
    last: str | None = None
    for piece in part.split(","):
        piece = piece.strip()
        key, sep, value = piece.partition("=")
        if not sep:
            if last == "mix" and piece:
                values["mix"] += "," + piece
                continue
            hint = " (labels= separates labels with '|')" if last == "labels" else ""
            raise ValidationError(
                f"{where}: {piece!r} is not KEY=VALUE (keys: {', '.join(SHIFT_KEYS)}){hint}",
                param="shift",
            )
        key = key.strip()
        if key not in SHIFT_KEYS:
            raise ValidationError(
                f"{where}: unknown key {key!r}; a phase takes {', '.join(SHIFT_KEYS)}",
                param="shift",
            )
        if key in values:
            raise ValidationError(f"{where}: {key}= is given twice", param="shift")
        values[key] = value.strip()
        last = key
    return values


def _parse_phase(part: str, where: str) -> ShiftPhase:
    values = _pairs(part, where)
    if "after" not in values:
        raise ValidationError(
            f"{where}: after=K is missing (the request the phase starts at)", param="shift"
        )
    after = values["after"]
    if not after.isdigit() or int(after) < 1:
        raise ValidationError(
            f"{where}: after= takes a whole number of requests >= 1, got {after!r}", param="shift"
        )
    targets = [key for key in _TARGETS if key in values]
    if len(targets) != 1:
        raise ValidationError(
            f"{where}: give exactly one of labels=, domain=, mix= "
            f"({'got ' + ' and '.join(t + '=' for t in targets) if targets else 'got none'})",
            param="shift",
        )
    share = _share(values["share"], where) if "share" in values else None
    target = targets[0]
    if target == "labels":
        return ShiftPhase(after=int(after), labels=_labels(values["labels"], where), share=share)
    if target == "domain":
        domain = values["domain"]
        if domain not in CLINC150_DOMAINS:
            raise ValidationError(
                f"{where}: unknown domain {domain!r}; CLINC150 has {', '.join(CLINC150_DOMAINS)}",
                param="shift",
            )
        return ShiftPhase(after=int(after), domain=domain, share=share)
    return ShiftPhase(after=int(after), mix=_mix(values["mix"], where), share=share)


def _share(raw: str, where: str) -> float:
    try:
        share = float(raw)
    except ValueError:
        share = math.nan
    if not 0 < share <= 1:
        raise ValidationError(
            f"{where}: share= takes a fraction in (0, 1], e.g. 0.10, got {raw!r}", param="shift"
        )
    return share


def _labels(raw: str, where: str) -> tuple[str, ...]:
    labels = tuple(label.strip() for label in raw.split("|"))
    if not all(labels):
        raise ValidationError(
            f"{where}: labels= takes label names separated by '|', got {raw!r}", param="shift"
        )
    if len(set(labels)) != len(labels):
        raise ValidationError(f"{where}: labels= names a label twice: {raw!r}", param="shift")
    return labels


def _mix(raw: str, where: str) -> tuple[tuple[str, float], ...]:
    mix: list[tuple[str, float]] = []
    for item in raw.split(","):
        label, sep, weight = item.strip().rpartition(":")
        try:
            value = float(weight) if sep and label else math.nan
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValidationError(
                f"{where}: mix= takes LABEL:WEIGHT pairs with positive weights, e.g. "
                f"mix=card_arrival:0.5,lost_or_stolen_card:0.5; got {item.strip()!r}",
                param="shift",
            )
        if any(label == seen for seen, _ in mix):
            raise ValidationError(f"{where}: mix= names {label!r} twice", param="shift")
        mix.append((label, value))
    return tuple(mix)


# -- building the stream -------------------------------------------------------------------


class _Bank:
    """A dataset's rows in a seeded order, and which were sent: shared by every source that
    draws from them, so no row goes twice."""

    def __init__(self, rows: Rows, order: list[int]) -> None:
        self.rows = rows
        self.order = order
        self.used: set[int] = set()

    def labels(self) -> set[str]:
        return set(self.rows.labels)


class _Source:
    """Draws the next unused row of its candidates (None: none left)."""

    def __init__(self, bank: _Bank, candidates: list[int]) -> None:
        self.bank = bank
        self.candidates = candidates
        self.at = 0

    def draw(self) -> tuple[str, str] | None:
        while self.at < len(self.candidates):
            index = self.candidates[self.at]
            self.at += 1
            if index not in self.bank.used:
                self.bank.used.add(index)
                return self.bank.rows.texts[index], self.bank.rows.labels[index]
        return None


def _label_source(bank: _Bank, allowed: frozenset[str] | None) -> _Source:
    """Rows of ``bank`` whose label is in ``allowed`` (None: any), in the bank's order."""
    labels = bank.rows.labels
    return _Source(bank, [i for i in bank.order if allowed is None or labels[i] in allowed])


class _MixSource(_Source):
    """A label drawn with the mix's weights, then that label's next unused row."""

    def __init__(self, bank: _Bank, mix: tuple[tuple[str, float], ...], rng: random.Random):
        super().__init__(bank, [])
        self.rng = rng
        self.labels = [label for label, _ in mix]
        self.weights = [weight for _, weight in mix]
        self.per_label = {label: _label_source(bank, frozenset([label])) for label in self.labels}

    def draw(self) -> tuple[str, str] | None:
        (label,) = self.rng.choices(self.labels, weights=self.weights)
        return self.per_label[label].draw()


class _ShareSource(_Source):
    """``share`` of the draws from ``new``, spread evenly; the others from ``old``."""

    def __init__(self, old: _Source, new: _Source, share: float) -> None:
        super().__init__(old.bank, [])
        self.old, self.new = old, new
        self.share = Fraction(str(share))  # exact: 0.1 * 10 must be 1
        self.drawn = 0

    def draw(self) -> tuple[str, str] | None:
        k = self.drawn
        self.drawn += 1
        take_new = math.floor((k + 1) * self.share) > math.floor(k * self.share)
        return (self.new if take_new else self.old).draw()


def build_stream(
    rows: Rows,
    phases: Sequence[ShiftPhase] = (),
    *,
    seed: int,
    limit: int | None = None,
    domains: Mapping[str, Rows] | None = None,
    feedback_share: float = 0.0,
) -> list[StreamItem]:
    """The requests a replay sends, in order: ``rows`` in a seeded order, shifted by
    ``phases`` (see the module), at most ``limit`` of them.

    ``domains`` holds the rows of each ``domain=`` phase's CLINC150 domain. ``feedback_share``
    marks a seeded share of the requests for feedback (each independently, so a request's mark
    does not depend on ``limit``). A longer ``limit`` extends the stream: the first n items
    are the same for any ``limit`` ≥ n.

    Raises :class:`~niche.errors.ValidationError` for a phase naming labels the rows do not
    have, or when the rows run out before a phase that ``limit`` would reach.

    >>> [item.label for item in build_stream(rows, seed=0, limit=3)]
    ['card_arrival', 'top_up_failed', 'card_arrival']
    """
    if limit is not None and limit < 0:
        raise ValidationError(f"limit must be >= 0, got {limit}", param="limit")
    if not 0 <= feedback_share <= 1:
        raise ValidationError(
            f"feedback share must be in [0, 1], got {feedback_share}", param="feedback_share"
        )
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    bank = _Bank(rows, order)
    banks: dict[str, _Bank] = {}
    for phase in phases:
        if phase.domain is not None and phase.domain not in banks:
            domain_rows = (domains or {}).get(phase.domain)
            if domain_rows is None:
                raise ValidationError(
                    f"--shift {phase.describe()}: the rows of domain {phase.domain!r} are missing",
                    param="shift",
                )
            domain_order = list(range(len(domain_rows)))
            rng.shuffle(domain_order)
            banks[phase.domain] = _Bank(domain_rows, domain_order)
    brought = [_brought_in(phase, bank, banks) for phase in phases]
    sources: list[_Source] = []
    for number in range(len(phases) + 1):
        held_back = frozenset().union(*brought[number:])
        if number == 0:
            sources.append(_label_source(bank, frozenset(bank.labels() - held_back)))
            continue
        phase = phases[number - 1]
        new = _target_source(phase, bank, banks, held_back, rng)
        sources.append(new if phase.share is None else _ShareSource(sources[-1], new, phase.share))
    marks = random.Random(f"{seed}:feedback")
    stream: list[StreamItem] = []
    current = 0
    while limit is None or len(stream) < limit:
        while current < len(phases) and len(stream) >= phases[current].after:
            current += 1
        drawn = sources[current].draw()
        if drawn is None:
            _check_reached(phases, current, len(stream), limit)
            break
        mark = marks.random() < feedback_share
        stream.append(StreamItem(text=drawn[0], label=drawn[1], phase=current, feedback=mark))
    return stream


def _brought_in(phase: ShiftPhase, bank: _Bank, banks: Mapping[str, _Bank]) -> frozenset[str]:
    """The labels ``phase`` brings into the stream (held back before it); checks they exist."""
    known = bank.labels()
    if phase.labels:
        _known(phase, phase.labels, known)
        return frozenset(phase.labels)
    if phase.domain is not None:
        return frozenset(banks[phase.domain].labels())
    _known(phase, [label for label, _ in phase.mix], known)
    return frozenset()


def _known(phase: ShiftPhase, labels: Sequence[str], known: set[str]) -> None:
    unknown = [label for label in labels if label not in known]
    if unknown:
        sample = ", ".join(sorted(known)[:10]) + (", …" if len(known) > 10 else "")
        raise ValidationError(
            f"--shift {phase.describe()}: the data has no label(s) {', '.join(unknown)} "
            f"(its {len(known)} labels: {sample})",
            param="shift",
        )


def _target_source(
    phase: ShiftPhase,
    bank: _Bank,
    banks: Mapping[str, _Bank],
    held_back: frozenset[str],
    rng: random.Random,
) -> _Source:
    if phase.domain is not None:
        return _label_source(banks[phase.domain], None)
    if phase.labels:
        return _label_source(bank, frozenset(phase.labels))
    later = sorted(label for label, _ in phase.mix if label in held_back)
    if later:
        raise ValidationError(
            f"--shift {phase.describe()}: {', '.join(later)} only come(s) in with a later "
            "phase; a mix before it cannot draw them",
            param="shift",
        )
    return _MixSource(bank, phase.mix, rng)


def _check_reached(
    phases: Sequence[ShiftPhase], current: int, sent: int, limit: int | None
) -> None:
    """Rows ran out at ``sent``: an error when a phase ``limit`` would reach never starts."""
    for phase in phases[current:]:
        if phase.after >= sent and (limit is None or phase.after < limit):
            raise ValidationError(
                f"--shift {phase.describe()}: the data runs out of rows after {sent} "
                f"request(s), before the shift at request {phase.after}",
                param="shift",
            )
