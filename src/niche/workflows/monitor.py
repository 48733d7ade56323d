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
and on disk by the encoder's embedding cache. The reference is built in
:mod:`niche.workflows.monitor_reference`, the signals in :mod:`niche.workflows.monitor_signals`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from niche.errors import ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.workflows._context import resolve
from niche.workflows.monitor_reference import UNREADABLE, Champion, load_champion
from niche.workflows.monitor_signals import drift_signals, quality_signals, sla_signals

if TYPE_CHECKING:
    from niche.encoders import Encoder
    from niche.monitoring import Signal
    from niche.registry import Registry, StoredTrafficRecord
    from niche.registry.records import AlertRecord, TaskRecord
    from niche.workflows.alerts import AlertWebhooks

__all__ = [
    "MAX_WINDOW_ROWS",
    "MonitorReport",
    "monitor",
    "parse_window",
    "verdict",
]

MAX_WINDOW_ROWS: Final = 100_000
"""The most records a duration window reads (its newest): a check stays bounded on a busy
task."""


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
        champion: Champion | None = None
        try:
            champion = load_champion(
                record,
                spec,
                settings,
                registry,
                encoder=encoder,
                seed=seed,
                progress=progress,
            )
            notes.extend(champion.reference.notes)
        except UNREADABLE as exc:  # its artifact is gone: still check what traffic shows
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
        signals += drift_signals(
            champion,
            spec,
            ours,
            serving,
            database=registry.database_url,
            seed=seed,
            progress=progress,
        )
        signals += quality_signals(champion, spec, ours)
    signals += sla_signals(spec, records)
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
