"""An injected clock for registry tests: exact, ordered timestamps without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class StepClock:
    """A clock that advances one second per reading, so timestamps are exact and ordered."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start - timedelta(seconds=1)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now
