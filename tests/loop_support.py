"""What the loop's tests share: a task with no specialist and its captured traffic, each
request answered by the general model with its true label (the teacher)."""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path
from typing import Any

from niche.registry import Registry, TrafficRecord
from niche.registry.tasks import TaskSpec
from tests.conftest import FOUR_INTENTS

TASK = "intents"
_REQUEST_IDS = itertools.count(1)


def banking_rows(datasets_dir: Path, per_label: int = 60) -> list[tuple[str, str]]:
    """``per_label`` BANKING77 training texts of each of :data:`FOUR_INTENTS`, interleaved."""
    return read_rows(datasets_dir / "banking77" / "train.csv", FOUR_INTENTS, per_label)


def create_task(registry: Registry, labels: tuple[str, ...] = FOUR_INTENTS, **loop: Any) -> None:
    """The task over ``labels``, with a small ``loop.min_rows``, no cooldown, and ``loop``
    changes."""
    policy = {"min_rows": 80, "cooldown_s": 0, "max_retrains_per_day": 10} | loop
    registry.tasks.create(TaskSpec(name=TASK, labels=list(labels), loop=policy))


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


def read_rows(path: Path, labels: tuple[str, ...], per_label: int) -> list[tuple[str, str]]:
    """Up to ``per_label`` texts of each of ``labels`` from a BANKING77 CSV, interleaved."""
    by_label: dict[str, list[str]] = {label: [] for label in labels}
    with open(path, newline="", encoding="utf-8") as src:
        for row in csv.DictReader(src):
            texts = by_label.get(row["category"])
            if texts is not None and len(texts) < per_label:
                texts.append(row["text"])
    count = min(len(texts) for texts in by_label.values())
    return [(by_label[label][i], label) for i in range(count) for label in labels]


def serve(
    registry: Registry,
    predictor: Any,
    version: int,
    rows: list[tuple[str, str]],
    *,
    threshold: float = 0.5,
    sample_share: float = 0.1,
    seed: int = 0,
) -> dict[str, int]:
    """Capture ``rows`` as the gateway would with champion ``version`` (``predictor``) serving
    them: an answer under ``threshold`` cascades to the general model (which answers with the
    true label); a seeded random ``sample_share`` of the others is shadowed to it regardless.
    Returns how many requests took each route."""
    rng = random.Random(seed)
    texts = [text for text, _ in rows]
    predictions = predictor.predict(texts)
    records = []
    routes: dict[str, int] = {}
    for (text, gold), label, confidence in zip(
        rows, predictions.labels, predictions.confidences, strict=True
    ):
        cascaded = confidence < threshold
        sampled = not cascaded and rng.random() < sample_share
        route = "general" if cascaded else "specialist"
        routes[route] = routes.get(route, 0) + 1
        asked = cascaded or sampled
        records.append(
            TrafficRecord(
                task=TASK,
                model=TASK,
                route=route,
                input=[{"role": "user", "content": text}],
                text=text,
                specialist_label=label,
                specialist_confidence=float(confidence),
                model_version=version,
                alias="champion",
                general_answer=gold if asked else None,
                general_label=gold if asked else None,
                shadow=sampled,
                sampled=sampled,
                latency_ms=(300.0 if cascaded else 5.0),
                status=200,
                request_id=f"req-{next(_REQUEST_IDS)}",
            )
        )
    registry.traffic.record(records)
    return routes
