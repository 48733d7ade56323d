"""Watch each task's champion over the latest window of its traffic, against a reference.

    >>> [report] = monitor("banking77", window="1h")
    >>> [(s.name, s.alarm) for s in report.signals][:3]
    [('input_drift', False), ('input_drift_projection', False), ('prediction_drift', False)]
    >>> report.to_dict()["signals"][0]["p_value"]
    0.42

The current window is the task's latest ``monitoring.window`` records (a count, or a
duration back from now); the drift signals read those the champion answered or cascaded
from. The reference is the champion's own data: a seeded sample of its dataset version's
training rows (what its inputs looked like), its held-out rows (what its answers and
confidences look like on data it did not learn: on training rows they run high), and the
traffic of its first serving window after its promotion (its cascade rate then). Each
signal falls back to the other reference when its own is missing, and says which it used.

Signals, each computed by :mod:`niche.monitoring`: input drift on the specialist's own
embeddings (and a cheap test on a projection), prediction-mix drift, confidence drift, the
cascade rate's change, live agreement with the general model on the randomly sampled
shadow traffic (unbiased; the figure over every record with both labels is in ``detail``),
accuracy on gold-labelled records (else its estimate from the calibrated confidences), and
SLA compliance (latency p95, error rate, cost per 1k requests). A window of fewer than
``monitoring.min_rows`` records is reported with "insufficient data" and raises no alarm.

With ``store``, each check goes to ``registry.monitoring.record`` (which opens and resolves
alerts in the same transaction) and its alerts to the webhooks. The reference's embeddings
and predictions are kept in memory per model version (the loop checks every few minutes),
and on disk by the encoder's embedding cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from niche.errors import ArtifactError, ChecksumMismatchError, NotFoundError, ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.workflows._context import resolve

if TYPE_CHECKING:
    from niche.encoders import Encoder
    from niche.monitoring import InputDriftReference, Signal
    from niche.registry import ModelVersionRecord, Registry, StoredTrafficRecord
    from niche.registry.records import AlertRecord, TaskRecord
    from niche.registry.tasks import TaskSpec
    from niche.workflows.alerts import AlertWebhooks

__all__ = [
    "CASCADED_ROUTES",
    "MAX_WINDOW_ROWS",
    "MonitorReport",
    "monitor",
    "parse_window",
    "verdict",
]

CASCADED_ROUTES: Final = frozenset({"general", "general-fallback", "specialist-fallback"})
"""Routes on which the specialist was asked but the general model was too: it was unsure
(``general``; ``specialist-fallback`` when the general model then failed) or it failed
(``general-fallback``)."""

MAX_WINDOW_ROWS: Final = 100_000
"""The most records a duration window reads (its newest): a check stays bounded on a busy
task."""

_CACHED_REFERENCES: Final = 16
# What a champion whose artifact or dataset files are gone or damaged raises: its check goes
# on with what the traffic shows.
_UNREADABLE: Final = (ArtifactError, ChecksumMismatchError, NotFoundError)
_SAMPLE_LABELS: Final = 20  # labels listed in a note


def parse_window(value: int | str | None) -> int | str | None:
    """``--window`` as the monitor takes it: a number of records (``500``) or a duration
    (``1h``, ``30m``, ``2d``); None stays None (the task's ``monitoring.window``).

    >>> parse_window("500"), parse_window("1h")
    (500, '1h')
    """
    from niche.registry.tasks import MonitoringSpec

    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value.strip())
    try:
        MonitoringSpec(window=value)
    except ValidationError:
        raise ValidationError(
            f"--window {value!r} is neither a number of records (500) nor a duration such "
            "as 30m, 1h or 2d",
            param="window",
        ) from None
    return value


def verdict(signal: Mapping[str, Any]) -> str:
    """A signal's verdict in words: ``ALARM``, ``ok`` or ``insufficient data``.

    >>> verdict({"name": "input_drift", "statistic": 0.2, "p_value": 0.001, "alarm": True})
    'ALARM'
    """
    from niche.registry.stores.monitoring import is_insufficient

    if signal.get("alarm"):
        return "ALARM"
    return "insufficient data" if is_insufficient(signal) else "ok"


@dataclass(frozen=True)
class MonitorReport:
    """One check of ``task``'s champion ``model_version`` (None: it has none) at ``at``.

    ``window``: ``{"size", "since", "until", "rows", "first_id", "last_id",
    "champion_rows", "reference": {"training_rows", "held_out_rows", "serving_rows", …}}``;
    ``signals``: each a :class:`niche.monitoring.Signal`; ``alarm``: whether any raised one;
    ``opened``/``resolved``: the alerts this check changed (when stored); ``notes``: what
    could not be checked and why; ``report_id``: the stored report's id.

        >>> report.to_dict()["signals"][0]["name"]
        'input_drift'
    """

    task: str
    model_version: int | None
    at: datetime
    window: dict[str, Any]
    signals: list[Signal]
    alarm: bool
    opened: list[AlertRecord] = field(default_factory=list)
    resolved: list[AlertRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """What ``niche monitor --json`` prints for the task (JSON-ready)."""
        return {
            "task": self.task,
            "model_version": self.model_version,
            "at": self.at.isoformat(),
            "window": self.window,
            "signals": [signal.to_dict() for signal in self.signals],
            "alarm": self.alarm,
            "alerts": {
                "opened": [alert.to_dict() for alert in self.opened],
                "resolved": [alert.to_dict() for alert in self.resolved],
            },
            "notes": list(self.notes),
            "report_id": self.report_id,
        }

    def summary(self) -> dict[str, Any]:
        """What a webhook gets of the check: the task, version, time, window and the
        signals that alarm."""
        return {
            "task": self.task,
            "model_version": self.model_version,
            "at": self.at.isoformat(),
            "report_id": self.report_id,
            "alarm": self.alarm,
            "alarms": [signal.name for signal in self.signals if signal.alarm],
            "window": {k: v for k, v in self.window.items() if k != "reference"},
        }


# -- the reference: computed once per model version and process ------------------------------


@dataclass(frozen=True)
class _Reference:
    """What a champion's checks compare with, from its dataset version (not its traffic)."""

    inputs: InputDriftReference | None  # fitted on the training rows' embeddings
    labels: list[str]  # the champion's answers on held-out rows
    confidences: np.ndarray  # its top-class confidences on them
    training_rows: int
    held_out_rows: int
    held_out_split: str | None  # "test", or "train" when the version has no test rows
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Champion:
    record: ModelVersionRecord
    encoder: Encoder | None  # None: its kind has no encoder (remote, zero-shot)
    reference: _Reference
    # The last window's embeddings, by database URL and record id: the next check (the loop
    # checks every few minutes) encodes only the records that arrived since.
    seen: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    def embed(
        self, database: str, records: Sequence[StoredTrafficRecord], progress: Progress
    ) -> np.ndarray:
        """Embeddings of ``records``' texts (each has one), reusing the last window's."""
        if self.encoder is None:
            raise ValueError("a champion without an encoder embeds nothing")
        known = self.seen.get(database, {})
        missing = [r for r in records if r.id not in known]
        fresh = {r.id: known[r.id] for r in records if r.id in known}
        if missing:
            with progress.task("embedding the window", total=len(missing)) as step:
                vectors = np.asarray(
                    self.encoder.encode([_text(r) or "" for r in missing]), dtype=np.float32
                )
                step(len(missing))
            fresh.update(zip((r.id for r in missing), vectors, strict=True))
        self.seen[database] = fresh
        return np.stack([fresh[r.id] for r in records])


_CACHE: OrderedDict[tuple[Any, ...], _Champion] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _sample(texts: Sequence[str], size: int, rng: np.random.Generator) -> list[str]:
    if len(texts) <= size:
        return list(texts)
    chosen = np.sort(rng.choice(len(texts), size=size, replace=False))
    return [texts[i] for i in chosen]


def _load_champion(
    record: ModelVersionRecord,
    spec: TaskSpec,
    settings: Settings,
    registry: Registry,
    *,
    encoder: Encoder | None,
    seed: int,
    progress: Progress,
) -> _Champion:
    """The champion's encoder and reference, cached per (artifact, dataset, sample, encoder)."""
    size = spec.monitoring.reference_rows
    encoder_key = id(encoder) if encoder is not None else str(settings.cache_dir)
    key = (record.artifact_digest, record.dataset_fingerprint, size, seed, encoder_key)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    champion = _build_champion(
        record, settings, registry, encoder=encoder, size=size, seed=seed, progress=progress
    )
    with _CACHE_LOCK:
        _CACHE[key] = champion
        while len(_CACHE) > _CACHED_REFERENCES:
            _CACHE.popitem(last=False)
    return champion


def _build_champion(
    record: ModelVersionRecord,
    settings: Settings,
    registry: Registry,
    *,
    encoder: Encoder | None,
    size: int,
    seed: int,
    progress: Progress,
) -> _Champion:
    from niche.monitoring import InputDriftReference
    from niche.workflows.data import open_dataset
    from niche.workflows.models import load_specialist

    notes: list[str] = []
    empty = _Reference(None, [], np.zeros(0), 0, 0, None)
    predictor = load_specialist(record, settings, encoder=encoder)
    own_encoder = getattr(predictor, "encoder", None)
    proba = getattr(predictor, "predict_proba_embeddings", None)
    label_set = list(getattr(predictor, "label_set", None) or [])
    if own_encoder is None or proba is None or not label_set:
        notes.append(
            f"v{record.version} ({record.kind}) has no encoder of its own: input drift is not "
            "checked, and its answers are compared with its first serving window"
        )
        return _Champion(record, None, replace(empty, notes=tuple(notes)))
    try:
        version = open_dataset(record.dataset_fingerprint, settings, registry=registry)
    except _UNREADABLE as exc:
        notes.append(
            f"the training rows of v{record.version} (dataset {record.dataset_fingerprint[:12]}) "
            f"cannot be read ({exc}): compared with its first serving window only"
        )
        return _Champion(record, own_encoder, replace(empty, notes=tuple(notes)))
    rng = np.random.default_rng(seed)
    train = version.splits["train"].texts
    test = version.splits["test"].texts if "test" in version.splits else ()
    held_out_split = "test" if test else "train"
    if not test:
        notes.append(
            f"dataset {record.dataset_fingerprint[:12]} has no held-out rows: confidences are "
            "compared with those on training rows, which run high"
        )
    train_sample = _sample(train, size, rng)
    held_out = _sample(test or train, size, rng)
    with progress.task("embedding the reference", total=len(train_sample) + len(held_out)) as step:
        embeddings = np.asarray(own_encoder.encode(train_sample), dtype=np.float32)
        step(len(train_sample))
        probabilities = np.asarray(proba(np.asarray(own_encoder.encode(held_out))))
        step(len(held_out))
    best = probabilities.argmax(axis=1)
    reference = _Reference(
        inputs=InputDriftReference(seed=seed).fit(embeddings),
        labels=[label_set[i] for i in best],
        confidences=probabilities[np.arange(len(best)), best],
        training_rows=len(train_sample),
        held_out_rows=len(held_out),
        held_out_split=held_out_split,
        notes=tuple(notes),
    )
    return _Champion(record, own_encoder, reference)


# -- windows of traffic ----------------------------------------------------------------------


def _window(
    registry: Registry,
    task: str,
    size: int | str,
    now: datetime,
    *,
    model_version: int | None = None,
) -> list[StoredTrafficRecord]:
    """The task's latest ``size`` records (or those since ``now - size``), oldest first."""
    from niche.registry.since import parse_since

    if isinstance(size, int):
        return registry.traffic.window(task, model_version=model_version, limit=size, newest=True)
    return registry.traffic.window(
        task,
        since=parse_since(size, now),
        model_version=model_version,
        limit=MAX_WINDOW_ROWS,
        newest=True,
    )


def _serving_window(
    registry: Registry,
    task: str,
    version: int,
    size: int | str,
    now: datetime,
    *,
    before_id: int | None,
) -> tuple[list[StoredTrafficRecord], datetime | None]:
    """The first ``size`` records (or ``size`` of time) ``version`` answered after it last
    became champion, before record ``before_id`` (the current window); and when that was."""
    from niche.registry.since import parse_since

    moves = [e for e in registry.promotions.history(task, "champion") if e.to_version == version]
    promoted = moves[-1].at if moves else None
    through = before_id - 1 if before_id is not None else None
    if through is not None and through < 0:
        return [], promoted
    if isinstance(size, int):
        records = registry.traffic.window(
            task, since=promoted, through_id=through, model_version=version, limit=size
        )
    else:
        first = registry.traffic.window(
            task, since=promoted, through_id=through, model_version=version, limit=1
        )
        if not first:
            return [], promoted
        records = registry.traffic.window(
            task,
            since=first[0].at,
            until=first[0].at + (now - parse_since(size, now)),
            through_id=through,
            model_version=version,
            limit=MAX_WINDOW_ROWS,
        )
    return records, promoted


def _text(record: StoredTrafficRecord) -> str | None:
    if record.text:
        return record.text
    return record.input if isinstance(record.input, str) and record.input else None


# -- the signals -----------------------------------------------------------------------------


def _too_few(signal: Signal, n: int, min_rows: int) -> Signal:
    """``signal`` on a window under ``monitoring.min_rows``: kept for reading, never an alarm."""
    if n >= min_rows:
        return signal
    reason = f"{n} rows in the window, fewer than monitoring.min_rows ({min_rows})"
    return replace(
        signal, alarm=False, detail={**signal.detail, "insufficient": True, "reason": reason}
    )


def _with(signal: Signal, **detail: Any) -> Signal:
    return replace(signal, detail={**signal.detail, **detail})


def _drift_signals(
    champion: _Champion | None,
    spec: TaskSpec,
    ours: list[StoredTrafficRecord],
    serving: list[StoredTrafficRecord],
    *,
    database: str,
    seed: int,
    progress: Progress,
) -> list[Signal]:
    """Input, prediction-mix, confidence and cascade-rate drift of the champion's window."""
    from niche import monitoring
    from niche.monitoring import InputDriftReference

    mon = spec.monitoring
    reference = champion.reference if champion is not None else None
    signals: list[Signal] = []
    n = len(ours)

    # Input drift: the training rows' embeddings (else the first serving window's texts).
    with_text = [r for r in ours if _text(r) is not None]
    encoder = champion.encoder if champion is not None else None
    names = ("input_drift", "input_drift_projection")
    if encoder is None:
        why = "the specialist has no encoder" if champion is not None else "no reference"
        signals += [
            _unjudged_signal(name, "skipped", mon.input_drift_alpha, n, why) for name in names
        ]
    else:
        source = "training rows"
        inputs = reference.inputs if reference is not None else None
        if inputs is None:
            source = "first serving window"
            serving_texts = [t for t in map(_text, serving) if t is not None]
            if serving_texts:
                inputs = InputDriftReference(seed=seed).fit(encoder.encode(serving_texts))
        if inputs is None or not with_text or champion is None:
            why = "no reference rows" if inputs is None else "no texts in the window"
            signals += [
                _unjudged_signal(name, "skipped", mon.input_drift_alpha, len(with_text), why)
                for name in names
            ]
        else:
            current = champion.embed(database, with_text, progress)
            for test in (inputs.input_drift, inputs.input_drift_projection):
                signal = test(current, alpha=mon.input_drift_alpha, min_rows=mon.min_rows)
                signals.append(_with(signal, reference=source))

    # Prediction mix and confidence: held-out rows (else the first serving window).
    labels_now = [r.specialist_label for r in ours if r.specialist_label is not None]
    confidences_now = np.array(
        [r.specialist_confidence for r in ours if r.specialist_confidence is not None], dtype=float
    )
    if reference is not None and reference.labels:
        source = f"held-out rows ({reference.held_out_split})"
        labels_ref, confidences_ref = reference.labels, reference.confidences
    else:
        source = "first serving window"
        labels_ref = [r.specialist_label for r in serving if r.specialist_label is not None]
        confidences_ref = np.array(
            [r.specialist_confidence for r in serving if r.specialist_confidence is not None],
            dtype=float,
        )
    label_set = sorted(set(spec.labels) | set(labels_ref) | set(labels_now))
    if labels_ref and labels_now:
        signal = monitoring.prediction_drift(
            labels_ref,
            labels_now,
            labels=label_set,
            alpha=mon.prediction_drift_alpha,
            min_rows=mon.min_rows,
        )
        signals.append(_with(signal, reference=source))
    else:
        signals.append(
            _unjudged_signal(
                "prediction_drift",
                "skipped",
                mon.prediction_drift_alpha,
                len(labels_now),
                "no reference answers" if not labels_ref else "no answers in the window",
            )
        )
    if len(confidences_ref) and len(confidences_now):
        signal = monitoring.confidence_drift(
            confidences_ref,
            confidences_now,
            alpha=mon.confidence_drift_alpha,
            min_rows=mon.min_rows,
        )
        signals.append(_with(signal, reference=source))
    else:
        signals.append(
            _unjudged_signal(
                "confidence_drift",
                "skipped",
                mon.confidence_drift_alpha,
                len(confidences_now),
                "no reference confidences" if not len(confidences_ref) else "none in the window",
            )
        )

    # Cascade rate: the first serving window (else what held-out confidences predict).
    cascaded_now = sum(r.route in CASCADED_ROUTES for r in ours)
    if len(serving) >= mon.min_rows:
        ref_cascaded, ref_n = sum(r.route in CASCADED_ROUTES for r in serving), len(serving)
        source = "first serving window"
    elif reference is not None and len(reference.confidences):
        ref_cascaded = int(np.sum(reference.confidences < spec.cascade_threshold))
        ref_n = len(reference.confidences)
        source = f"held-out rows ({reference.held_out_split}) under cascade_threshold"
    else:
        ref_cascaded, ref_n, source = 0, 0, ""
    if ref_n and n:
        signal = monitoring.cascade_rate(
            ref_cascaded,
            ref_n,
            cascaded_now,
            n,
            alpha=mon.cascade_rate_alpha,
            min_rows=mon.min_rows,
        )
        signals.append(_with(signal, reference=source))
    else:
        signals.append(
            _unjudged_signal(
                "cascade_rate",
                "skipped",
                mon.cascade_rate_alpha,
                n,
                "no reference window yet" if not ref_n else "no records in the window",
            )
        )
    return signals


def _quality_signals(
    champion: _Champion | None, spec: TaskSpec, ours: list[StoredTrafficRecord]
) -> list[Signal]:
    """Agreement with the general model, and accuracy (on gold labels, else estimated)."""
    from niche import monitoring

    mon = spec.monitoring
    signals: list[Signal] = []
    both = [r for r in ours if r.specialist_label is not None and r.general_label is not None]
    sampled = [r for r in both if r.sampled]
    agreed = sum(r.specialist_label == r.general_label for r in sampled)
    every = {"n": len(both), "agreed": sum(r.specialist_label == r.general_label for r in both)}
    if sampled:
        signal = monitoring.agreement(agreed, len(sampled), floor=mon.min_agreement)
        signals.append(_with(signal, all_records=every, sample="random shadow requests"))
    else:
        signals.append(
            _unjudged_signal(
                "agreement",
                "wilson",
                mon.min_agreement,
                0,
                "no randomly sampled shadow requests in the window"
                + (f" ({len(both)} cascaded or shadowed ones, biased)" if both else ""),
            )
        )
    floor = mon.min_accuracy if mon.min_accuracy is not None else spec.sla.min_quality
    gold = [r for r in ours if r.gold_label is not None and r.specialist_label is not None]
    if gold:
        correct = sum(r.specialist_label == r.gold_label for r in gold)
        signals.append(monitoring.accuracy(correct, len(gold), floor=floor))
    else:
        confidences = np.array(
            [r.specialist_confidence for r in ours if r.specialist_confidence is not None],
            dtype=float,
        )
        if len(confidences):
            signal = monitoring.estimated_accuracy(confidences, floor=floor)
            signals.append(_too_few(signal, len(confidences), mon.min_rows))
        else:
            signals.append(
                _unjudged_signal(
                    "estimated_accuracy", "cbpe", floor, 0, "no specialist answers in the window"
                )
            )
    return signals


def _sla_signals(spec: TaskSpec, records: list[StoredTrafficRecord]) -> list[Signal]:
    """Latency p95, error rate and cost per 1k requests over every record of the window.

    A failed request is one the gateway answered with a 5xx (client errors are not the
    service's failures)."""
    from niche import monitoring

    mon = spec.monitoring
    signals = monitoring.sla_signals(
        np.array([r.latency_ms for r in records], dtype=float),
        np.array([r.status >= 500 for r in records], dtype=bool),
        np.array([r.cost_usd for r in records], dtype=float),
        latency_p95_ms=spec.sla.latency_p95_ms,
        max_error_rate=mon.max_error_rate,
        max_cost_per_1k_usd=spec.sla.max_cost_per_1k_usd,
    )
    return [_too_few(signal, len(records), mon.min_rows) for signal in signals]


# -- one task --------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _check(
    task: TaskRecord,
    settings: Settings,
    registry: Registry,
    *,
    window: int | str | None,
    encoder: Encoder | None,
    now: datetime,
    seed: int,
    progress: Progress,
) -> MonitorReport:
    spec = task.spec
    size = window if window is not None else spec.monitoring.window
    records = _window(registry, spec.name, size, now)
    notes: list[str] = []
    if isinstance(size, str) and len(records) == MAX_WINDOW_ROWS:
        notes.append(f"the window holds more records than are read: its newest {MAX_WINDOW_ROWS}")
    record = registry.promotions.get(spec.name, "champion")
    info: dict[str, Any] = {
        "size": size,
        "since": _iso(records[0].at if records else None),
        "until": _iso(records[-1].at if records else None),
        "rows": len(records),
        "first_id": records[0].id if records else None,
        "last_id": records[-1].id if records else None,
    }
    signals: list[Signal] = []
    if record is None:
        notes.append("no champion: only the traffic's SLA is checked")
        info["reference"] = {"training_rows": 0, "held_out_rows": 0, "serving_rows": 0}
    else:
        champion: _Champion | None = None
        try:
            champion = _load_champion(
                record,
                spec,
                settings,
                registry,
                encoder=encoder,
                seed=seed,
                progress=progress,
            )
            notes.extend(champion.reference.notes)
        except _UNREADABLE as exc:  # its artifact is gone: still check what traffic shows
            notes.append(f"v{record.version} cannot be loaded ({exc}): no reference rows")
        ours = _window(registry, spec.name, size, now, model_version=record.version)
        serving, promoted = _serving_window(
            registry, spec.name, record.version, size, now, before_id=ours[0].id if ours else None
        )
        if not ours:
            notes.append(f"v{record.version} answered nothing in the window")
        reference = champion.reference if champion is not None else None
        info["champion_rows"] = len(ours)
        info["reference"] = {
            "training_rows": reference.training_rows if reference else 0,
            "held_out_rows": reference.held_out_rows if reference else 0,
            "serving_rows": len(serving),
            "serving_first_id": serving[0].id if serving else None,
            "serving_last_id": serving[-1].id if serving else None,
            "promoted_at": _iso(promoted),
        }
        signals += _drift_signals(
            champion,
            spec,
            ours,
            serving,
            database=registry.database_url,
            seed=seed,
            progress=progress,
        )
        signals += _quality_signals(champion, spec, ours)
    signals += _sla_signals(spec, records)
    return MonitorReport(
        task=spec.name,
        model_version=record.version if record is not None else None,
        at=now,
        window=info,
        signals=signals,
        alarm=any(signal.alarm for signal in signals),
        notes=notes,
    )


def monitor(
    task: str | None = None,
    settings: Settings | None = None,
    *,
    window: int | str | None = None,
    registry: Registry | None = None,
    encoder: Encoder | None = None,
    now: datetime | None = None,
    store: bool = True,
    seed: int | None = None,
    progress: Progress = NO_PROGRESS,
    webhooks: AlertWebhooks | None = None,
) -> list[MonitorReport]:
    """Check ``task``'s champion (or every task's) over its latest window; one report each.

    ``window`` overrides the tasks' ``monitoring.window`` (records, or a duration such as
    ``"1h"``); ``encoder`` replaces the settings' (the champion's kind must accept it);
    ``now`` is the check's time (default: the registry clock's now); ``seed`` picks the reference sample
    and seeds the permutation tests (default ``NICHE_SEED``). With ``store`` (the default)
    each report is stored, its alerts opened or resolved, and those sent to ``webhooks``
    (default: ``NICHE_ALERT_WEBHOOKS``'). An unknown task is a
    :class:`~niche.errors.TaskNotFoundError` listing the known ones.

        >>> [report] = monitor("banking77", window=500)
        >>> report.alarm, [s.name for s in report.signals if s.alarm]
        (True, ['input_drift', 'confidence_drift'])
    """
    from niche.workflows.alerts import alert_payloads, alert_webhooks

    settings, registry = resolve(settings, registry)
    window = parse_window(window)
    now = now if now is not None else registry.database.now()
    if now.tzinfo is None:
        raise ValidationError("now must be a timezone-aware datetime", param="now")
    seed = int(settings.get("NICHE_SEED")) if seed is None else seed
    tasks = [registry.tasks.get(task)] if task is not None else registry.tasks.all()
    hooks = webhooks if webhooks is not None else (alert_webhooks(settings) if store else None)
    reports: list[MonitorReport] = []
    for record in tasks:
        report = _check(
            record,
            settings,
            registry,
            window=window,
            encoder=encoder,
            now=now,
            seed=seed,
            progress=progress,
        )
        if store:
            stored, opened, resolved = registry.monitoring.record(
                report.task,
                model_version=report.model_version,
                window=report.window,
                signals=[signal.to_dict() for signal in report.signals],
                alarm=report.alarm,
                at=report.at,
            )
            report = replace(report, opened=opened, resolved=resolved, report_id=stored.id)
            if hooks is not None:
                for payload in alert_payloads(report.summary(), opened, resolved):
                    hooks.send(payload)
        reports.append(report)
    return reports


def _unjudged_signal(
    name: str, method: str, threshold: float | None, n: int, reason: str
) -> Signal:
    """A signal that could not be computed: reported, never an alarm."""
    from niche.monitoring.signals import insufficient

    return insufficient(name, method, threshold, n, reason=reason)
