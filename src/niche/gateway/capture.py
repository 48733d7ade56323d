"""Traffic capture: every answered request becomes a record, written in batches off the hot path.

Requests only append to a list; a background task flushes it to the registry database every
``flush_s`` (one INSERT per batch, on a thread so the event loop never waits for the database).
No record can stop capture:

- each record is built, redacted and cleaned (:func:`~niche.registry.clipping.clean_traffic`:
  NULs removed, strings cut to their columns, the input clipped) before its batch is written;
- a batch the database refuses for its data is split in halves until the good records are
  written and each bad one is in the dead-letter file (:mod:`niche.registry.deadletters`);
- only transient errors (database unreachable or locked) keep records queued, retried with
  exponential backoff (tenacity); beyond ``max_pending`` queued records, the oldest go to the
  dead-letter file, and so does what is left when the gateway stops without a database.

Key spend is written on its own path, before the records and whatever happens to them.
:meth:`CaptureWriter.aclose` flushes what is left: on SIGTERM uvicorn first finishes the
requests in flight, then the gateway closes the writer, so every answered request is stored.
A SIGKILL loses what was queued: at most one flush interval of records and spend.

    >>> writer = CaptureWriter(registry, flush_s=0.2, dead_letters=DeadLetterFile(path))
    >>> writer.start()
    >>> writer.submit(TrafficRecord(...), spend=(key_id, 0.0004))
    >>> await writer.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import exc as sa_exc
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from niche.errors import ConfigurationError, DatabaseError
from niche.registry.clipping import DEFAULT_MAX_INPUT_BYTES, clean_traffic
from niche.registry.deadletters import DeadLetter

if TYPE_CHECKING:
    from niche.registry.deadletters import DeadLetterFile
    from niche.registry.store import Registry, TrafficRecord

__all__ = ["CaptureWriter", "Pending", "is_transient"]

Pending = Union["TrafficRecord", Callable[[], "TrafficRecord"]]

log = logging.getLogger("niche.gateway")

# Records kept in memory while the database is unreachable; beyond this the oldest go to the
# dead-letter file, so a long outage cannot exhaust the gateway's memory.
MAX_PENDING = 200_000
BATCH = 1_000
BACKOFF_MAX_S = 5.0
# With a retention, records older than it are pruned this often (in batches of PRUNE_BATCH).
PRUNE_EVERY_S = 3600.0
PRUNE_BATCH = 10_000
CLOSE_BACKOFF_S = 0.2


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is away (retry later), not that the data is bad.

    >>> is_transient(DatabaseError("cannot use the registry database: connection refused"))
    True
    """
    if isinstance(exc, DatabaseError | OSError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return False


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _redacted(
    record: TrafficRecord, redact: Callable[[TrafficRecord], TrafficRecord | None]
) -> TrafficRecord | None:
    """``redact(record)``; when it changed the input but left the classified ``text`` as it
    was (a hook written before records kept the text apart), the text is not stored."""
    redacted = redact(record)
    if (
        redacted is not None
        and redacted.text is not None
        and redacted.text == record.text
        and redacted.input != record.input
    ):
        return dataclasses.replace(redacted, text=None)
    return redacted


def _message(exc: BaseException) -> str:
    # A driver error's own first line, without SQLAlchemy's statement and parameters.
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


class CaptureWriter:
    """Buffers traffic records and key spend; flushes them to ``registry`` in the background.

    ``dead_letters`` receives what cannot be stored (None: it is logged as an error instead);
    ``on_dead_letter(reason, n)`` counts it (the gateway's metric), ``on_cleaned(n)`` the
    records cleaning changed; ``max_input_bytes`` caps each stored input; with ``retention_s``, the background task deletes older records every
    ``prune_every_s``; ``clock`` stamps dead letters and dates the retention.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        flush_s: float,
        redact: Callable[[TrafficRecord], TrafficRecord | None] | None = None,
        on_flush: Callable[[int, int], None] | None = None,
        dead_letters: DeadLetterFile | None = None,
        on_dead_letter: Callable[[str, int], None] | None = None,
        on_cleaned: Callable[[int], None] | None = None,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        max_pending: int = MAX_PENDING,
        backoff_max_s: float = BACKOFF_MAX_S,
        retention_s: float | None = None,
        prune_every_s: float = PRUNE_EVERY_S,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if isinstance(max_input_bytes, bool) or max_input_bytes < 1:
            raise ConfigurationError(
                f"NICHE_GATEWAY_CAPTURE_MAX_INPUT_BYTES must be at least 1, got {max_input_bytes!r}",
                setting="NICHE_GATEWAY_CAPTURE_MAX_INPUT_BYTES",
            )
        if retention_s is not None and retention_s <= 0:
            raise ConfigurationError(
                f"NICHE_TRAFFIC_RETENTION_DAYS must be at least 1, got {retention_s / 86_400!r}",
                setting="NICHE_TRAFFIC_RETENTION_DAYS",
            )
        self.registry = registry
        self.flush_s = flush_s
        self.retention_s = retention_s
        self.prune_every_s = prune_every_s
        self.pruned = 0
        self.redact = redact
        self.on_flush = on_flush
        self.dead_letters = dead_letters
        self.on_dead_letter = on_dead_letter
        self.on_cleaned = on_cleaned
        self.max_input_bytes = max_input_bytes
        self.max_pending = max_pending
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self._records: list[Pending] = []
        self._ready: list[TrafficRecord] = []
        self._overflow: list[Pending] = []
        self._spend: defaultdict[int, float] = defaultdict(float)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._closing = False
        self._closed: asyncio.Event | None = None
        self._pruner: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.dead_lettered = 0
        self.cleaned = 0

    @property
    def pending(self) -> int:
        """Records not yet written (nor dead-lettered)."""
        return len(self._records) + len(self._ready) + len(self._overflow)

    def pending_spend(self, key_id: int) -> float:
        """Spend of ``key_id`` not yet written to the database."""
        return self._spend.get(key_id, 0.0)

    def submit(self, record: Pending | None, *, spend: tuple[int, float] | None = None) -> None:
        """Queue ``record`` (None: spend only) and add ``spend`` = (key id, usd) to a key.

        ``record`` may be a zero-argument callable building the record: it is called, and
        the redaction hook applied, in the writer's thread, off the request path.
        """
        if spend is not None and spend[1] > 0:
            self._spend[spend[0]] += spend[1]
        if record is None:
            return
        self._records.append(record)
        if len(self._records) == BATCH and self._wake is not None:
            self._wake.set()  # a full batch: flush now rather than at the next tick
        if len(self._records) > self.max_pending:
            overflow = len(self._records) - self.max_pending
            self._overflow.extend(self._records[:overflow])
            del self._records[:overflow]
            if len(self._overflow) % BATCH == 1 and self._wake is not None:
                self._wake.set()  # to the dead-letter file soon, even while backing off

    # -- building and burying (on the writer's thread) ----------------------------------------

    def _prepare(self, batch: Sequence[Pending]) -> list[TrafficRecord]:
        records = []
        invalid = []
        cleaned = 0
        for pending in batch:
            try:
                record: TrafficRecord | None = pending() if callable(pending) else pending
                if self.redact is not None and record is not None:
                    record = _redacted(record, self.redact)
            except Exception:
                # Never store (nor dead-letter) what the redaction hook was meant to clean.
                log.exception("traffic capture: building or redacting a record failed; dropped")
                self.dropped += 1
                continue
            if record is None:
                continue
            try:
                clean = clean_traffic(record, max_input_bytes=self.max_input_bytes)
            except Exception as exc:  # e.g. an input that is not JSON: kept in the file
                invalid.append(self._letter("record", "invalid", record.to_dict(), exc))
                continue
            records.append(clean)
            cleaned += clean is not record
        self._bury(invalid)
        if cleaned:
            self.cleaned += cleaned
            if self.on_cleaned is not None:
                self.on_cleaned(cleaned)
        return records

    def _letter(
        self, kind: str, reason: str, record: dict[str, Any], exc: BaseException | None
    ) -> DeadLetter:
        return DeadLetter(
            at=self.clock(),
            kind=kind,
            reason=reason,
            error=type(exc).__name__ if exc is not None else None,
            message=_message(exc) if exc is not None else None,
            record=record,
        )

    def _bury(self, letters: Sequence[DeadLetter]) -> None:
        """Write ``letters`` to the dead-letter file (or the log), and count them."""
        if not letters:
            return
        try:
            if self.dead_letters is None:
                raise OSError("no dead-letter file configured")
            self.dead_letters.append(letters)
        except OSError as exc:
            # Last resort: the log keeps them, so nothing disappears silently.
            log.error(
                "traffic capture: cannot write %d dead letter(s) (%s): %s",
                len(letters),
                exc,
                b"".join(letter.line() for letter in letters).decode("utf-8", "replace"),
            )
        self.dead_lettered += len(letters)
        by_reason: dict[str, int] = defaultdict(int)
        for letter in letters:
            by_reason[letter.reason] += 1
        for reason, count in by_reason.items():
            log.warning("traffic capture: %d record(s) dead-lettered (%s)", count, reason)
            if self.on_dead_letter is not None:
                self.on_dead_letter(reason, count)

    def _bury_pending(self, batch: Sequence[Pending], reason: str) -> None:
        records = self._prepare(batch)
        self._bury([self._letter("record", reason, r.to_dict(), None) for r in records])

    def _store(
        self, batch: list[TrafficRecord]
    ) -> tuple[int, list[TrafficRecord], Exception | None]:
        """Write ``batch``, splitting it around records the database refuses; return how many
        were written, and what is left when the database went away (with its error)."""
        todo = deque([batch])
        written = 0
        while todo:
            part = todo.popleft()
            try:
                self.registry.traffic.record(part)
            except Exception as exc:
                if is_transient(exc):
                    return written, [r for p in (part, *todo) for r in p], exc
                if len(part) == 1:
                    self._bury([self._letter("record", "data-error", part[0].to_dict(), exc)])
                else:
                    middle = len(part) // 2
                    todo.extendleft((part[middle:], part[:middle]))
                continue
            written += len(part)
        return written, [], None

    # -- flushing -------------------------------------------------------------------------

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task = asyncio.create_task(self._run(), name="niche-capture-writer")
        if self.retention_s is not None:
            self._closed = asyncio.Event()
            self._pruner = asyncio.create_task(
                self._prune_every(self.retention_s, self._closed), name="niche-capture-pruner"
            )

    async def _nap(self, seconds: float) -> None:
        """Sleep between retries; a full batch, an overflow or the close cut it short."""
        if self._wake is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _stopping(self, state: RetryCallState) -> bool:
        return self._closing

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.flush_s
        while not self._closing:
            await self._nap(delay)
            started = loop.time()
            # While the database is away, back off (flush_s, 2x, 4x … up to backoff_max_s).
            retrying = AsyncRetrying(
                retry=retry_if_exception(is_transient),
                wait=wait_exponential(multiplier=self.flush_s, max=self.backoff_max_s),
                stop=self._stopping,
                sleep=self._nap,
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        await self._flush(raise_transient=True)
            except Exception as exc:  # transient and closing: aclose takes over
                if not is_transient(exc):
                    log.exception("traffic capture: a flush failed; retried at the next tick")
            # Ticks start flush_s apart (not flush_s after a write ends): what a SIGKILL can
            # lose is one interval plus the write in flight.
            delay = max(0.0, self.flush_s - (loop.time() - started))

    async def _prune_every(self, retention_s: float, closed: asyncio.Event) -> None:
        """Delete records older than ``retention_s`` now and every ``prune_every_s``.

        A task of its own, so that a long prune never holds up a flush."""
        while not closed.is_set():
            before = self.clock() - timedelta(seconds=retention_s)
            try:
                deleted = await asyncio.to_thread(
                    self.registry.traffic.prune, before, batch_size=PRUNE_BATCH
                )
            except Exception as exc:  # housekeeping: capture goes on; tried next time
                log.warning("traffic capture: pruning records before %s failed: %s", before, exc)
            else:
                self.pruned += deleted
                if deleted:
                    log.info("traffic capture: pruned %d record(s) from before %s", deleted, before)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), self.prune_every_s)

    async def flush(self) -> int:
        """Write everything queued so far; return how many records were written.

        Records the database refuses go to the dead-letter file; on a transient database
        error what is left stays queued and is retried at the next flush.
        """
        return await self._flush(raise_transient=False)

    async def _flush(self, *, raise_transient: bool) -> int:
        lock = self._lock or asyncio.Lock()
        async with lock:
            if self._overflow:
                overflow, self._overflow = self._overflow, []
                await asyncio.to_thread(self._bury_pending, overflow, "queue-full")
            spend_error = await self._flush_spend()
            written, error = await self._flush_records()
            error = error or spend_error
            if error is not None:
                self.failures += 1
                log.warning(
                    "traffic capture: writing failed (%d record(s) queued): %s",
                    self.pending,
                    _message(error),
                )
            if self.on_flush is not None and written:
                self.on_flush(written, self.pending)
            if error is not None and raise_transient:
                raise error
            return written

    async def _flush_spend(self) -> Exception | None:
        """Write each key's spend (its own path: a bad record never holds it up)."""
        for key_id, usd in list(self._spend.items()):
            try:
                await asyncio.to_thread(self.registry.keys.add_spend, key_id, usd)
            except Exception as exc:
                if is_transient(exc):
                    return exc
                # E.g. a key that no longer exists: kept in the file, not retried forever.
                letter = self._letter("spend", "data-error", {"key_id": key_id, "usd": usd}, exc)
                await asyncio.to_thread(self._bury, [letter])
            self._spend[key_id] -= usd
            if self._spend[key_id] <= 1e-12:
                del self._spend[key_id]
        return None

    async def _flush_records(self) -> tuple[int, Exception | None]:
        written = 0
        while self._records or self._ready:
            if not self._ready:
                # Built, redacted and cleaned once: a failed write retries them as they are.
                batch = self._records[:BATCH]
                self._ready = await asyncio.to_thread(self._prepare, batch)
                del self._records[: len(batch)]
            if self._ready:
                stored, left, error = await asyncio.to_thread(self._store, self._ready)
                written += stored
                self.written += stored
                self._ready = left
                if error is not None:
                    return written, error
        return written, None

    async def aclose(self, *, attempts: int = 5) -> None:
        """Stop the background task and flush every queued record (retrying a few times);
        what the database still cannot take goes to the dead-letter file."""
        if self._pruner is not None and self._closed is not None:
            self._closed.set()
            await self._pruner  # a prune in progress ends with its current pass
            self._pruner = None
        if self._task is not None:
            # Let a flush in progress finish rather than cancel it: its database write would
            # complete on its thread anyway, and then be written a second time here.
            self._closing = True
            if self._wake is not None:
                self._wake.set()
            await self._task
            self._task = None
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=CLOSE_BACKOFF_S, max=self.backoff_max_s),
            stop=stop_after_attempt(attempts),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._flush(raise_transient=True)
        except Exception as exc:  # transient: the dead-letter file takes the rest
            if not is_transient(exc):
                log.exception("traffic capture: the last flush failed")
        if self.pending or self._spend:
            log.error(
                "traffic capture: the database is unreachable at shutdown; %d record(s) and "
                "the spend of %d key(s) go to the dead-letter file",
                self.pending,
                len(self._spend),
            )
            await asyncio.to_thread(self._bury_everything)

    def _bury_everything(self) -> None:
        self._bury([self._letter("record", "shutdown", r.to_dict(), None) for r in self._ready])
        self._ready = []
        batch = [*self._overflow, *self._records]
        self._overflow, self._records = [], []
        self._bury_pending(batch, "shutdown")
        spend = [
            self._letter("spend", "shutdown", {"key_id": key_id, "usd": usd}, None)
            for key_id, usd in self._spend.items()
        ]
        self._spend.clear()
        self._bury(spend)
