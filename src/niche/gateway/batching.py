"""Micro-batching: concurrent requests for one model share one encoder call.

The first request of a batch waits at most ``max_wait_s`` for company (only while traffic is
concurrent: after a batch of one, a lone request is not kept waiting), a batch holds at most
``max_batch`` texts, and the model runs on ``executor`` (one thread: onnxruntime uses the
cores itself, and the event loop stays free to accept the next batch meanwhile).

    >>> batcher = MicroBatcher(specialist.predict, max_batch=32, max_wait_s=0.002,
    ...                        executor=executor)
    >>> answer = await batcher.submit("where is my card?")
    >>> answer.label, answer.usage.compute_s, answer.batch_size
    ('card_arrival', 0.0004, 12)

Each answer's usage is its share of the batch's, measured as evaluation measures it
(:func:`niche.evaluation.measure_throughput`): the process's CPU seconds over the predict
call, all threads counted (``cpu_clock``, :func:`time.process_time`), plus the tokens the
predictor recorded (a remote model's). The gateway and the gate then price one model the
same way. Under concurrent load the process clock also counts the event loop's work during
the call, so a busy gateway's figure is an upper bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from niche.errors import SpecialistError, SpecialistTimeoutError
from niche.specialists.base import Predictions, Usage

__all__ = ["BatchAnswer", "MicroBatcher", "split_usage"]

log = logging.getLogger("niche.gateway")


@dataclass(frozen=True)
class BatchAnswer:
    """One text's prediction, its usage (its share of the batch's) and the size of the
    batch it was predicted in."""

    label: str
    confidence: float
    usage: Usage
    batch_size: int

    @property
    def compute_s(self) -> float:
        """This answer's share of the batch's compute seconds."""
        return self.usage.compute_s


def split_usage(usage: Usage, n: int) -> list[Usage]:
    """``usage`` of a batch of ``n`` split evenly over its answers (tokens in whole numbers,
    summing to the batch's). Without tokens all answers share one object: no allocation
    per answer on the hot path.

        >>> [u.input_tokens for u in split_usage(Usage(compute_s=0.3, input_tokens=7), 2)]
        [4, 3]
    """
    if n == 1:
        return [usage]
    compute_s = usage.compute_s / n
    if usage.input_tokens is None and usage.output_tokens is None:
        return [Usage(compute_s=compute_s)] * n
    return [
        Usage(
            compute_s=compute_s,
            input_tokens=_part(usage.input_tokens, n, i),
            output_tokens=_part(usage.output_tokens, n, i),
        )
        for i in range(n)
    ]


def _part(tokens: int | None, n: int, i: int) -> int | None:
    if tokens is None:
        return None
    whole, left = divmod(tokens, n)
    return whole + (1 if i < left else 0)


_Waiter = tuple[str, "asyncio.Future[BatchAnswer]"]
_ROUNDING = 1e-4


def _fail(waiters: Sequence[_Waiter], exc: BaseException) -> None:
    for _, future in waiters:
        if not future.done():
            future.set_exception(exc)


def _rows(predictions: object, n: int) -> list[tuple[str, float]]:
    """One (label, confidence) per input, or :class:`SpecialistError` saying what is wrong."""
    if not isinstance(predictions, Predictions):
        raise SpecialistError(
            f"the specialist returned {type(predictions).__name__}, not Predictions"
        )
    labels, confidences = predictions.labels, predictions.confidences
    try:
        counts = (len(labels), len(confidences))
    except TypeError:
        raise SpecialistError(
            "the specialist returned labels or confidences that are not rows"
        ) from None
    if counts != (n, n):
        raise SpecialistError(
            f"the specialist returned {counts[0]} labels and {counts[1]} confidences for a "
            f"batch of {n} inputs"
        )
    rows = []
    for label, confidence in zip(labels, confidences, strict=True):
        try:
            value = float(confidence)
        except (TypeError, ValueError):
            value = math.nan
        # NaN fails both bounds; float32 rounding may pass 1 by a hair.
        if not isinstance(label, str) or not -_ROUNDING <= value <= 1.0 + _ROUNDING:
            raise SpecialistError(
                f"the specialist returned the row ({label!r}, {confidence!r}): not a label "
                "and a confidence in [0, 1]"
            )
        rows.append((label, min(max(value, 0.0), 1.0)))
    return rows


class MicroBatcher:
    """Collects texts submitted concurrently and predicts them in batches.

    Every submitted text is answered or failed, whatever the model does: a model that
    raises, returns rows that are not one label and one confidence per text, or takes
    longer than ``timeout_s`` on a batch fails that batch's requests
    (:class:`~niche.errors.SpecialistError`, :class:`~niche.errors.SpecialistTimeoutError`)
    and the next batch runs as usual; :meth:`aclose` fails the ones still waiting.
    """

    def __init__(
        self,
        predict: Callable[[Sequence[str]], Predictions],
        *,
        max_batch: int,
        max_wait_s: float,
        executor: Executor | None = None,
        timeout_s: float | None = None,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.predict = predict
        self.cpu_clock = cpu_clock
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.executor = executor
        self.timeout_s = timeout_s
        self._queue: asyncio.Queue[_Waiter] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self._last_batch = 0

    @property
    def queued(self) -> int:
        """Texts waiting for a batch (not counting the batch being predicted)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, text: str) -> BatchAnswer:
        """The prediction for ``text``; the model's exception if the batch failed."""
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="niche-microbatcher")
        future: asyncio.Future[BatchAnswer] = asyncio.get_running_loop().create_future()
        await self._queue.put((text, future))
        return await future

    async def _run(self) -> None:
        queue = self._queue
        if queue is None:  # pragma: no cover - submit creates it first
            return
        loop = asyncio.get_running_loop()
        batch: list[_Waiter] = []
        try:
            while True:
                batch = [await queue.get()]
                wait_s = self.max_wait_s if self._last_batch > 1 else 0.0
                deadline = loop.time() + wait_s
                while len(batch) < self.max_batch:
                    if not queue.empty():
                        batch.append(queue.get_nowait())
                        continue
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), remaining))
                    except TimeoutError:
                        break
                live = [(text, future) for text, future in batch if not future.done()]
                self._last_batch = len(live)
                if live:
                    await self._answer(live, loop)
                batch = []
        except asyncio.CancelledError:
            _fail(batch, SpecialistError("the specialist stopped serving (shutting down)"))
            raise

    async def _answer(self, live: list[_Waiter], loop: asyncio.AbstractEventLoop) -> None:
        """Predict ``live`` and resolve each of its futures; never raises (but cancellation)."""
        texts = [text for text, _ in live]
        n = len(live)
        try:
            predictions, cpu_s = await asyncio.wait_for(
                loop.run_in_executor(self.executor, self._timed, texts), self.timeout_s
            )
            rows = _rows(predictions, n)
            recorded = predictions.usage if isinstance(predictions.usage, Usage) else Usage()
            usage = Usage(
                compute_s=cpu_s,
                input_tokens=recorded.input_tokens,
                output_tokens=recorded.output_tokens,
            )
            parts = split_usage(usage, n)
        except TimeoutError:
            _fail(
                live,
                SpecialistTimeoutError(
                    f"the specialist did not answer a batch of {n} within {self.timeout_s:g} s "
                    "(NICHE_GATEWAY_SPECIALIST_TIMEOUT_S)"
                ),
            )
            return
        except Exception as exc:  # the model's failure goes to every waiting request
            if not isinstance(exc, SpecialistError):
                log.warning("specialist batch of %d failed: %s: %s", n, type(exc).__name__, exc)
            _fail(live, exc)
            return
        self.batches += 1
        for (_, future), (label, confidence), part in zip(live, rows, parts, strict=True):
            if not future.done():
                future.set_result(BatchAnswer(label, confidence, part, n))

    def _timed(self, texts: Sequence[str]) -> tuple[Predictions, float]:
        started = self.cpu_clock()
        predictions = self.predict(texts)
        return predictions, self.cpu_clock() - started

    async def aclose(self) -> None:
        """Stop the worker; every text still waiting fails with a :class:`SpecialistError`."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        queue = self._queue
        stopped = SpecialistError("the specialist stopped serving (shutting down)")
        while queue is not None and not queue.empty():
            _fail([queue.get_nowait()], stopped)
