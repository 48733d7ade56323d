"""How long-running library calls report progress without printing.

Library functions take a :class:`Progress` and call ``progress.task(description, total)``;
the CLI passes one backed by rich progress bars, tests and scripts pass :data:`NO_PROGRESS`.

    >>> with NO_PROGRESS.task("embedding", total=10) as advance:
    ...     advance(10)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

__all__ = ["NO_PROGRESS", "Advance", "NoProgress", "Progress"]

Advance = Callable[[int], None]


class Progress(Protocol):
    """A factory of progress tasks: ``with progress.task("…", total) as advance: advance(k)``."""

    def task(
        self, description: str, total: int | None = None
    ) -> AbstractContextManager[Advance]: ...


class NoProgress:
    """A :class:`Progress` that reports nothing."""

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        yield _ignore


def _ignore(_: int) -> None:
    return None


NO_PROGRESS = NoProgress()
