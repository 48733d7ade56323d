"""The closed loop: monitor → distil → train → evaluate → gate → move ``champion``, per task.

    >>> [d.action for d in loop_once(["banking77"])]
    ['promoted']
    >>> run_loop(interval_s=600)  # until stopped (Ctrl-C in ``niche loop``)

For each task whose ``loop.enabled`` is on, one pass takes the task's lease (so two loops on
one registry never retrain it at once), runs ``niche monitor``'s checks on its champion,
gathers the facts the task's ``loop.*`` policy needs and lets
:func:`~niche.workflows.loop_policy.decide` — a pure function of the policy, the facts and
the time — say whether to retrain and why. A retrain
distils the task's captured traffic (teacher and gold labels) into a dataset version, trains
a specialist on it, evaluates it against the task's general model and gates it for
``champion`` (:func:`~niche.workflows.retrain.train_evaluate_promote`); a running gateway
picks a moved champion up at its next refresh.

Every decision is written to the audit trail as a ``loop.decided`` event with its numbers
(``niche audit``): ``skip`` ("did nothing, because …"), ``train`` (a retrain started, and
why), then its outcome: ``promoted``, ``refused`` (the gate said no; the champion stays) or
``failed`` (a step raised: its class and message; the champion stays). A started retrain
counts toward ``loop.cooldown_s`` and ``loop.max_retrains_per_day`` whatever its outcome, so
a failing step is retried no more often than the policy allows.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from niche.errors import NotEnoughDataError, ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.registry.tasks import LoopSpec
from niche.settings import Settings
from niche.workflows._context import resolve
from niche.workflows.loop_policy import DAY, LoopFacts, decide

if TYPE_CHECKING:
    from niche.encoders import Encoder
    from niche.registry import ModelVersionRecord, Registry, TaskRecord

__all__ = [
    "LOOP_ACTIONS",
    "LoopDecision",
    "default_holder",
    "loop_once",
    "parse_interval",
    "run_loop",
]

logger = logging.getLogger(__name__)

LOOP_ACTIONS: Final = ("skip", "train", "promoted", "refused", "failed")
"""The ``subject`` of a ``loop.decided`` audit event: did nothing; started a retrain; and the
retrain's outcome (champion moved; gate refused; a step failed)."""

_DURATION: Final = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$")
_UNITS_S: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_MESSAGE_CHARS: Final = 500
# What an error message may say about where things run: URLs, IP addresses, host:port.
_URL: Final = re.compile(r"\b[a-z][a-z0-9+.\-]*://\S+", re.IGNORECASE)
_ADDRESS: Final = re.compile(
    r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"
    r"|\b(?:[a-z0-9\-]+\.)*[a-z][a-z0-9\-]*(?:\.[a-z0-9\-]+)*:\d{2,5}\b",
    re.IGNORECASE,
)


def parse_interval(text: str | float) -> float:
    """Seconds from ``600``, ``"600"``, ``"90s"``, ``"10m"``, ``"1.5h"``, ``"1d"``; positive.

    >>> parse_interval("10m")
    600.0
    """
    if isinstance(text, bool):
        raise ValidationError(f"interval must be a duration, got {text!r}", param="interval")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text).strip().lower())
        if match is None:
            raise ValidationError(
                f"interval {text!r} is not a duration: use seconds or 30s, 10m, 1h, 1d",
                param="interval",
            )
        seconds = float(match.group(1)) * _UNITS_S[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValidationError(f"interval must be positive, got {text!r}", param="interval")
    return seconds


def default_holder() -> str:
    """Who a loop is in leases and the audit trail: ``loop:<hostname>:<pid>``.

    >>> default_holder()
    'loop:build-7:4242'
    """
    return f"loop:{socket.gethostname() or 'unknown'}:{os.getpid()}"


# -- one pass ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopDecision:
    """What one pass of the loop did for one task: ``action`` (:data:`LOOP_ACTIONS` but
    ``train``: the outcome), why, the trigger that started it, and its numbers (as audited).

        >>> loop_once(["banking77"])[0].to_dict()["action"]
        'skip'
    """

    task: str
    action: str
    reason: str
    trigger: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What ``niche loop --json`` prints for the task."""
        return {
            "task": self.task,
            "action": self.action,
            "reason": self.reason,
            "trigger": self.trigger,
            "detail": self.detail,
        }


class _Heartbeat:
    """Renews a lease every third of its ttl from a daemon thread while one task's steps run,
    so a training longer than the ttl keeps the task (a crashed process's lease still lapses:
    its heartbeat dies with it)."""

    def __init__(self, registry: Registry, task: str, holder: str, ttl_s: float) -> None:
        self.registry = registry
        self.task = task
        self.holder = holder
        self.ttl_s = ttl_s
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"niche-loop-lease-{task}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _beat(self) -> None:
        while not self._done.wait(self.ttl_s / 3):
            try:
                if self.registry.leases.renew(self.task, holder=self.holder, ttl_s=self.ttl_s):
                    continue
            except Exception:  # the step's own renewal (between steps) reports a lost lease
                logger.warning("could not renew the loop lease on %s", self.task, exc_info=True)
                continue
            return  # taken over: the next step finds out and stops


class _Stopped(Exception):
    """Raised between steps when the loop was asked to stop."""


class _LeaseLost(Exception):
    """Raised between steps when another loop took the task's lease over."""


def loop_once(
    tasks: Sequence[str] | None = None,
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    encoder: Encoder | None = None,
    now: datetime | None = None,
    holder: str | None = None,
    stop: threading.Event | None = None,
    progress: Progress = NO_PROGRESS,
) -> list[LoopDecision]:
    """One pass of the loop over ``tasks`` (default: every registered task); one decision each.

    Unknown task names raise :class:`~niche.errors.TaskNotFoundError` before anything is
    done. A task with ``loop.enabled`` off is reported skipped and left untouched (nothing
    audited). ``now`` is when the policy is judged and the monitor's windows end (default:
    the registry clock's now); ``holder`` names this loop in leases and in the audit trail
    (default :func:`default_holder`); ``stop``, once set, ends the pass between steps
    (the task's lease released, the stop audited).

        >>> loop_once(["banking77"], now=datetime(2026, 3, 1, tzinfo=UTC))[0].reason
        'no trigger fired: no drift/agreement/accuracy alarm; 120 of 1000 new labelled rows'
    """
    holder = holder or default_holder()
    settings, registry = _resolve(settings, registry, holder)
    records = [registry.tasks.get(name) for name in tasks] if tasks else registry.tasks.all()
    decisions: list[LoopDecision] = []
    shared_encoder = encoder
    for record in records:
        if stop is not None and stop.is_set():
            break
        if not record.spec.loop.enabled:
            decisions.append(LoopDecision(record.name, "skip", "loop.enabled is false"))
            continue
        if shared_encoder is None:
            from niche.encoders import default_encoder

            shared_encoder = default_encoder(settings)
        run = _TaskRun(
            record,
            settings,
            registry=registry,
            encoder=shared_encoder,
            now=now,
            holder=holder,
            stop=stop,
            progress=progress,
        )
        decisions.append(run.run())
    return decisions


class _TaskRun:
    """One task's pass: lease, monitor, facts, decision, and a retrain when decided."""

    def __init__(
        self,
        record: TaskRecord,
        settings: Settings,
        *,
        registry: Registry,
        encoder: Encoder,
        now: datetime | None,
        holder: str,
        stop: threading.Event | None,
        progress: Progress,
    ) -> None:
        self.task = record.name
        self.settings = settings
        self.registry = registry
        self.encoder = encoder
        self.now = now
        self.holder = holder
        self.stop = stop
        self.progress = progress
        self.ttl_s = float(settings.get("NICHE_LOOP_LEASE_TTL_S"))
        self.seed = settings.get("NICHE_SEED")
        self.step = "lease"
        self.detail: dict[str, Any] = {"seconds": {}}
        self.trigger: str | None = None
        self.started = self.step_started = time.perf_counter()
        self.shown = ExitStack()

    # -- bookkeeping --

    def audit(self, action: str, reason: str) -> LoopDecision:
        self.close_step()
        self.detail["seconds"]["total"] = round(time.perf_counter() - self.started, 3)
        detail = {"reason": reason, "trigger": self.trigger, **self.detail}
        self.registry.audit.record(
            "loop.decided", task=self.task, subject=action, detail=detail, actor=self.holder
        )
        return LoopDecision(self.task, action, reason, self.trigger, detail)

    def begin(self, step: str) -> None:
        """Between steps: stop if asked, keep the lease, time the step that starts."""
        if self.stop is not None and self.stop.is_set():
            raise _Stopped(step)
        if self.registry.leases.renew(self.task, holder=self.holder, ttl_s=self.ttl_s) is None:
            raise _LeaseLost(step)
        self.close_step()
        self.step = step
        self.step_started = time.perf_counter()
        # The step shows as one line of progress (its own bars below it) until the next.
        self.shown.enter_context(self.progress.task(f"{self.task}: {step}", total=None))

    def close_step(self) -> None:
        self.shown.close()
        if self.step != "lease" and self.step not in self.detail["seconds"]:
            elapsed = time.perf_counter() - self.step_started
            self.detail["seconds"][self.step] = round(elapsed, 3)

    # -- the pass --

    def run(self) -> LoopDecision:
        lease = self.registry.leases.acquire(self.task, holder=self.holder, ttl_s=self.ttl_s)
        if lease is None:
            held = self.registry.leases.get(self.task)
            who = held.holder if held is not None else "another loop"
            until = f" until {held.expires_at.isoformat()}" if held is not None else ""
            self.detail["held_by"] = who
            return self.audit("skip", f"held by {who}{until}")
        heartbeat = _Heartbeat(self.registry, self.task, self.holder, self.ttl_s)
        heartbeat.start()
        try:
            return self._run()
        except _Stopped as stopped:
            return self.audit("skip", f"stopped before {stopped.args[0]}")
        except _LeaseLost as lost:
            held = self.registry.leases.get(self.task)
            who = held.holder if held is not None else "nobody"
            self.detail["error"] = {"step": lost.args[0], "class": "LeaseLost"}
            return self.audit("failed", f"lost the lease (now held by {who}) before {lost.args[0]}")
        except NotEnoughDataError as exc:
            self.detail["rows"] = {**self.detail.get("rows", {}), "usable": exc.rows}
            return self.audit(
                "skip", f"only {exc.rows} usable labelled rows after curation, {exc.needed} needed"
            )
        except Exception as exc:  # a step crashed: audit it; the champion keeps serving
            self.detail["error"] = _error(self.step, exc)
            champion = self.detail.get("champion")
            stays = f"; v{champion} stays champion" if champion is not None else ""
            return self.audit(
                "failed", f"{self.step} failed: {type(exc).__name__}: {_clean(exc)}{stays}"
            )
        finally:
            heartbeat.stop()
            try:
                self.registry.leases.release(self.task, holder=self.holder)
            except Exception:  # the lease lapses by itself; the pass's outcome matters more
                logger.warning("could not release the loop lease on %s", self.task, exc_info=True)

    def _run(self) -> LoopDecision:
        registry, task = self.registry, self.task
        spec = registry.tasks.get(task).spec
        now = self.now or registry.database.now()
        champion = registry.promotions.get(task, "champion")
        self.detail["champion"] = champion.version if champion is not None else None
        alarms: tuple[str, ...] = ()
        if champion is not None:
            self.begin("monitor")
            alarms = self._monitor(now)
        self.begin("decide")
        facts = self._facts(spec.loop, champion, alarms, now)
        decision = decide(spec.loop, facts, now)
        self.trigger = decision.trigger
        self.detail["fired"] = list(decision.fired)
        self.detail["rows"] = {
            "labelled": facts.labelled_rows,
            "new": facts.new_rows,
            "min_rows": spec.loop.min_rows,
        }
        self.detail["policy"] = decision.numbers
        if decision.action == "skip":
            return self.audit("skip", decision.reason)
        self.audit("train", decision.reason)
        return self._retrain(spec.loop, now, champion)

    def _monitor(self, now: datetime) -> tuple[str, ...]:
        from niche.workflows.monitor import monitor

        reports = monitor(
            self.task,
            self.settings,
            registry=self.registry,
            encoder=self.encoder,
            now=now,
            store=True,
            seed=self.seed,
            progress=self.progress,
        )
        signals = [signal for report in reports for signal in report.signals]
        self.detail["monitor"] = {
            "model_version": reports[0].model_version if reports else None,
            "alarm": any(report.alarm for report in reports),
            "signals": [_signal(signal) for signal in signals],
        }
        return tuple(signal.name for signal in signals if signal.alarm)

    def _facts(
        self,
        spec: LoopSpec,
        champion: ModelVersionRecord | None,
        alarms: tuple[str, ...],
        now: datetime,
    ) -> LoopFacts:
        traffic = self.registry.traffic
        labelled = traffic.count(self.task, since=_since(spec, now), labelled=True)
        new_rows = None
        if champion is not None:
            last_id = self._last_trained_id(champion)
            if last_id is not None:
                new_rows = traffic.count(self.task, after_id=last_id, labelled=True)
            else:
                new_rows = traffic.count(self.task, since=champion.created_at, labelled=True)
        lookback = max(DAY, timedelta(seconds=spec.cooldown_s))
        trainings = tuple(
            event.at
            for event in self.registry.audit.events(self.task, since=now - lookback)
            if event.action == "loop.decided" and event.subject == "train"
        )
        models = self.registry.models.all(self.task)
        return LoopFacts(
            champion=champion.version if champion is not None else None,
            champion_trained_at=champion.created_at if champion is not None else None,
            labelled_rows=labelled,
            new_rows=new_rows,
            alarms=alarms,
            trainings=trainings,
            last_model_at=max((m.created_at for m in models), default=None),
        )

    def _last_trained_id(self, champion: ModelVersionRecord) -> int | None:
        """The newest traffic record id in the champion's training data, when it was
        distilled from traffic (its dataset's curation report names the id range)."""
        from niche.errors import DatasetNotFoundError

        try:
            report = self.registry.datasets.get(champion.dataset_fingerprint).report
        except DatasetNotFoundError:
            return None
        origin = report.get("origin") if isinstance(report, dict) else None
        last_id = origin.get("last_id") if isinstance(origin, dict) else None
        return last_id if isinstance(last_id, int) and not isinstance(last_id, bool) else None

    def _retrain(
        self, spec: LoopSpec, now: datetime, champion: ModelVersionRecord | None
    ) -> LoopDecision:
        from niche.workflows.distil import distil
        from niche.workflows.retrain import train_evaluate_promote

        self.begin("distil")
        distilled = distil(
            self.task,
            self.settings,
            since=_since(spec, now),
            min_rows=spec.min_rows,
            registry=self.registry,
            seed=self.seed,
            progress=self.progress,
            now=now,
        )
        self.detail["dataset"] = _dataset(distilled)

        # The champion's kind is retrained (a fine-tuned champion is fine-tuned again); with
        # no champion yet, the text kind.
        kind = champion.kind if champion is not None else "text"
        self.detail["kind"] = kind
        retrained = train_evaluate_promote(
            distilled.version,
            self.settings,
            task=self.task,
            kind=kind,
            encoder=self.encoder,
            seed=self.seed,
            registry=self.registry,
            actor=self.holder,
            before_step=self.begin,
            progress=self.progress,
        )
        outcome = retrained.promotion
        version = retrained.model.version
        evaluation = retrained.evaluation
        self.detail["candidate"] = version
        self.detail["evaluation"] = {
            "split": evaluation.split,
            "rows": evaluation.rows,
            "accuracy": evaluation.specialist.accuracy,
            "general_accuracy": evaluation.general.accuracy,
            "general_kind": evaluation.general.kind,
        }
        self.detail["gate"] = {
            "passed": outcome.decision.passed,
            "failed": [check.name for check in outcome.decision.failed],
            "checks": [
                {
                    "name": c.name,
                    "passed": c.passed,
                    "value": c.value,
                    "threshold": c.threshold,
                }
                for c in outcome.decision.checks
            ],
        }
        self.detail["champion_after"] = version if not outcome.refused else self.detail["champion"]
        previous = self.detail["champion"]
        if outcome.refused:
            failed = ", ".join(self.detail["gate"]["failed"]) or "no check"
            stays = f"v{previous} stays champion" if previous is not None else "no champion yet"
            return self.audit("refused", f"gate refused v{version} (failed {failed}); {stays}")
        if outcome.already:
            return self.audit("promoted", f"v{version} is champion already (the same model)")
        moved = f"v{previous} → v{version}" if previous is not None else f"v{version}"
        return self.audit("promoted", f"champion {moved}, after {self.trigger}")


def run_loop(
    tasks: Sequence[str] | None = None,
    settings: Settings | None = None,
    *,
    interval_s: float = 600.0,
    iterations: int | None = None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], object] | None = None,
    on_pass: Callable[[list[LoopDecision]], object] | None = None,
    registry: Registry | None = None,
    encoder: Encoder | None = None,
    holder: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> None:
    """Run :func:`loop_once` every ``interval_s`` seconds until ``stop`` is set (or
    ``iterations`` passes have run).

    A pass that fails as a whole (the registry unreachable, say) is audited when it can be
    and logged, and the loop goes on; each pass's decisions go to ``on_pass``. ``sleep``
    waits between passes (default: waiting on ``stop``, so a stop ends the wait at once).
    Unknown task names raise :class:`~niche.errors.TaskNotFoundError` before the first pass.

        >>> stop = threading.Event()
        >>> run_loop(["banking77"], interval_s=600, stop=stop)  # another thread: stop.set()
    """
    interval_s = parse_interval(interval_s)
    holder = holder or default_holder()
    settings, registry = _resolve(settings, registry, holder)
    stop = stop or threading.Event()
    wait = sleep or stop.wait
    if tasks:
        for name in tasks:
            registry.tasks.get(name)
    if encoder is None:
        from niche.encoders import default_encoder

        encoder = default_encoder(settings)
    passes = 0
    while not stop.is_set() and (iterations is None or passes < iterations):
        try:
            decisions = loop_once(
                tasks,
                settings,
                registry=registry,
                encoder=encoder,
                holder=holder,
                stop=stop,
                progress=progress,
            )
        except Exception as exc:  # one bad pass must not end the loop
            decisions = [_failed_pass(registry, holder, exc)]
        if on_pass is not None:
            on_pass(decisions)
        passes += 1
        if stop.is_set() or (iterations is not None and passes >= iterations):
            break
        wait(interval_s)


def _failed_pass(registry: Registry, holder: str, exc: Exception) -> LoopDecision:
    error = _error("pass", exc)
    reason = f"the pass failed: {error['class']}: {error['message']}"
    logger.warning("niche loop: %s", reason)
    try:
        registry.audit.record(
            "loop.decided",
            subject="failed",
            detail={"reason": reason, "error": error},
            actor=holder,
        )
    except Exception:  # the registry may be what failed; the log line above says it
        logger.warning("niche loop: could not audit the failed pass", exc_info=True)
    return LoopDecision("*", "failed", reason, None, {"error": error})


# -- small pieces ---------------------------------------------------------------------------


def _resolve(
    settings: Settings | None, registry: Registry | None, holder: str
) -> tuple[Settings, Registry]:
    """Like :func:`~niche.workflows._context.resolve`, but a registry built here records
    every change it makes (a model registered, an alias moved) as the loop's ``holder``."""
    if registry is None:
        from niche.registry import Registry

        settings = settings or Settings()
        registry = Registry(settings=settings, actor=holder)
    return resolve(settings, registry)


def _since(spec: LoopSpec, now: datetime) -> datetime | None:
    return now - timedelta(seconds=parse_interval(spec.since)) if spec.since else None


def _clean(exc: BaseException) -> str:
    """An exception's message for the audit trail: URLs and addresses (hosts, credentials)
    replaced, and cut to a few hundred characters."""
    text = _ADDRESS.sub("<host>", _URL.sub("<url>", str(exc))).strip() or "(no message)"
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


def _error(step: str, exc: BaseException) -> dict[str, str]:
    return {"step": step, "class": type(exc).__name__, "message": _clean(exc)}


def _signal(signal: Any) -> dict[str, Any]:
    """A monitor signal's numbers (JSON-ready: NaN as None), without its free-text detail."""
    values = signal.to_dict()
    return {
        key: values.get(key)
        for key in ("name", "statistic", "p_value", "interval", "threshold", "alarm", "n")
    }


def _dataset(distilled: Any) -> dict[str, Any]:
    version = distilled.version
    summary: dict[str, Any] = {
        "fingerprint": version.fingerprint,
        "splits": {name: len(rows) for name, rows in version.splits.items()},
        "labels": len(version.label_set),
    }
    origin = version.report.origin
    if isinstance(origin, dict):
        summary["origin"] = {
            k: origin[k] for k in ("first_id", "last_id", "since", "until") if k in origin
        }
    return summary
