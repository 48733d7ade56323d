"""What the loop's tests share: a task with no specialist and its captured traffic, each
request answered by the general model with its true label (the teacher)."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

from niche.registry import Registry, TrafficRecord
from niche.registry.tasks import TaskSpec
from tests.conftest import FOUR_INTENTS

TASK = "intents"
_REQUEST_IDS = itertools.count(1)


def banking_rows(datasets_dir: Path, per_label: int = 60) -> list[tuple[str, str]]:
    """``per_label`` BANKING77 training texts of each of :data:`FOUR_INTENTS`, interleaved."""
    by_label: dict[str, list[str]] = {label: [] for label in FOUR_INTENTS}
    with open(datasets_dir / "banking77" / "train.csv", newline="", encoding="utf-8") as src:
        for row in csv.DictReader(src):
            texts = by_label.get(row["category"])
            if texts is not None and len(texts) < per_label:
                texts.append(row["text"])
    return [(by_label[label][i], label) for i in range(per_label) for label in FOUR_INTENTS]


def create_task(registry: Registry, **loop: Any) -> None:
    """The task, with a small ``loop.min_rows``, no cooldown, and ``loop`` changes."""
    policy = {"min_rows": 80, "cooldown_s": 0, "max_retrains_per_day": 10} | loop
    registry.tasks.create(TaskSpec(name=TASK, labels=list(FOUR_INTENTS), loop=policy))


def capture(registry: Registry, rows: list[tuple[str, str]]) -> None:
    """Requests of a task with no specialist: the general model answered each with its label."""
    registry.traffic.record(
        [
            TrafficRecord(
                task=TASK,
                model=TASK,
                route="general",
                input=[{"role": "user", "content": text}],
                text=text,
                general_answer=label,
                general_label=label,
                latency_ms=120.0,
                status=200,
                request_id=f"req-{next(_REQUEST_IDS)}",
            )
            for text, label in rows
        ]
    )
