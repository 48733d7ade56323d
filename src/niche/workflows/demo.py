"""``niche demo loop``: the closed loop end to end, on the embedded default (SQLite, local
files, CPU, the built-in zero-shot general model: no API key).

In a throw-away ``NICHE_HOME`` (or ``home``), on two CLINC150 domains A and B:

1. a task whose labels cover both domains, with no specialist; a gateway (``niche serve`` in a
   subprocess, on a free port) in front of it;
2. domain A's traffic replayed: the general model answers everything; a share of the
   requests gets its gold label back as feedback;
3. the loop (one pass) distils that traffic, trains a specialist, gates and promotes it; the
   gateway picks the champion up;
4. more of domain A: most answers now come from the specialist; the monitor raises nothing
   (the false-alarm control);
5. the traffic shifts to domain B: the monitor flags drift, the cascade rate rises;
6. the loop retrains on the new traffic and promotes a new version; the gateway serves it;
   domain B is now answered by the specialist;
7. the audit trail of every step.

    >>> result = demo_loop(on_step=print)
    >>> [step.name for step in result.steps][:3]
    ['task', 'gateway', 'replay']

The gateway runs as its own process (``python -m niche serve``): this module talks to it over
HTTP (:mod:`niche.workflows.replay`) and imports nothing of :mod:`niche.gateway`.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from niche.errors import NicheError, ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.workflows.data import DataSpec, load_data
from niche.workflows.gateway_client import wait_until_served
from niche.workflows.replay import ReplayResult, replay

__all__ = ["DEMO_TASK", "DemoResult", "DemoStep", "demo_loop", "demo_spec"]

DEMO_TASK = "assistant"
GATEWAY_START_S = 180.0
# What the demo's processes read from the caller's environment; every other NICHE_* setting
# takes its default under the demo's home (the caller's registry is never touched).
_KEPT = ("NICHE_DATASETS", "NICHE_DATASET_MIRROR", "NICHE_ENCODER_PRECISION", "NICHE_SEED")
# Short enough that a promotion shows up within a second; quick flushes so feedback finds
# its record.
_DEMO_SETTINGS = {
    "NICHE_GATEWAY_REFRESH_S": "0.5",
    "NICHE_GATEWAY_CAPTURE_FLUSH_MS": "100",
    "NICHE_BOOTSTRAP_RESAMPLES": "200",
}


@dataclass(frozen=True)
class DemoStep:
    """One step of the demo: ``name`` (task, gateway, replay, loop, served, monitor, audit),
    a one-line ``title`` and its ``numbers``."""

    name: str
    title: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "numbers": self.numbers}


@dataclass(frozen=True)
class DemoResult:
    """Every step the demo took, where it ran, and how long it took."""

    task: str
    home: str
    url: str
    steps: list[DemoStep]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """What ``niche demo loop --json`` prints."""
        return {
            "task": self.task,
            "home": self.home,
            "url": self.url,
            "seconds": round(self.seconds, 1),
            "steps": [step.to_dict() for step in self.steps],
        }


def demo_spec(labels: list[str], *, window: int) -> Any:
    """The demo task's spec: both domains' labels, a random teacher sample (shadowing), a
    monitoring window of ``window`` records, and a loop that trains as soon as it can.

    The teacher is the built-in zero-shot model (about 75 % right on a CLINC150 domain), so
    gold labels come back as feedback for a share of the requests, and the gate compares the
    specialist with the general model on those: within 5 points of it (the one-sided 95 %
    lower bound of the difference), and at least 0.6 accurate.

    >>> demo_spec(["balance", "book_flight"], window=200).loop.min_rows
    200
    """
    from niche.registry.tasks import SLA, LoopSpec, MonitoringSpec, ServingSpec, TaskSpec

    return TaskSpec(
        name=DEMO_TASK,
        labels=labels,
        description="niche demo loop: two CLINC150 domains",
        sla=SLA(min_quality=0.6, min_quality_vs_general=-0.05),
        serving=ServingSpec(shadow_fraction=0.2),
        monitoring=MonitoringSpec(window=window, min_rows=50, reference_rows=500),
        loop=LoopSpec(min_rows=200, cooldown_s=0),
    )


def demo_loop(
    settings: Settings | None = None,
    *,
    home: Path | None = None,
    domains: tuple[str, str] = ("banking", "travel"),
    requests: int = 400,
    feedback_share: float = 0.5,
    seed: int = 0,
    on_step: Callable[[DemoStep], None] | None = None,
    progress: Progress = NO_PROGRESS,
) -> DemoResult:
    """Run the closed loop end to end (see the module) and return its steps.

    ``home`` keeps the demo's registry, artifacts and gateway log (default: a temporary
    directory, removed at the end). ``requests`` is the size of each replay of domain A and of
    the shift; the monitor's window is half of it. The encoder cache of ``settings`` is reused.
    ``on_step`` is called with each step as it completes.

    >>> demo_loop(domains=("banking", "travel"), requests=400).steps[-1].name
    'audit'
    """
    if requests < 100:
        raise ValidationError(f"requests must be at least 100, got {requests}", param="requests")
    first, second = domains
    if first == second:
        raise ValidationError("the demo needs two different CLINC150 domains", param="domains")
    outer = settings or Settings()
    started = time.monotonic()
    steps: list[DemoStep] = []

    def step(name: str, title: str, **numbers: Any) -> None:
        done = DemoStep(name, title, numbers)
        steps.append(done)
        if on_step is not None:
            on_step(done)

    with _demo_home(home) as where:
        environ = _demo_environ(outer, where)
        settings = Settings(environ=environ)
        loop_once, monitor = _closed_loop()
        rows_a = load_data(DataSpec(dataset=f"clinc150/{first}"), settings)
        rows_b = load_data(DataSpec(dataset=f"clinc150/{second}"), settings)
        labels = sorted(set(rows_a.train.label_set()) | set(rows_b.train.label_set()))
        spec = demo_spec(labels, window=requests // 2)
        record = _create(spec, settings)
        step(
            "task",
            f"task {record.name}: {len(labels)} labels ({first} and {second}), no specialist; "
            f"general model: built-in zero-shot",
            labels=len(labels),
            home=str(where),
        )
        with serve_subprocess(environ, where) as url:
            step("gateway", f"gateway at {url} (log: {where / 'gateway.log'})", url=url)
            shift = f"after={2 * requests},domain={second}"

            def send(what: str, skip: int, limit: int) -> ReplayResult:
                result = replay(
                    DataSpec(dataset=f"clinc150/{first}"),
                    task=DEMO_TASK,
                    url=url,
                    settings=settings,
                    limit=limit,
                    skip=skip,
                    shift=shift,
                    feedback_share=feedback_share,
                    seed=seed,
                    progress=progress,
                )
                step("replay", f"{what}: {_replay_line(result)}", **_replay_numbers(result))
                return result

            def loop(why: str) -> None:
                decisions = [d.to_dict() for d in loop_once(tasks=[DEMO_TASK], settings=settings)]
                champion = _champion(settings)
                step(
                    "loop",
                    f"loop, {why}: {'; '.join(_brief(d) for d in decisions) or 'no decision'}"
                    f" → champion {'v' + str(champion) if champion else 'none'}",
                    decisions=decisions,
                    champion=champion,
                )
                if champion is not None:
                    waited = wait_until_served(url, DEMO_TASK, champion, timeout_s=60.0)
                    step(
                        "served",
                        f"the gateway serves champion v{champion} (picked up within {waited:.1f} s,"
                        " no restart)",
                        version=champion,
                        seconds=round(waited, 2),
                    )

            def check(why: str) -> None:
                reports = monitor(DEMO_TASK, settings=settings)
                reports = reports if isinstance(reports, list) else [reports]
                for report in reports:
                    signals = [_signal(s) for s in report.signals]
                    alarms = [s["name"] for s in signals if s["alarm"]]
                    step(
                        "monitor",
                        f"monitor, {why}: "
                        + (f"ALARM on {', '.join(alarms)}" if alarms else "no alarm")
                        + " — "
                        + "; ".join(_signal_line(s) for s in signals),
                        alarm=bool(report.alarm),
                        signals=signals,
                    )

            send(f"{first} traffic, no specialist yet", 0, requests)
            loop("first specialist")
            send(f"more {first} traffic", requests, requests)
            check(f"on {first} (no shift)")
            send(f"shift to {second}", 2 * requests, requests)
            check(f"after the shift to {second}")
            loop("after the shift")
            send(f"more {second} traffic", 3 * requests, requests // 2)
        from niche.workflows.audit import audit_events

        events = [e.to_dict() for e in audit_events(DEMO_TASK, settings)]
        step(
            "audit",
            f"audit trail: {len(events)} events — "
            + ", ".join(f"{a} {n}" for a, n in Counter(e["action"] for e in events).items()),
            events=events,
        )
        return DemoResult(
            task=DEMO_TASK,
            home=str(where),
            url=url,
            steps=steps,
            seconds=time.monotonic() - started,
        )


# -- the pieces ------------------------------------------------------------------------------


def _closed_loop() -> tuple[Callable[..., list[Any]], Callable[..., Any]]:
    """``loop_once`` and ``monitor`` (imported by name: they land with the loop and monitor
    work of this release)."""
    try:
        loop = importlib.import_module("niche.workflows.loop")
        monitoring = importlib.import_module("niche.workflows.monitor")
    except ImportError as exc:  # pragma: no cover - until both land
        raise NicheError(f"niche demo loop needs the loop and the monitor: {exc}") from exc
    return loop.loop_once, monitoring.monitor


def _create(spec: Any, settings: Settings) -> Any:
    from niche.registry import Registry

    with Registry(settings=settings) as registry:
        return registry.tasks.create(spec)


def _champion(settings: Settings) -> int | None:
    from niche.workflows.tasks import show_task

    version = show_task(DEMO_TASK, settings)["aliases"].get("champion")
    return int(version) if version is not None else None


@contextmanager
def _demo_home(home: Path | None) -> Iterator[Path]:
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        yield home.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="niche-demo-") as directory:
        yield Path(directory)


def _demo_environ(settings: Settings, home: Path) -> dict[str, str]:
    """The environment of the demo's processes: the caller's, less its NICHE_* settings
    (but for :data:`_KEPT`), with the demo's home and the caller's encoder cache."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NICHE_") or k in _KEPT}
    environ.update(_DEMO_SETTINGS)
    environ["NICHE_HOME"] = str(home)
    environ["NICHE_CACHE_DIR"] = str(settings.cache_dir.resolve())
    datasets = settings.datasets_dir
    if datasets is not None:
        environ["NICHE_DATASETS"] = str(datasets.resolve())
    environ.setdefault("HF_HUB_OFFLINE", "1")
    environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return environ


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_subprocess(environ: dict[str, str], home: Path) -> Iterator[str]:
    """``niche serve`` in a subprocess on a free port, until it answers /healthz; stopped
    (SIGTERM: it flushes its records) at the end."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = home / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "niche", "serve", "--port", str(port)],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for(url, process, log_path)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + GATEWAY_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise NicheError(f"the demo's gateway exited ({process.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise NicheError(f"the demo's gateway did not answer at {url} in {GATEWAY_START_S:.0f} s")


def _replay_numbers(result: ReplayResult) -> dict[str, Any]:
    payload = result.to_dict()
    return {
        k: payload[k] for k in ("sent", "answered", "agreement", "errors", "routes", "phases")
    } | {
        "feedback": payload["feedback"],
        "specialist_share": round(result.share("specialist"), 3),
    }


def _replay_line(result: ReplayResult) -> str:
    routes = ", ".join(f"{route} {n}" for route, n in result.routes.items())
    agreement = f"{result.agreement:.1%}" if result.agreement is not None else "n/a"
    errors = sum(result.errors.values())
    return (
        f"{result.sent} requests; routes: {routes or 'none'} (specialist "
        f"{result.share('specialist'):.0%}); agreement with gold {agreement}; "
        f"{errors} error(s); feedback {result.feedback_attached}/{result.feedback_sent} attached"
    )


def _signal(signal_: Any) -> dict[str, Any]:
    """A monitor signal as a dict (its ``to_dict()`` where it has one)."""
    if hasattr(signal_, "to_dict"):
        return dict(signal_.to_dict())
    return {
        name: getattr(signal_, name, None) for name in ("name", "statistic", "p_value", "alarm")
    }


def _signal_line(signal_: dict[str, Any]) -> str:
    parts = [str(signal_.get("name"))]
    for key in ("statistic", "p_value"):
        value = signal_.get(key)
        if isinstance(value, int | float):
            parts.append(f"{key} {value:.3g}")
    return " ".join(parts) + (" ALARM" if signal_.get("alarm") else "")


def _brief(decision: dict[str, Any]) -> str:
    """A loop decision's scalar fields, as ``key=value``."""
    return ", ".join(
        f"{key}={value}"
        for key, value in decision.items()
        if isinstance(value, str | int | float | bool) and value is not None
    )
