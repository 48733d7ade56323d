"""``niche serve``: check the set-up, then run the gateway on uvicorn.

uvicorn runs with niche's bounds on slow clients (:mod:`niche.gateway.connection`: a
deadline on request headers) and, with ``--workers N``, workers that die with their master
(a SIGKILLed master must not leave workers serving the port; see :func:`worker_app`).

>>> serve(host="127.0.0.1", port=8000, workers=1)
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from niche.errors import ConfigurationError
from niche.gateway.auth import is_loopback
from niche.gateway.config import GatewayConfig
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.gateway.app import Gateway

__all__ = ["ServePlan", "plan", "serve", "uvicorn_options", "worker_app"]

log = logging.getLogger("niche.gateway")

# The master's pid, for its workers (set by `serve` around uvicorn.run; not a setting).
_MASTER_PID = "_NICHE_SERVE_MASTER_PID"
_PR_SET_PDEATHSIG = 1
_POLL_S = 1.0


@dataclass(frozen=True)
class ServePlan:
    """Where and how the gateway will listen, and what to tell the user first."""

    host: str
    port: int
    workers: int
    notices: list[str]
    tasks: list[str]


def plan(settings: Settings, *, host: str, port: int, workers: int) -> ServePlan:
    """Migrate the registry, check the configuration, and decide where to listen.

    With no usable API key, only 127.0.0.1 is served (requests need no key there).
    """
    from niche.registry.store import Registry

    if workers < 1:
        raise ConfigurationError(f"--workers must be at least 1, got {workers}")
    if not 0 < port < 65536:
        raise ConfigurationError(f"--port must be in 1-65535, got {port}")
    config = GatewayConfig.from_settings(settings)
    notices = []
    with Registry(settings=settings) as registry:
        registry.upgrade()
        keys = [key for key in registry.keys.all() if not key.revoked]
        tasks = registry.tasks.all()
    if not keys:
        if not is_loopback(host):
            notices.append(
                f"no API keys exist: serving on 127.0.0.1 only, not {host} "
                "(create one with `niche keys create --scope inference`)"
            )
        else:
            notices.append(
                "no API keys exist: requests from this machine need no key; "
                "create one with `niche keys create` before serving other hosts"
            )
        host = "127.0.0.1"
    if config.general is None:
        notices.append(
            "no general model configured (NICHE_GENERAL_BASE_URL, NICHE_GENERAL_MODEL): the "
            "built-in zero-shot model answers low-confidence task requests, and other models "
            "get 404"
        )
    else:
        notices.append(f"general model: {config.general.model} at {config.general.base_url}")
    notices.append(f"tasks: {', '.join(t.name for t in tasks) or 'none yet'}")
    return ServePlan(
        host=host, port=port, workers=workers, notices=notices, tasks=[t.name for t in tasks]
    )


def _log_config() -> dict[str, object]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["niche"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def serve(
    settings: Settings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    echo: Callable[[str], None] = print,
) -> None:
    """Run the gateway until SIGTERM/SIGINT: in-flight requests finish, records are flushed."""
    import uvicorn

    settings = settings or Settings()
    decided = plan(settings, host=host, port=port, workers=workers)
    for notice in decided.notices:
        echo(notice)
    if decided.tasks:
        from niche.encoders.export import ensure_export

        # Once here, not in each worker: the first export takes a while and needs torch.
        ensure_export(settings.cache_dir, settings.get("NICHE_ENCODER_PRECISION"))
    factory = "niche.gateway.app:create_app"
    if decided.workers > 1:
        factory = "niche.gateway.server:worker_app"
    with _shared_metrics(decided.workers), _master_pid(decided.workers):
        uvicorn.run(
            factory,
            factory=True,
            host=decided.host,
            port=decided.port,
            workers=decided.workers,
            loop="uvloop",
            access_log=False,
            log_config=_log_config(),
            server_header=False,
            **uvicorn_options(),
        )


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn settings that bound slow clients: httptools with a deadline on request
    headers (``NICHE_GATEWAY_HEADER_TIMEOUT_S``, read by each worker) and uvicorn's own
    keep-alive timeout for idle connections. The body's deadline is the app's.

        >>> uvicorn.run(app, **uvicorn_options())
    """
    from niche.gateway.connection import BoundedHttpToolsProtocol

    return {"http": BoundedHttpToolsProtocol, "timeout_keep_alive": 5}


def worker_app() -> Gateway:
    """The factory each worker of ``niche serve --workers N`` calls: the gateway, in a
    process that exits (SIGTERM: it flushes its records first) when its master dies.

    On Linux the kernel sends the signal (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread
    watches the parent pid. A master already gone by then means exiting at once.
    """
    from niche.gateway.app import create_app

    master = os.environ.get(_MASTER_PID)
    if master:
        _exit_with(int(master))
    return create_app()


def _exit_with(master: int) -> None:
    if not (sys.platform.startswith("linux") and _parent_death_signal()):
        threading.Thread(target=_watch_parent, args=(master,), daemon=True).start()
    if os.getppid() != master:  # the master died before the signal was armed
        log.error("gateway worker %d: its master %d is gone; exiting", os.getpid(), master)
        os._exit(1)


def _parent_death_signal() -> bool:
    """Ask the kernel for SIGTERM when the parent dies; False where that fails."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
            return True
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        log.warning("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
    return False


def _watch_parent(master: int) -> None:
    while os.getppid() == master:
        threading.Event().wait(_POLL_S)
    log.error("gateway worker %d: its master %d died; shutting down", os.getpid(), master)
    os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def _master_pid(workers: int) -> Iterator[None]:
    """With several workers, this process's pid in their environment."""
    if workers == 1:
        yield
        return
    os.environ[_MASTER_PID] = str(os.getpid())
    try:
        yield
    finally:
        del os.environ[_MASTER_PID]


@contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """With several workers, one directory where they all keep their Prometheus values."""
    if workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="niche-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # inherited by the workers
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
