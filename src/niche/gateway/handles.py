"""The seam between the cascade and whatever runs a model version.

The cascade policy only ever talks to a :class:`SpecialistHandle`: the local micro-batcher
below today, a Ray Serve deployment handle later (its ``predict`` awaiting
``handle.predict.remote(inputs)``), without the policy changing.

    >>> handle = BatchedHandle("champion", 3, digest, predictor, batcher)
    >>> (answer,) = await handle.predict(["where is my card?"])
    >>> answer.label, answer.confidence, answer.compute_s, answer.batch_size
    ('card_arrival', 0.93, 0.0004, 12)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from niche.gateway.batching import BatchAnswer, MicroBatcher

if TYPE_CHECKING:
    from niche.specialists.base import Predictor

__all__ = ["BatchAnswer", "BatchedHandle", "SpecialistHandle"]


@runtime_checkable
class SpecialistHandle(Protocol):
    """One model version serving under one alias of a task.

    ``predict`` answers every input in order with its label, confidence and usage (its
    share of compute seconds, and the size of the batch it ran in); it raises the model's
    error when the model failed.
    """

    @property
    def alias(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def digest(self) -> str:
        """The artifact digest: a refresh keeps a handle whose digest did not change."""
        ...

    @property
    def label_set(self) -> list[str]: ...

    async def predict(self, inputs: Sequence[str]) -> list[BatchAnswer]: ...

    async def aclose(self) -> None: ...


@dataclass
class BatchedHandle:
    """A predictor loaded in this process, behind its :class:`MicroBatcher`."""

    alias: str
    version: int
    digest: str
    predictor: Predictor
    batcher: MicroBatcher

    @property
    def label_set(self) -> list[str]:
        return list(self.predictor.label_set)

    async def predict(self, inputs: Sequence[str]) -> list[BatchAnswer]:
        if len(inputs) == 1:  # the chat route's case: no gather for one input
            return [await self.batcher.submit(inputs[0])]
        return list(await asyncio.gather(*(self.batcher.submit(text) for text in inputs)))

    async def aclose(self) -> None:
        await self.batcher.aclose()
