"""Replay a labelled dataset through a running gateway, as an application would.

Each text goes out as a chat completion whose ``model`` is the task (plain HTTP with aiohttp,
or the official OpenAI SDK), paced at ``rate`` requests per second, optionally shifted by a
schedule (:mod:`niche.data.shift`), and for a seeded share of the requests the gold label is
posted back as feedback (``POST /v1/feedback``), as an application that learns the truth later
would. The result counts routes, errors and the agreement of the answers with the gold labels,
overall and per phase of the shift.

    >>> result = replay(DataSpec(dataset="clinc150/banking"), task="assistant",
    ...                 url="http://127.0.0.1:8000", limit=500, feedback_share=0.2,
    ...                 shift="after=300,domain=travel")
    >>> result.routes, result.phases[1].agreement
    ({'general': 420, 'specialist': 80}, 0.61)

The gateway's errors are counted, not raised: a replay measures them. Nothing answering at
``url`` at the start, a refused key, or a task the gateway does not serve is a
:class:`~niche.errors.ValidationError` naming the URL (the CLI exits with 2). This module
calls the gateway over HTTP only: it imports nothing of :mod:`niche.gateway`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from niche.data.rows import Rows
from niche.data.shift import ShiftPhase, StreamItem, build_stream, parse_shift
from niche.errors import ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.workflows.data import DataSpec, load_data
from niche.workflows.gateway_client import (
    CLIENTS,
    HttpClient,
    OpenAIClient,
    Reply,
    auth_headers,
    base_url,
    reason,
    served_models,
    unreachable,
)

__all__ = [
    "SPLITS",
    "PhaseSummary",
    "ReplayResult",
    "ReplayedRequest",
    "replay",
    "replay_rows",
    "replay_stream",
]

SPLITS = ("all", "train", "test")
"""Which rows of a dataset a replay draws from (``all``: train and test together)."""

# An answer's traffic record is written a little after the answer (the capture writer
# flushes every NICHE_GATEWAY_CAPTURE_FLUSH_MS, a shadowed request once its shadow call is
# done): feedback for it waits, then retries a 404 for a while before counting it refused.
FEEDBACK_DELAY_S = 0.5
FEEDBACK_RETRY_S = 5.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ReplayedRequest:
    """One request of a replay and what came back.

    ``status`` is the HTTP status, or 0 when no response came (``error`` says why:
    ``connection`` or ``timeout``). ``feedback`` is the status of the feedback post (None: no
    feedback was posted for it).
    """

    index: int
    phase: int
    label: str
    status: int
    answer: str | None = None
    route: str | None = None
    request_id: str | None = None
    error: str | None = None
    feedback: int | None = None

    @property
    def answered(self) -> bool:
        return self.status == 200 and self.answer is not None

    @property
    def agreed(self) -> bool:
        return self.answered and self.answer == self.label


@dataclass(frozen=True)
class PhaseSummary:
    """The counts of one phase of the replay (0: before the first shift)."""

    phase: int
    shift: str | None
    sent: int
    answered: int
    agreed: int
    routes: dict[str, int]

    @property
    def agreement(self) -> float | None:
        """Share of the answers equal to the gold label (None: nothing answered)."""
        return self.agreed / self.answered if self.answered else None

    def share(self, route: str) -> float:
        """Share of this phase's answers that took ``route`` (``specialist``, ``general``…)."""
        return self.routes.get(route, 0) / self.answered if self.answered else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "shift": self.shift,
            "sent": self.sent,
            "answered": self.answered,
            "agreed": self.agreed,
            "agreement": self.agreement,
            "routes": dict(self.routes),
        }


@dataclass(frozen=True)
class ReplayResult:
    """What a replay sent and what came back; ``requests`` holds each request in order.

    ``errors`` counts failed requests by HTTP status (``"502"``) or by ``connection`` /
    ``timeout``; ``routes`` counts answers by the route the gateway took (its
    ``x-niche-route`` header); ``feedback_refused`` counts refused feedback posts by status.
    """

    task: str
    url: str
    client: str
    source: str
    seed: int
    shift: tuple[ShiftPhase, ...]
    requests: tuple[ReplayedRequest, ...]
    seconds: float
    feedback_sent: int = 0
    feedback_attached: int = 0
    feedback_refused: dict[str, int] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return len(self.requests)

    @property
    def answered(self) -> int:
        return sum(r.answered for r in self.requests)

    @property
    def agreed(self) -> int:
        return sum(r.agreed for r in self.requests)

    @property
    def agreement(self) -> float | None:
        """Share of the answers equal to the gold label (None: nothing answered)."""
        return self.agreed / self.answered if self.answered else None

    @property
    def errors(self) -> dict[str, int]:
        return dict(
            Counter(r.error or str(r.status) for r in self.requests if not r.answered).most_common()
        )

    @property
    def routes(self) -> dict[str, int]:
        return _routes(self.requests)

    @property
    def rate(self) -> float:
        """Requests sent per second (the pace reached)."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def phases(self) -> list[PhaseSummary]:
        """One summary per phase present in the replay, in order."""
        by_phase: dict[int, list[ReplayedRequest]] = {}
        for request in self.requests:
            by_phase.setdefault(request.phase, []).append(request)
        return [
            PhaseSummary(
                phase=phase,
                shift=self.shift[phase - 1].describe() if phase else None,
                sent=len(requests),
                answered=sum(r.answered for r in requests),
                agreed=sum(r.agreed for r in requests),
                routes=_routes(requests),
            )
            for phase, requests in sorted(by_phase.items())
        ]

    def share(self, route: str) -> float:
        """Share of all answers that took ``route``."""
        return self.routes.get(route, 0) / self.answered if self.answered else 0.0

    def to_dict(self) -> dict[str, Any]:
        """What ``niche replay --json`` prints (without the per-request list)."""
        return {
            "task": self.task,
            "url": self.url,
            "client": self.client,
            "source": self.source,
            "seed": self.seed,
            "shift": [phase.describe() for phase in self.shift],
            "sent": self.sent,
            "answered": self.answered,
            "agreed": self.agreed,
            "agreement": self.agreement,
            "errors": self.errors,
            "routes": self.routes,
            "phases": [phase.to_dict() for phase in self.phases],
            "feedback": {
                "sent": self.feedback_sent,
                "attached": self.feedback_attached,
                "refused": dict(self.feedback_refused),
            },
            "seconds": round(self.seconds, 3),
            "rate_per_s": round(self.rate, 2),
        }


def _routes(requests: Sequence[ReplayedRequest]) -> dict[str, int]:
    return dict(Counter(r.route or "unknown" for r in requests if r.answered).most_common())


# -- entry points ----------------------------------------------------------------------------


def replay(
    data: DataSpec,
    *,
    task: str,
    url: str,
    settings: Settings | None = None,
    api_key: str | None = None,
    rate: float | None = None,
    limit: int | None = None,
    skip: int = 0,
    shift: str | Sequence[ShiftPhase] | None = None,
    feedback_share: float = 0.0,
    seed: int | None = None,
    split: str = "all",
    client: str = "http",
    concurrency: int = 4,
    timeout_s: float = 30.0,
    progress: Progress = NO_PROGRESS,
) -> ReplayResult:
    """Send ``data``'s rows (a catalog dataset or a file) to task ``task`` of the gateway at
    ``url``, shifted by ``shift``, and count what came back.

    The rows (``split``: ``all``, ``train`` or ``test``) are sent in a seeded order (``seed``,
    default ``NICHE_SEED``); ``skip`` leaves out the first requests of that stream, so
    successive replays with the same seed and shift go on where the last one stopped (a
    phase's ``after`` counts from the stream's start). ``api_key`` defaults to
    ``NICHE_REPLAY_API_KEY`` (none: the gateway's local mode). ``rate``: requests per second
    (None: as fast as ``concurrency`` allows). ``feedback_share``: the share of requests whose
    gold label is posted to ``/v1/feedback`` once answered.

    >>> replay(DataSpec(dataset="clinc150/banking"), task="assistant",
    ...        url="http://127.0.0.1:8000", limit=100).routes
    {'general': 100}
    """
    settings = settings or Settings()
    seed = settings.get("NICHE_SEED") if seed is None else seed
    phases = parse_shift(shift) if isinstance(shift, str) else tuple(shift or ())
    _check_options(skip=skip, limit=limit, split=split)
    loaded = load_data(data, settings)
    domains = {}
    for phase in phases:
        if phase.domain is not None and phase.domain not in domains:
            domains[phase.domain] = _domain_rows(loaded.name, phase, split, settings)
    return replay_rows(
        _split_rows(loaded.train, loaded.test, split, loaded.name),
        task=task,
        url=url,
        settings=settings,
        source=loaded.source,
        api_key=api_key,
        rate=rate,
        limit=limit,
        skip=skip,
        shift=phases,
        domains=domains,
        feedback_share=feedback_share,
        seed=seed,
        client=client,
        concurrency=concurrency,
        timeout_s=timeout_s,
        progress=progress,
    )


def replay_rows(
    rows: Rows,
    *,
    task: str,
    url: str,
    settings: Settings | None = None,
    source: str | None = None,
    api_key: str | None = None,
    rate: float | None = None,
    limit: int | None = None,
    skip: int = 0,
    shift: Sequence[ShiftPhase] = (),
    domains: dict[str, Rows] | None = None,
    feedback_share: float = 0.0,
    seed: int = 0,
    client: str = "http",
    concurrency: int = 4,
    timeout_s: float = 30.0,
    progress: Progress = NO_PROGRESS,
) -> ReplayResult:
    """:func:`replay` of rows already loaded (``domains``: the rows of each ``domain=``
    phase's CLINC150 domain).

    >>> replay_rows(rows, task="tickets", url="http://127.0.0.1:8000", limit=10).sent
    10
    """
    _check_options(skip=skip, limit=limit)
    stream = build_stream(
        rows,
        shift,
        seed=seed,
        limit=None if limit is None else skip + limit,
        domains=domains,
        feedback_share=feedback_share,
    )
    return replay_stream(
        stream[skip:],
        task=task,
        url=url,
        settings=settings,
        source=source or rows.source,
        first_index=skip,
        seed=seed,
        shift=tuple(shift),
        api_key=api_key,
        rate=rate,
        client=client,
        concurrency=concurrency,
        timeout_s=timeout_s,
        progress=progress,
    )


def replay_stream(
    stream: Sequence[StreamItem],
    *,
    task: str,
    url: str,
    settings: Settings | None = None,
    source: str = "stream",
    first_index: int = 0,
    seed: int = 0,
    shift: tuple[ShiftPhase, ...] = (),
    api_key: str | None = None,
    rate: float | None = None,
    client: str = "http",
    concurrency: int = 4,
    timeout_s: float = 30.0,
    feedback_delay_s: float = FEEDBACK_DELAY_S,
    feedback_retry_s: float = FEEDBACK_RETRY_S,
    progress: Progress = NO_PROGRESS,
    clock: Clock = time.monotonic,
    sleep: Sleep | None = None,
) -> ReplayResult:
    """Send the prepared ``stream`` (see :func:`~niche.data.shift.build_stream`) to task
    ``task`` at ``url`` and count what came back; the other entry points end here.

    ``clock`` and ``sleep`` pace the requests and time the replay (inject both in tests:
    a clock that ``sleep`` advances makes the pacing exact). ``first_index`` numbers the
    requests (a replay that skipped the stream's first ones).

    >>> replay_stream([StreamItem("my card is late", "card_arrival", 0)], task="banking77",
    ...               url="http://127.0.0.1:8000").answered
    1
    """
    settings = settings or Settings()
    if client not in CLIENTS:
        raise ValidationError(
            f"client must be one of {', '.join(CLIENTS)}, got {client!r}", param="client"
        )
    if rate is not None and not rate > 0:
        raise ValidationError(
            f"rate must be a positive number per second, got {rate}", param="rate"
        )
    if concurrency < 1:
        raise ValidationError(
            f"concurrency must be at least 1, got {concurrency}", param="concurrency"
        )
    if timeout_s <= 0:
        raise ValidationError(f"timeout must be positive, got {timeout_s}", param="timeout_s")
    base = base_url(url)
    key = api_key if api_key is not None else settings.get("NICHE_REPLAY_API_KEY")
    run = _Run(
        stream=list(stream),
        task=task,
        base=base,
        key=key or None,
        client=client,
        rate=rate,
        concurrency=concurrency,
        timeout_s=timeout_s,
        feedback_delay_s=feedback_delay_s,
        feedback_retry_s=feedback_retry_s,
        first_index=first_index,
        clock=clock,
        sleep=sleep or asyncio.sleep,
    )
    # Before the progress bar: a gateway that is not there is one error line, not a bar.
    asyncio.run(run._probe())
    description = f"replaying {len(run.stream)} requests to {task}"
    with progress.task(description, total=len(run.stream)) as advance:
        requests, seconds = asyncio.run(run.main(advance))
    fed = [r.feedback for r in requests if r.feedback is not None]
    return ReplayResult(
        task=task,
        url=base,
        client=client,
        source=source,
        seed=seed,
        shift=shift,
        requests=tuple(requests),
        seconds=seconds,
        feedback_sent=len(fed),
        feedback_attached=sum(status == 200 for status in fed),
        feedback_refused=dict(Counter(str(s) for s in fed if s != 200).most_common()),
    )


# -- checks ---------------------------------------------------------------------------------


def _check_options(*, skip: int, limit: int | None, split: str = "all") -> None:
    if skip < 0:
        raise ValidationError(f"skip must be >= 0, got {skip}", param="skip")
    if limit is not None and limit < 0:
        raise ValidationError(f"limit must be >= 0, got {limit}", param="limit")
    if split not in SPLITS:
        raise ValidationError(
            f"split must be one of {', '.join(SPLITS)}, got {split!r}", param="split"
        )


def _split_rows(train: Rows, test: Rows | None, split: str, name: str) -> Rows:
    if split == "train":
        return train
    if split == "test":
        if test is None:
            raise ValidationError(
                f"{name} has no test split; replay --split all or train", param="split"
            )
        return test
    if test is None:
        return train
    return Rows(
        texts=train.texts + test.texts,
        labels=train.labels + test.labels,
        source=f"{train.source} + {test.source}",
    )


def _domain_rows(dataset: str, phase: ShiftPhase, split: str, settings: Settings) -> Rows:
    """The rows of a ``domain=`` phase: that CLINC150 domain, through the catalog."""
    if dataset.partition("/")[0] != "clinc150":
        raise ValidationError(
            f"--shift {phase.describe()}: domain= shifts to another CLINC150 domain; replay "
            f"--dataset clinc150 or clinc150/<domain>, not {dataset}",
            param="shift",
        )
    loaded = load_data(DataSpec(dataset=f"clinc150/{phase.domain}"), settings)
    return _split_rows(loaded.train, loaded.test, split, loaded.name)


# -- the run ----------------------------------------------------------------------------------


class _Pacer:
    """At most ``rate`` starts per second (a token bucket holding one token); no limit
    without a rate."""

    def __init__(self, rate: float | None, clock: Clock, sleep: Sleep) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock, self.sleep = clock, sleep
        self.next: float | None = None

    async def wait(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        start = now if self.next is None else max(self.next, now)
        if start > now:
            await self.sleep(start - now)
        self.next = start + self.interval


@dataclass
class _Run:
    stream: list[StreamItem]
    task: str
    base: str
    key: str | None
    client: str
    rate: float | None
    concurrency: int
    timeout_s: float
    feedback_delay_s: float
    feedback_retry_s: float
    first_index: int
    clock: Clock
    sleep: Sleep

    async def main(self, advance: Callable[[int], None]) -> tuple[list[ReplayedRequest], float]:
        client = (OpenAIClient if self.client == "openai" else HttpClient)(
            self.base, self.key, self.timeout_s, self.concurrency
        )
        pacer = _Pacer(self.rate, self.clock, self.sleep)
        slots = asyncio.Semaphore(self.concurrency)
        feedback_slots = asyncio.Semaphore(self.concurrency)
        replies: list[Reply | None] = [None] * len(self.stream)
        feedback: dict[int, asyncio.Task[int]] = {}
        start = self.clock()

        async def one(i: int, item: StreamItem) -> None:
            try:
                reply = replies[i] = await client.complete(self.task, item.text)
            finally:
                slots.release()
                advance(1)
            if item.feedback and reply.status == 200 and reply.request_id:
                feedback[i] = asyncio.create_task(
                    self._feedback(client, feedback_slots, reply.request_id, item.label)
                )

        try:
            sending: list[asyncio.Task[None]] = []
            for i, item in enumerate(self.stream):
                await pacer.wait()
                await slots.acquire()
                sending.append(asyncio.create_task(one(i, item)))
            await asyncio.gather(*sending)
            seconds = self.clock() - start
            fed = dict(zip(feedback, await asyncio.gather(*feedback.values()), strict=True))
        finally:
            await client.aclose()
        requests = [
            ReplayedRequest(
                index=self.first_index + i,
                phase=item.phase,
                label=item.label,
                status=reply.status,
                answer=reply.answer,
                route=reply.route,
                request_id=reply.request_id,
                error=reply.error,
                feedback=fed.get(i),
            )
            for i, (item, reply) in enumerate(zip(self.stream, replies, strict=True))
            if reply is not None
        ]
        return requests, seconds

    async def _probe(self) -> None:
        """Refuse at once when nothing answers, the key is refused, or the task is not served."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=min(self.timeout_s, 10.0))
        try:
            async with (
                aiohttp.ClientSession(headers=auth_headers(self.key), timeout=timeout) as session,
                session.get(f"{self.base}/v1/models") as response,
            ):
                served = served_models(self.base, response.status, await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise unreachable(self.base, reason(exc)) from exc
        if self.task not in served:
            raise ValidationError(
                f"the gateway at {self.base} serves no task {self.task!r} (its tasks: "
                f"{', '.join(sorted(served)) or 'none'}); create it with `niche tasks create` "
                "(a running gateway picks it up within NICHE_GATEWAY_REFRESH_S)",
                param="task",
            )

    async def _feedback(
        self, client: HttpClient | OpenAIClient, slots: asyncio.Semaphore, rid: str, label: str
    ) -> int:
        """Post the gold label once the record is likely stored; retry a 404 meanwhile (a slot
        is held only while a post is in flight, not between tries)."""
        from tenacity import AsyncRetrying, retry_if_result, stop_after_delay, wait_exponential

        async def post() -> int:
            async with slots:
                return await client.feedback(rid, label)

        await self.sleep(self.feedback_delay_s)
        retrying = AsyncRetrying(
            stop=stop_after_delay(self.feedback_retry_s),
            wait=wait_exponential(multiplier=0.1, max=1.0),
            retry=retry_if_result(lambda status: status == 404),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else 0,
            sleep=self.sleep,
        )
        return int(await retrying(post))
