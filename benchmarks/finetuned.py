"""Frozen vs fine-tuned text kind: accuracy and wall time at a few rows per label.

    .venv/bin/python benchmarks/finetuned.py                       # the default grid
    .venv/bin/python benchmarks/finetuned.py --dataset clinc150/banking --per-label 8 16
    .venv/bin/python benchmarks/finetuned.py --per-label 8 --option epochs=2

For each dataset and each size, both kinds (``text``: frozen encoder + logistic regression;
``text-finetuned``: encoder and head trained end to end) fit on the same seeded sample of the
training split (``per_label`` rows of each label; 0 = all rows) and are scored on the whole
test split. ``fit_s`` is the wall time of the kind's ``fit`` (for the frozen kind: embedding
the rows on the uncached int8 encoder, loaded beforehand; for the fine-tuned kind: loading the
base model, the linear probe, the epochs, the ONNX export and quantisation, calibration);
``predict_s`` the wall time of predicting the test split. Results are appended, one row per
(dataset, size, kind), to ``benchmarks/results/finetuned.json`` as they finish.

:func:`compare` is the library entry point (benchmarks/training.py can call it, or
:func:`run_kind` for one kind at one size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "finetuned.json"
DATASETS = ("clinc150/banking", "banking77")
SIZES = (8, 16, 64, 0)
KINDS = ("text", "text-finetuned")


def sample_per_label(
    texts: Sequence[str], labels: Sequence[str], per_label: int, *, seed: int = 0
) -> tuple[list[str], list[str]]:
    """``per_label`` seeded rows of each label (all rows when 0), in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(texts))
    taken: dict[str, int] = {}
    keep: list[int] = []
    for i in order.tolist():
        label = labels[i]
        if per_label == 0 or taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            keep.append(i)
    return [texts[i] for i in keep], [labels[i] for i in keep]


def load_splits(dataset: str) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    """(train texts, labels), (test texts, labels) of a catalogue dataset (``banking77``,
    ``clinc150/banking``…), as niche's data loading reads them."""
    from niche.workflows import DataSpec, load_data

    loaded = load_data(DataSpec(dataset=dataset))
    if loaded.test is None:
        raise SystemExit(f"{dataset} has no test split")
    train, test = loaded.train, loaded.test
    return (list(train.texts), list(train.labels)), (list(test.texts), list(test.labels))


def run_kind(
    kind: str,
    train: tuple[list[str], list[str]],
    test: tuple[list[str], list[str]],
    *,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    encoder: Any = None,
) -> dict[str, Any]:
    """Fit ``kind`` on ``train`` and score it on ``test``: accuracy, macro-F1, wall times."""
    from sklearn.metrics import f1_score

    from niche.specialists import FitContext, get_kind

    context = FitContext(encoder=encoder, seed=seed, options=dict(options or {}))
    started = time.perf_counter()
    specialist = get_kind(kind).fit(train[0], train[1], context)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    predicted = specialist.predict(test[0]).labels
    predict_s = time.perf_counter() - started
    truth = np.asarray(test[1])
    row: dict[str, Any] = {
        "kind": kind,
        "train_rows": len(train[0]),
        "test_rows": len(test[0]),
        "accuracy": round(float(np.mean(np.asarray(predicted) == truth)), 4),
        "macro_f1": round(float(f1_score(truth, predicted, average="macro")), 4),
        "fit_s": round(fit_s, 2),
        "predict_s": round(predict_s, 2),
        "options": dict(options or {}),
    }
    config = getattr(specialist, "config_", None)
    if isinstance(config, dict) and "training" in config:
        training = config["training"]
        row["best_epoch"] = training["best_epoch"]
        row["epochs_run"] = len(training["history"]) - 1
        row["history"] = training["history"]
    return row


def compare(
    dataset: str,
    sizes: Sequence[int] = SIZES,
    *,
    kinds: Sequence[str] = KINDS,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    results: Path | None = RESULTS,
) -> list[dict[str, Any]]:
    """Every kind at every size (rows per label; 0 = all) on ``dataset``; each row is also
    appended to ``results`` (None: not written) as soon as it is measured."""
    from niche.encoders import OnnxEncoder

    encoder = OnnxEncoder(precision="int8").load()
    train, test = load_splits(dataset)
    rows = []
    for size in sizes:
        sample = sample_per_label(*train, size, seed=seed)
        for kind in kinds:
            row = run_kind(
                kind,
                sample,
                test,
                options=(options or {}).get(kind),
                seed=seed,
                encoder=encoder,
            )
            row = {"dataset": dataset, "per_label": size or "all", **row, **_machine()}
            rows.append(row)
            if results is not None:
                _append(results, row)
            print(
                f"{dataset:18} {size or 'all'!s:>4}/label {kind:15} acc {row['accuracy']:.4f} "
                f"fit {row['fit_s']:8.1f} s  predict {row['predict_s']:6.1f} s",
                flush=True,
            )
    return rows


def _machine() -> dict[str, Any]:
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def _append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.is_file() else []
    existing.append(row)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(existing, indent=2) + "\n")
    tmp.replace(path)


def _option(pair: str) -> tuple[str, Any]:
    key, _, raw = pair.partition("=")
    for parse in (int, float):
        try:
            return key, parse(raw)
        except ValueError:
            continue
    return key, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=list(DATASETS))
    parser.add_argument("--per-label", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--kind", nargs="+", default=list(KINDS))
    parser.add_argument("--option", action="append", default=[], help="text-finetuned KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    options = {"text-finetuned": dict(_option(pair) for pair in args.option)}
    for dataset in args.dataset:
        compare(dataset, args.per_label, kinds=args.kind, options=options, seed=args.seed)


if __name__ == "__main__":
    main()
