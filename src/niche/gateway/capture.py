"""Traffic capture: every answered request becomes a record, written in batches off the hot path.

Requests only append to a list; a background task flushes it to the registry database every
``flush_s`` (one INSERT per batch, on a thread so the event loop never waits for the database),
together with the spend of each API key. :meth:`CaptureWriter.aclose` flushes what is left:
on SIGTERM uvicorn first finishes the requests in flight, then the gateway closes the writer,
so every answered request is stored.

    >>> writer = CaptureWriter(registry, flush_s=0.2, redact=None)
    >>> writer.start()
    >>> writer.submit(TrafficRecord(...), spend=(key_id, 0.0004))
    >>> await writer.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from niche.registry.store import Registry, TrafficRecord

__all__ = ["CaptureWriter", "Pending"]

Pending = Union["TrafficRecord", Callable[[], "TrafficRecord"]]

log = logging.getLogger("niche.gateway")

# Records kept in memory while the database is unreachable; beyond this the oldest are dropped
# (and counted), so a long outage cannot exhaust the gateway's memory.
MAX_PENDING = 200_000
BATCH = 1_000


class CaptureWriter:
    """Buffers traffic records and key spend; flushes them to ``registry`` in the background."""

    def __init__(
        self,
        registry: Registry,
        *,
        flush_s: float,
        redact: Callable[[TrafficRecord], TrafficRecord | None] | None = None,
        on_flush: Callable[[int, int], None] | None = None,
    ) -> None:
        self.registry = registry
        self.flush_s = flush_s
        self.redact = redact
        self.on_flush = on_flush
        self._records: list[Pending] = []
        self._ready: list[TrafficRecord] = []
        self._spend: defaultdict[int, float] = defaultdict(float)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._closing = False
        self.written = 0
        self.dropped = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        return len(self._records) + len(self._ready)

    def pending_spend(self, key_id: int) -> float:
        """Spend of ``key_id`` not yet written to the database."""
        return self._spend.get(key_id, 0.0)

    def submit(self, record: Pending | None, *, spend: tuple[int, float] | None = None) -> None:
        """Queue ``record`` (None: spend only) and add ``spend`` = (key id, usd) to a key.

        ``record`` may be a zero-argument callable building the record: it is called, and
        the redaction hook applied, in the writer's thread, off the request path.
        """
        if record is not None:
            self._records.append(record)
            if len(self._records) == BATCH and self._wake is not None:
                self._wake.set()  # a full batch: flush now rather than at the next tick
            if len(self._records) > MAX_PENDING:
                overflow = len(self._records) - MAX_PENDING
                del self._records[:overflow]
                self.dropped += overflow
        if spend is not None and spend[1] > 0:
            self._spend[spend[0]] += spend[1]

    def _prepare(self, batch: list[Pending]) -> list[TrafficRecord]:
        records = []
        for pending in batch:
            try:
                record: TrafficRecord | None = pending() if callable(pending) else pending
                if self.redact is not None and record is not None:
                    record = self.redact(record)
            except Exception:
                # Never store what the redaction hook was meant to clean.
                log.exception("traffic capture: building or redacting a record failed; dropped")
                self.dropped += 1
                continue
            if record is not None:
                records.append(record)
        return records

    def start(self) -> None:
        self._wake = wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task = asyncio.create_task(self._run(wake), name="niche-capture-writer")

    async def _run(self, wake: asyncio.Event) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.flush_s)
            wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write everything queued so far; return how many records were written.

        On a database error what is left stays queued and is retried at the next flush.
        """
        lock = self._lock or asyncio.Lock()
        async with lock:
            written = 0
            try:
                while self._records or self._ready:
                    if not self._ready:
                        # Built and redacted once: a failed write retries them as they are.
                        batch = self._records[:BATCH]
                        self._ready = await asyncio.to_thread(self._prepare, batch)
                        del self._records[: len(batch)]
                    if self._ready:
                        await asyncio.to_thread(self.registry.traffic.record, self._ready)
                        written += len(self._ready)
                        self.written += len(self._ready)
                    self._ready = []
                for key_id, usd in list(self._spend.items()):
                    await asyncio.to_thread(self.registry.keys.add_spend, key_id, usd)
                    self._spend[key_id] -= usd
                    if self._spend[key_id] <= 1e-12:
                        del self._spend[key_id]
            except Exception as exc:  # the gateway keeps serving; the next flush retries
                self.failures += 1
                log.warning(
                    "traffic capture: writing failed (%d record(s) queued): %s",
                    self.pending,
                    exc,
                )
            if self.on_flush is not None and written:
                self.on_flush(written, self.pending)
            return written

    async def aclose(self, *, attempts: int = 5) -> None:
        """Stop the background task and flush every queued record (retrying a few times)."""
        if self._task is not None:
            # Let a flush in progress finish rather than cancel it: its database write would
            # complete on its thread anyway, and then be written a second time here.
            self._closing = True
            if self._wake is not None:
                self._wake.set()
            await self._task
            self._task = None
        for attempt in range(attempts):
            await self.flush()
            if not self.pending and not self._spend:
                return
            await asyncio.sleep(0.2 * (attempt + 1))
        if self.pending:
            log.error(
                "traffic capture: %d record(s) could not be written at shutdown", self.pending
            )
