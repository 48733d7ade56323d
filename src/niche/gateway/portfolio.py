"""The tasks the gateway serves and the specialists answering them, kept in step with the
registry.

:meth:`Portfolio.refresh` re-reads tasks and aliases (on a thread) and loads any new version
an alias points to, its artifact verified, before swapping it in: a promotion takes effect
at the next refresh, without a restart, and a version that fails to load leaves the one
serving in place.

    >>> portfolio = Portfolio(registry, settings, config, executor=executor)
    >>> await portfolio.refresh()
    >>> portfolio.get("banking77").champion.version
    3
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from niche.gateway.batching import MicroBatcher
from niche.gateway.config import GatewayConfig
from niche.registry.tasks import TaskSpec
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.encoders.base import Encoder
    from niche.registry.store import ModelVersionRecord, Registry
    from niche.specialists.base import Predictions, Predictor

__all__ = ["SERVED_ALIASES", "Deployed", "Portfolio", "TaskState"]

log = logging.getLogger("niche.gateway")

SERVED_ALIASES = ("champion", "challenger")

Loader = Callable[["ModelVersionRecord"], "Predictor"]


@dataclass
class Deployed:
    """A model version serving under an alias, with its micro-batcher."""

    alias: str
    version: int
    digest: str
    predictor: Predictor
    batcher: MicroBatcher


@dataclass
class TaskState:
    """What the gateway knows of one task: its spec, created time and deployed aliases."""

    spec: TaskSpec
    created_at: datetime
    deployed: dict[str, Deployed] = field(default_factory=dict)
    zero_shot: MicroBatcher | None = None

    @property
    def champion(self) -> Deployed | None:
        return self.deployed.get("champion")

    @property
    def challenger(self) -> Deployed | None:
        return self.deployed.get("challenger")

    @property
    def labels(self) -> list[str]:
        if self.spec.labels:
            return list(self.spec.labels)
        for deployed in self.deployed.values():
            return list(deployed.predictor.label_set)
        return []


class Portfolio:
    """Every task of the registry, with the specialists its served aliases point to."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        config: GatewayConfig,
        *,
        executor: Executor,
        encoder: Encoder | None = None,
        loader: Loader | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.config = config
        self.executor = executor
        self._encoder = encoder
        self._loader = loader
        self._tasks: dict[str, TaskState] = {}
        self._lock = asyncio.Lock()
        self.loaded = False
        self.last_error: str | None = None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            from niche.encoders.defaults import default_encoder

            # No embedding cache when serving: a SQLite lookup per request costs more than
            # it saves, and live texts rarely repeat.
            self._encoder = default_encoder(self.settings, cache=False)
        return self._encoder

    def get(self, name: str) -> TaskState | None:
        return self._tasks.get(name)

    def tasks(self) -> list[TaskState]:
        return list(self._tasks.values())

    def _load(self, record: ModelVersionRecord) -> Predictor:
        if self._loader is not None:
            predictor = self._loader(record)
        else:
            from niche.registry.artifacts import ArtifactStore
            from niche.specialists.kinds import load_predictor

            path = ArtifactStore.from_settings(self.settings).get_dir(record.artifact_digest)
            predictor = load_predictor(record.kind, path, self.encoder)
            # Warm up (the encoder's session loads on first use) so no request pays for it.
            predictor.predict(["warm-up"])
        return predictor

    def _batcher(self, predict: Callable[[Sequence[str]], Predictions]) -> MicroBatcher:
        return MicroBatcher(
            predict,
            max_batch=self.config.batch_max,
            max_wait_s=self.config.batch_wait_s,
            executor=self.executor,
        )

    def _read(self) -> tuple[list[Any], dict[str, dict[str, ModelVersionRecord]]]:
        tasks = self.registry.list_tasks()
        served: dict[str, dict[str, ModelVersionRecord]] = {}
        for task in tasks:
            served[task.name] = {}
            for alias in SERVED_ALIASES:
                record = self.registry.get_alias(task.name, alias)
                if record is not None:
                    served[task.name][alias] = record
        return tasks, served

    async def refresh(self) -> None:
        """Re-read the registry; load new versions; swap the new state in at once."""
        async with self._lock:
            tasks, served = await asyncio.to_thread(self._read)
            current = self._tasks
            fresh: dict[str, TaskState] = {}
            for task in tasks:
                old = current.get(task.name)
                state = TaskState(spec=task.spec, created_at=task.created_at)
                if old is not None and old.spec == task.spec:
                    state.zero_shot = old.zero_shot
                for alias, record in served[task.name].items():
                    previous = old.deployed.get(alias) if old is not None else None
                    if previous is not None and previous.digest == record.artifact_digest:
                        previous.alias, previous.version = alias, record.version
                        state.deployed[alias] = previous
                        continue
                    try:
                        predictor = await asyncio.get_running_loop().run_in_executor(
                            self.executor, self._load, record
                        )
                    except Exception as exc:
                        log.error(
                            "task %s: cannot load %s v%d (%s); %s",
                            task.name,
                            alias,
                            record.version,
                            exc,
                            "keeping the version serving" if previous else "alias not served",
                        )
                        if previous is not None:
                            state.deployed[alias] = previous
                        continue
                    state.deployed[alias] = Deployed(
                        alias=alias,
                        version=record.version,
                        digest=record.artifact_digest,
                        predictor=predictor,
                        batcher=self._batcher(predictor.predict),
                    )
                    if previous is None or previous.version != record.version:
                        log.info("task %s: %s is now v%d", task.name, alias, record.version)
                fresh[task.name] = state
            self._tasks = fresh
            self.loaded = True
            self.last_error = None

    def zero_shot(self, state: TaskState) -> MicroBatcher:
        """The built-in offline general model of ``state``'s task, built on first use."""
        if state.zero_shot is None:
            from niche.specialists.zeroshot import ZeroShot

            model = ZeroShot(state.labels, self.encoder, descriptions=state.spec.label_descriptions)
            state.zero_shot = self._batcher(model.predict)
        return state.zero_shot

    async def aclose(self) -> None:
        for state in self._tasks.values():
            for deployed in state.deployed.values():
                await deployed.batcher.aclose()
            if state.zero_shot is not None:
                await state.zero_shot.aclose()
