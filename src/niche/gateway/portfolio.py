"""The tasks the gateway serves and the specialists answering them, kept in step with the
registry.

:meth:`Portfolio.refresh` reads every task and every served alias (two queries, on a thread:
``registry.tasks.all()`` and ``registry.promotions.served()``) and loads any new version an
alias points to through its kind (:func:`~niche.specialists.load_predictor`), its artifact
verified, before swapping it in: a promotion takes effect at the next refresh (every
``refresh_s`` once :meth:`Portfolio.start` ran), without a restart, and a version that fails
to load leaves the one serving in place. Loading runs on its own thread (``loader_executor``),
never on the one that runs the specialists, so a slow load delays no answer.

A version that fails to load is kept in :attr:`Portfolio.load_failures` (and reported to
``on_load_failure``: the gateway counts it in ``niche_model_load_failures_total``) until the
alias loads or moves; a registry that cannot be read leaves everything loaded serving.
:meth:`Portfolio.health` turns both into the readiness rule of ``/readyz``.

    >>> portfolio = Portfolio(registry, settings, config, executor=model_thread,
    ...                       loader_executor=loader_thread)
    >>> await portfolio.start(refresh_s=2.0)
    >>> portfolio.get("banking77").champion.version
    3
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from niche.errors import ConfigurationError, ValidationError
from niche.gateway.batching import MicroBatcher
from niche.gateway.config import GatewayConfig
from niche.gateway.handles import BatchedHandle, SpecialistHandle
from niche.gateway.protocol import client_message
from niche.registry.tasks import TaskSpec
from niche.settings import Settings
from niche.specialists.context import LoadContext

if TYPE_CHECKING:
    from niche.encoders.base import Encoder
    from niche.registry.store import ModelVersionRecord, Registry, TaskRecord
    from niche.specialists.base import Predictions, Predictor

__all__ = [
    "SERVED_ALIASES",
    "Health",
    "LoadFailure",
    "Loader",
    "Portfolio",
    "TaskState",
    "load_version",
    "serving_context",
]

log = logging.getLogger("niche.gateway")

SERVED_ALIASES = ("champion", "challenger")

Loader = Callable[["ModelVersionRecord"], "Predictor"]
"""Builds the predictor of a registered model version (tests inject one)."""


def serving_context(settings: Settings, encoder: Encoder | None = None) -> LoadContext:
    """How the gateway loads specialists: ``encoder``, else one built on first use with no
    embedding cache (a database lookup per request costs more than it saves, and live texts
    rarely repeat).

    >>> context = serving_context(settings)
    """
    return LoadContext(settings, encoder=encoder, embedding_cache=False)


def load_version(record: ModelVersionRecord, context: LoadContext) -> Predictor:
    """The predictor of ``record``, read from the artifact store (of ``context.settings``)
    with its digest verified, loaded by its kind.

    >>> predictor = load_version(registry.models.get("banking77", 3), serving_context(settings))
    """
    from niche.registry.artifacts import ArtifactStore
    from niche.specialists.kinds import load_predictor

    path = ArtifactStore.from_settings(context.settings).get_dir(record.artifact_digest)
    return load_predictor(record.kind, path, context)


@dataclass(frozen=True)
class LoadFailure:
    """An alias the registry names whose version could not be loaded.

    ``serving`` is the version still serving the alias (None: nothing serves it); ``error``
    the exception's class (its message, which may name paths or hosts, goes to the log).
    """

    task: str
    alias: str
    version: int
    error: str
    serving: int | None

    def describe(self) -> str:
        kept = f"v{self.serving} still serves it" if self.serving else "nothing serves it"
        return (
            f"task {self.task}: {self.alias} v{self.version} failed to load ({self.error}); {kept}"
        )


@dataclass(frozen=True)
class Health:
    """The portfolio's readiness: ``status`` is ``ready``, ``degraded`` or ``not ready``."""

    status: str
    problems: list[str]

    @property
    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 (``ready`` or ``degraded``)."""
        return self.status != "not ready"


@dataclass
class TaskState:
    """What the gateway knows of one task: its spec, created time and deployed aliases."""

    spec: TaskSpec
    created_at: datetime
    deployed: dict[str, SpecialistHandle] = field(default_factory=dict)
    zero_shot: MicroBatcher | None = None

    @property
    def champion(self) -> SpecialistHandle | None:
        return self.deployed.get("champion")

    @property
    def challenger(self) -> SpecialistHandle | None:
        return self.deployed.get("challenger")

    @property
    def labels(self) -> list[str]:
        if self.spec.labels:
            return list(self.spec.labels)
        for handle in self.deployed.values():
            return handle.label_set
        return []

    def served(self) -> dict[str, int]:
        """Each served alias and its version: ``{"champion": 3}``."""
        return {alias: handle.version for alias, handle in self.deployed.items()}


class Portfolio:
    """Every task of the registry, with the specialists its served aliases point to."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        config: GatewayConfig,
        *,
        executor: Executor,
        loader_executor: Executor,
        encoder: Encoder | None = None,
        loader: Loader | None = None,
        on_load_failure: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.config = config
        self.executor = executor
        self.loader_executor = loader_executor
        self.context = serving_context(settings, encoder)
        self._loader = loader
        self._tasks: dict[str, TaskState] = {}
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self.on_load_failure = on_load_failure
        self.clock = clock
        self.loaded = False
        self.last_error: BaseException | None = None
        self.failing_since: float | None = None
        self.load_failures: dict[tuple[str, str], LoadFailure] = {}
        self._failures: dict[tuple[str, str], LoadFailure] = {}

    @property
    def encoder(self) -> Encoder:
        """The shared encoder: built on first use, by the loader thread or the event loop."""
        return self.context.encoder

    def get(self, name: str) -> TaskState | None:
        return self._tasks.get(name)

    def tasks(self) -> list[TaskState]:
        return list(self._tasks.values())

    def names(self) -> str:
        """The served tasks for a message: ``"banking77, sms_spam"`` (or ``"none"``)."""
        return ", ".join(sorted(self._tasks)) or "none"

    def _load(self, record: ModelVersionRecord) -> Predictor:
        if self._loader is not None:
            return self._loader(record)
        predictor = load_version(record, self.context)
        # Warm up (the encoder's session loads on first use) so no request pays for it.
        predictor.predict(["warm-up"])
        return predictor

    def _batcher(self, predict: Callable[[Sequence[str]], Predictions]) -> MicroBatcher:
        return MicroBatcher(
            predict,
            max_batch=self.config.batch_max,
            max_wait_s=self.config.batch_wait_s,
            executor=self.executor,
            timeout_s=self.config.specialist_timeout_s,
        )

    def deploy(self, alias: str, record: ModelVersionRecord, predictor: Predictor) -> BatchedHandle:
        """The handle serving ``predictor`` (``record``'s version) under ``alias``."""
        return BatchedHandle(
            alias=alias,
            version=record.version,
            digest=record.artifact_digest,
            predictor=predictor,
            batcher=self._batcher(predictor.predict),
        )

    def _read(self) -> tuple[list[TaskRecord], dict[str, dict[str, ModelVersionRecord]]]:
        tasks = self.registry.tasks.all()
        aliased = self.registry.promotions.served()
        served = {
            task: {a: r for a, r in aliases.items() if a in SERVED_ALIASES}
            for task, aliases in aliased.items()
        }
        return tasks, served

    async def refresh(self) -> None:
        """Re-read the registry; load new versions; swap the new state in at once."""
        async with self._lock:
            tasks, served = await asyncio.to_thread(self._read)
            current = self._tasks
            fresh: dict[str, TaskState] = {}
            self._failures = {}
            for task in tasks:
                old = current.get(task.name)
                state = TaskState(spec=task.spec, created_at=task.created_at)
                if old is not None and old.spec == task.spec:
                    state.zero_shot = old.zero_shot
                for alias, record in served.get(task.name, {}).items():
                    previous = old.deployed.get(alias) if old is not None else None
                    handle = await self._deployed(task.name, alias, record, previous)
                    if handle is not None:
                        state.deployed[alias] = handle
                fresh[task.name] = state
            self._tasks = fresh
            self.load_failures = self._failures
            self.loaded = True
            if self.last_error is not None:
                log.warning("gateway: the registry can be read again")
            self.last_error = None
            self.failing_since = None

    async def _deployed(
        self,
        task: str,
        alias: str,
        record: ModelVersionRecord,
        previous: SpecialistHandle | None,
    ) -> SpecialistHandle | None:
        """The handle serving ``alias`` after this refresh: the one serving it already when
        it is the same version, a newly loaded one, or (if that fails) the previous one."""
        if (
            previous is not None
            and previous.digest == record.artifact_digest
            and previous.version == record.version
        ):
            return previous
        loop = asyncio.get_running_loop()
        try:
            predictor = await loop.run_in_executor(self.loader_executor, self._load, record)
        except Exception as exc:
            failure = LoadFailure(
                task=task,
                alias=alias,
                version=record.version,
                error=type(exc).__name__,
                serving=previous.version if previous is not None else None,
            )
            # Logged once per version (a refresh every few seconds retries the load).
            known = self.load_failures.get((task, alias))
            report = (
                log.debug if known is not None and known.version == record.version else (log.error)
            )
            report(
                "task %s: cannot load %s v%d (%s); %s",
                task,
                alias,
                record.version,
                exc,
                "keeping the version serving" if previous else "alias not served",
            )
            self._failures[(task, alias)] = failure
            if self.on_load_failure is not None:
                self.on_load_failure(task, alias)
            return previous
        if previous is None or previous.version != record.version:
            log.info("task %s: %s is now v%d", task, alias, record.version)
        return self.deploy(alias, record, predictor)

    def health(self) -> Health:
        """Readiness, by this rule (what ``/readyz`` answers):

        - ``not ready`` (503) when the portfolio never loaded, or when a ``champion`` the
          registry names failed to load and no version of it serves: that replica would
          answer its task without the champion, so it should not take traffic;
        - ``degraded`` (200) when the registry cannot be read after the portfolio loaded,
          when a new version failed to load and the previous one still serves, or when a
          ``challenger`` failed to load: the gateway serves what it has, and taking every
          replica out of rotation would turn a database blip into an outage;
        - ``ready`` (200) otherwise.

        Problems name no host, path or database (the log has the details).

            >>> portfolio.health().status
            'degraded'
        """
        problems = []
        if not self.loaded:
            error = self.last_error
            problems.append(client_message(error) if error is not None else "loading the portfolio")
            return Health("not ready", problems)
        fatal = False
        for failure in sorted(self.load_failures.values(), key=lambda f: (f.task, f.alias)):
            problems.append(failure.describe())
            fatal = fatal or (failure.alias == "champion" and failure.serving is None)
        if self.last_error is not None:
            since = self.failing_since
            age = f" for {self.clock() - since:.0f} s" if since is not None else ""
            problems.append(
                f"the registry cannot be read{age} ({client_message(self.last_error)}); "
                "serving what is loaded"
            )
        if fatal:
            return Health("not ready", problems)
        return Health("degraded" if problems else "ready", problems)

    async def start(self, refresh_s: float, *, on_tick: Callable[[], None] | None = None) -> None:
        """Load the portfolio, then refresh it every ``refresh_s`` in the background.

        A registry that cannot be read yet is no reason not to start: the error is kept in
        ``last_error`` (``/readyz`` says why) and the refresher retries. ``on_tick`` runs
        before each refresh (the gateway updates its gauges).
        """
        try:
            await self.refresh()
        except Exception as exc:
            self._failed(exc)
            log.error("gateway: cannot read the registry yet: %s", exc)
        self._refresher = asyncio.create_task(
            self._keep_fresh(refresh_s, on_tick), name="niche-refresh"
        )

    async def _keep_fresh(self, refresh_s: float, on_tick: Callable[[], None] | None) -> None:
        while True:
            await asyncio.sleep(refresh_s)
            if on_tick is not None:
                on_tick()
            try:
                await self.refresh()
            except Exception as exc:  # kept serving what is loaded; the next tick retries
                first = self.last_error is None
                self._failed(exc)
                # Once per outage, not every tick: /readyz and the log's first line say it.
                (log.warning if first else log.debug)(
                    "gateway: refreshing from the registry failed; serving what is loaded: %s",
                    exc,
                )

    def _failed(self, exc: BaseException) -> None:
        self.last_error = exc
        if self.failing_since is None:
            self.failing_since = self.clock()

    async def stop(self) -> None:
        """Stop refreshing; what is loaded keeps serving until :meth:`aclose`."""
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None

    def zero_shot(self, state: TaskState) -> MicroBatcher:
        """The built-in offline general model of ``state``'s task, built on first use."""
        if state.zero_shot is None:
            state.zero_shot = self._batcher(self._fit_zero_shot(state).predict)
        return state.zero_shot

    def _fit_zero_shot(self, state: TaskState) -> Predictor:
        from niche.specialists.context import FitContext
        from niche.specialists.kinds import get_kind

        context = FitContext(
            self.settings,
            encoder=self.encoder,
            options={"descriptions": state.spec.label_descriptions},
        )
        try:
            return get_kind("zero-shot").fit([], state.labels, context)
        except ValidationError as exc:
            # The labels come from the task's definition, not from the request.
            raise ConfigurationError(
                f"task {state.spec.name}: the offline zero-shot model cannot answer it "
                f"({exc.message}); give the task its labels, or configure a general model "
                "(NICHE_GENERAL_BASE_URL)"
            ) from exc

    async def aclose(self) -> None:
        await self.stop()
        for state in self._tasks.values():
            for handle in state.deployed.values():
                await handle.aclose()
            if state.zero_shot is not None:
                await state.zero_shot.aclose()
