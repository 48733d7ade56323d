"""``niche serve``: check the set-up, then run the gateway on uvicorn.

>>> serve(host="127.0.0.1", port=8000, workers=1)
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from niche.errors import ConfigurationError
from niche.gateway.auth import is_loopback
from niche.gateway.config import GatewayConfig
from niche.settings import Settings

__all__ = ["ServePlan", "plan", "serve"]


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
    with _shared_metrics(decided.workers):
        uvicorn.run(
            "niche.gateway.app:create_app",
            factory=True,
            host=decided.host,
            port=decided.port,
            workers=decided.workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_config=_log_config(),
            server_header=False,
        )


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
