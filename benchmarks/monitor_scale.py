"""How long ``niche monitor`` takes on one task with 1,000,000 stored traffic records.

    .venv/bin/python benchmarks/monitor_scale.py [--records 1000000]    # prints JSON

A SQLite registry in a temporary directory: a champion trained on 10 BANKING77 intents (60
training rows each), then ``records`` traffic records of that task (BANKING77 test texts of
those intents, answered by the champion, cascaded below its threshold, a share shadowed),
written through ``registry.traffic.record`` in batches of 50,000 — the fill is timed apart.
Then the seconds of ``monitor(task)``: its first call (``monitor_cold_s``: it builds the
reference, the training rows' embeddings); the median of three calls each on a window of
``monitoring.window`` records never checked before (``monitor_s``: their texts are encoded —
what a loop on a busy task pays each check); the median of three on the same window again
(``monitor_same_window_s``: its embeddings are kept); and the window query alone (the latest
``monitoring.window`` records, and the champion's).
``benchmarks/drift.py`` calls :func:`measure`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
TASK = "banking10"
INTENTS = (
    "card_arrival",
    "exchange_rate",
    "pin_blocked",
    "top_up_failed",
    "lost_or_stolen_card",
    "declined_transfer",
    "cash_withdrawal_charge",
    "change_pin",
    "activate_my_card",
    "balance_not_updated_after_bank_transfer",
)
TRAIN_PER_INTENT = 60
BATCH = 50_000
ROUNDS = 3
START = datetime(2026, 3, 1, tzinfo=UTC)


def _datasets_dir() -> Path:
    from niche.settings import Settings

    configured = Settings().datasets_dir
    return configured if configured is not None else ROOT.parent / "shared" / "datasets"


def _read(split: str, per_intent: int | None) -> tuple[list[str], list[str]]:
    taken = dict.fromkeys(INTENTS, 0)
    texts, labels = [], []
    path = _datasets_dir() / "banking77" / f"{split}.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = row["category"]
            if label in taken and (per_intent is None or taken[label] < per_intent):
                taken[label] += 1
                texts.append(row["text"])
                labels.append(label)
    return texts, labels


def _records(version: int, texts: list[str], predictions: Any, start: int, stop: int) -> list[Any]:
    """Traffic records ``start`` to ``stop`` of the champion (texts cycled, one per 10 ms)."""
    from niche.registry import TrafficRecord

    batch = []
    for i in range(start, stop):
        j = i % len(texts)
        confidence = float(predictions.confidences[j])
        cascaded = confidence < 0.5
        sampled = not cascaded and i % 20 == 0
        label = predictions.labels[j]
        batch.append(
            TrafficRecord(
                task=TASK,
                model=TASK,
                route="general" if cascaded else "specialist",
                input=texts[j],
                text=texts[j],
                specialist_label=label,
                specialist_confidence=confidence,
                model_version=version,
                alias="champion",
                general_label=label if cascaded or sampled else None,
                shadow=sampled,
                sampled=sampled,
                latency_ms=5.0 + (i % 11),
                cost_usd=0.0004 if cascaded or sampled else 0.000001,
                status=200,
                at=START + timedelta(days=1, milliseconds=10 * i),
            )
        )
    return batch


def _fill(registry: Any, version: int, texts: list[str], predictions: Any, records: int) -> float:
    """Store ``records`` traffic records of the champion; return the seconds it took."""
    started = time.perf_counter()
    for start in range(0, records, BATCH):
        stop = min(records, start + BATCH)
        registry.traffic.record(_records(version, texts, predictions, start, stop))
    return time.perf_counter() - started


def measure(records: int = 1_000_000, *, cache_dir: Path | None = None) -> dict[str, Any]:
    """Seconds of ``monitor`` on one task with ``records`` stored records (see the module).

    >>> measure(100_000)["monitor_s"]
    0.41
    """
    from niche.data import Rows, curate
    from niche.encoders import default_encoder
    from niche.registry import Registry
    from niche.registry.tasks import MonitoringSpec, TaskSpec
    from niche.settings import Settings
    from niche.workflows import load_specialist, monitor, train_and_register

    with tempfile.TemporaryDirectory(prefix="niche-monitor-scale-") as tmp:
        home = Path(tmp)
        cache = cache_dir or Settings().cache_dir.resolve()
        settings = Settings(home=str(home), cache_dir=str(cache))
        registry = Registry(f"sqlite:///{home / 'niche.db'}", settings=settings)
        try:
            encoder = default_encoder(settings, cache=False)
            texts, labels = _read("train", TRAIN_PER_INTENT)
            version = curate(Rows(texts=texts, labels=labels, source="banking77 slice"), seed=0)
            spec = TaskSpec(name=TASK, labels=sorted(INTENTS), monitoring=MonitoringSpec())
            registry.tasks.create(spec)
            registry.datasets.register(version)
            model = train_and_register(
                version, settings, task=TASK, encoder=encoder, registry=registry
            )
            registry.promotions.move(TASK, "champion", model.version, reason="benchmark")
            traffic, _ = _read("test", None)
            predictions = load_specialist(model, settings, encoder=encoder).predict(traffic)
            fill_s = _fill(registry, model.version, traffic, predictions, records)

            now = START + timedelta(days=2)
            window = spec.monitoring.window
            stored = records

            def check() -> float:
                started = time.perf_counter()
                monitor(TASK, settings, registry=registry, encoder=encoder, now=now, store=False)
                return time.perf_counter() - started

            def new_window() -> float:
                # A whole window of records not checked before: encoded, as in a busy loop.
                nonlocal stored
                batch = _records(model.version, traffic, predictions, stored, stored + window)
                registry.traffic.record(batch)
                stored += window
                return check()

            cold_s = check()
            fresh = [new_window() for _ in range(ROUNDS)]
            same = [check() for _ in range(ROUNDS)]

            def query(**options: Any) -> float:
                started = time.perf_counter()
                rows = registry.traffic.window(TASK, limit=window, newest=True, **options)
                elapsed = time.perf_counter() - started
                if len(rows) != window:
                    raise RuntimeError(f"the window query read {len(rows)} records")
                return elapsed

            window_s = statistics.median(query() for _ in range(5))
            champion_s = statistics.median(query(model_version=model.version) for _ in range(5))
            return {
                "records": records,
                "backend": "sqlite",
                "window": window,
                "fill_s": round(fill_s, 2),
                "fill_records_per_s": round(records / fill_s),
                "monitor_cold_s": round(cold_s, 3),
                "monitor_s": round(statistics.median(fresh), 3),
                "monitor_rounds_s": [round(s, 3) for s in fresh],
                "monitor_same_window_s": round(statistics.median(same), 3),
                "window_query_s": round(window_s, 4),
                "champion_window_query_s": round(champion_s, 4),
                "reference_rows": len(version.splits["train"]),
                "encoder": encoder.id,
            }
        finally:
            registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.records), indent=2))


if __name__ == "__main__":
    main()
