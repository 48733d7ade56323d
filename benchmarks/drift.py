"""Drift benchmark: niche's drift checks against Evidently's, on the same BANKING77 windows.

    .venv/bin/python benchmarks/drift.py            # or: make bench  (~25 min on 1 core)
    .venv/bin/python benchmarks/drift.py --quick    # 4 windows per shift, 2 seeds; writes nothing

Setup (seed 0). Ten of BANKING77's 77 intents are held back at random; the rows (train and
test splits together) of the other 67 are shuffled into a reference of 2,000 texts, a pool of
3,000 texts the windows draw from, and the rest, whose train-split rows train the specialist:
logistic regression (C=10) on frozen embeddings. A window is 500 texts; its shift is the share
drawn from the held-back intents: 0, 0.05, 0.10 or 0.25, 20 windows each, drawn without
replacement within a window. Every text is embedded once by niche's default encoder
(all-MiniLM-L6-v2, ONNX int8) and the specialist's top-class confidences computed once; both
are timed apart from the checks (the specialist computes them to answer anyway).

Systems, all on the same windows in this one run:

- niche's signals (niche.monitoring, alpha 0.01 each, the task spec's default):
  ``input_drift`` (nearest-neighbour novelty, one-sided log-rank test against the
  reference's leave-one-out distances), ``input_drift_projection`` (KS on 5 principal
  components, Bonferroni), ``confidence_drift`` (the same rank test on the top-class
  confidence, towards lower), ``prediction_drift`` (chi-square on the predicted
  label mix; the reference's labels are the specialist's predictions on it), and two combined
  verdicts: any of (input, confidence) and any of all four, each Bonferroni-corrected to a
  family-wise alpha of 0.01. The reference is prepared once (timed apart: ``reference_s``).
- baselines measured here before, in niche's environment: KS on each of the 384 dimensions
  (Bonferroni), and MMD (Gaussian kernel, median heuristic) with 200 permutations;
- Evidently 0.7.23 in its own virtualenv (benchmarks/.venvs/evidently, created when
  missing; see benchmarks/drift_evidently.py): its embedding-drift and data-drift presets.

Per system: detection rate per shift (at shift 0: the false-alarm rate) and seconds per check
(median). Then niche alone over ten seeds (other held-back intents, other splits), because a
single split's rates depend on which intents were held back. If benchmarks/monitor_scale.py
exists, its ``measure(records=1_000_000)`` is stored under ``monitor_1m``. Numerical
libraries run on one thread (other work shares this machine). Writes
benchmarks/results/drift.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

# One thread for the numerical libraries and the encoder: the machine is shared, and every
# system gets the same single core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NICHE_ENCODER_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from niche.monitoring import (
    InputDriftReference,
    Signal,
    confidence_drift,
    prediction_drift,
)
from niche.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "drift.json"
EVIDENTLY_VENV = ROOT / "benchmarks" / ".venvs" / "evidently"
EVIDENTLY_REQUIREMENTS = ("evidently==0.7.23", "pandas<3")

REFERENCE_ROWS = 2_000
POOL_ROWS = 3_000
WINDOW_ROWS = 500
HELD_BACK = 10
SHIFTS = (0.0, 0.05, 0.10, 0.25)
ALPHA = 0.01
SEED = 0
MMD_PERMUTATIONS = 200
SIGNALS = ("input_drift", "input_drift_projection", "confidence_drift", "prediction_drift")
COMBINED = {
    "any(input, confidence)": ("input_drift", "confidence_drift"),
    "any(all four)": SIGNALS,
}


# -- data -------------------------------------------------------------------------------------


def _datasets_dir() -> Path:
    configured = Settings().datasets_dir
    return configured if configured is not None else ROOT.parent / "shared" / "datasets"


def _read_banking77() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts, intents and whether each row is from the train split, both splits together."""
    texts: list[str] = []
    intents: list[str] = []
    train: list[bool] = []
    for split in ("train", "test"):
        path = _datasets_dir() / "banking77" / f"{split}.csv"
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                texts.append(row["text"])
                intents.append(row["category"])
                train.append(split == "train")
    return texts, np.array(intents), np.array(train)


class Split:
    """One seeded setup: held-back intents, reference, window pool, classifier rows."""

    def __init__(self, intents: np.ndarray, train: np.ndarray, seed: int) -> None:
        rng = np.random.default_rng(seed)
        names = sorted(set(intents.tolist()))
        self.held_back = sorted(rng.choice(names, HELD_BACK, replace=False).tolist())
        novel = np.isin(intents, self.held_back)
        known = np.flatnonzero(~novel)
        rng.shuffle(known)
        self.reference = known[:REFERENCE_ROWS]
        self.pool = known[REFERENCE_ROWS : REFERENCE_ROWS + POOL_ROWS]
        rest = known[REFERENCE_ROWS + POOL_ROWS :]
        self.classifier = rest[train[rest]]
        self.novel = np.flatnonzero(novel)
        self.rng = rng

    def windows(self, per_shift: int) -> list[tuple[float, np.ndarray]]:
        out = []
        for shift in SHIFTS:
            k = round(WINDOW_ROWS * shift)
            for _ in range(per_shift):
                rows = np.concatenate(
                    [
                        self.rng.choice(self.pool, WINDOW_ROWS - k, replace=False),
                        self.rng.choice(self.novel, k, replace=False),
                    ]
                )
                out.append((shift, rows))
        return out


# -- niche ------------------------------------------------------------------------------------


class Specialist:
    """The frozen-embedding logistic regression the confidence and label signals read."""

    def __init__(self, embeddings: np.ndarray, intents: np.ndarray, split: Split) -> None:
        from sklearn.linear_model import LogisticRegression

        start = time.perf_counter()
        self.model = LogisticRegression(C=10, max_iter=1000)
        self.model.fit(embeddings[split.classifier], intents[split.classifier])
        self.fit_s = time.perf_counter() - start
        probabilities = self.model.predict_proba(embeddings)
        self.confidence = probabilities.max(axis=1)
        self.label = self.model.classes_[probabilities.argmax(axis=1)]
        self.labels = [str(c) for c in self.model.classes_]


def _niche_run(
    embeddings: np.ndarray,
    specialist: Specialist,
    split: Split,
    windows: list[tuple[float, np.ndarray]],
) -> dict[str, Any]:
    start = time.perf_counter()
    reference = InputDriftReference().fit(embeddings[split.reference])
    reference_s = time.perf_counter() - start
    reference_confidence = specialist.confidence[split.reference]
    reference_labels = specialist.label[split.reference].tolist()

    checks: dict[str, Callable[[np.ndarray], Signal]] = {
        "input_drift": lambda rows: reference.input_drift(embeddings[rows], alpha=ALPHA),
        "input_drift_projection": lambda rows: reference.input_drift_projection(
            embeddings[rows], alpha=ALPHA
        ),
        "confidence_drift": lambda rows: confidence_drift(
            reference_confidence, specialist.confidence[rows], alpha=ALPHA
        ),
        "prediction_drift": lambda rows: prediction_drift(
            reference_labels,
            specialist.label[rows].tolist(),
            labels=specialist.labels,
            alpha=ALPHA,
        ),
    }
    per_window: list[dict[str, Any]] = []
    for shift, rows in windows:
        row: dict[str, Any] = {"shift": shift}
        for name, check in checks.items():
            start = time.perf_counter()
            signal = check(rows)
            row[name] = {"p": signal.p_value, "s": time.perf_counter() - start}
        for name, parts in COMBINED.items():
            p_min = min(row[part]["p"] for part in parts)
            row[name] = {
                "p": min(1.0, p_min * len(parts)),
                "s": sum(row[part]["s"] for part in parts),
            }
        per_window.append(row)
    names = [*SIGNALS, *COMBINED]
    return {
        "reference_s": reference_s,
        "signals": {name: _summary(per_window, name, ALPHA) for name in names},
    }


def _summary(rows: list[dict[str, Any]], name: str, alpha: float) -> dict[str, Any]:
    detection = {}
    for shift in SHIFTS:
        hits = [r[name]["p"] < alpha for r in rows if r["shift"] == shift]
        detection[str(shift)] = round(sum(hits) / len(hits), 4)
    seconds = [r[name]["s"] for r in rows]
    return {
        "detection": detection,
        "false_alarm_rate": detection[str(SHIFTS[0])],
        "seconds_per_check": round(statistics.median(seconds), 5),
    }


# -- baselines (niche's environment, not niche's API) -----------------------------------------


def _ks_all_dims(reference: np.ndarray, current: np.ndarray) -> float:
    from scipy import stats

    p = stats.ks_2samp(current, reference, axis=0).pvalue
    return min(1.0, float(np.min(p)) * reference.shape[1])


def _mmd_permutation(
    reference: np.ndarray, current: np.ndarray, permutations: int, seed: int
) -> float:
    """Gaussian-kernel MMD^2 (median heuristic) with a permutation p-value."""
    from scipy.spatial.distance import cdist

    pooled = np.concatenate([reference, current]).astype(np.float64)
    squared = cdist(pooled, pooled, "sqeuclidean")
    bandwidth = np.median(squared[np.triu_indices_from(squared, k=1)])
    kernel = np.exp(-squared / bandwidth)
    total, n = pooled.shape[0], current.shape[0]
    rng = np.random.default_rng(seed)
    labels = np.zeros((permutations + 1, total), dtype=bool)
    labels[0, total - n :] = True
    for b in range(1, permutations + 1):
        labels[b, rng.choice(total, n, replace=False)] = True
    # MMD^2 of a split = w' K w with w = +1/n on the window, -1/m on the reference.
    weights = np.where(labels, 1.0 / n, -1.0 / (total - n)).T
    values = np.einsum("ib,ib->b", weights, kernel @ weights)
    return float((1 + np.count_nonzero(values[1:] >= values[0])) / (permutations + 1))


def _baselines(
    embeddings: np.ndarray, split: Split, windows: list[tuple[float, np.ndarray]]
) -> dict[str, Any]:
    reference = embeddings[split.reference]
    rows: list[dict[str, Any]] = []
    for i, (shift, window) in enumerate(windows):
        row: dict[str, Any] = {"shift": shift}
        start = time.perf_counter()
        row["ks-384-bonferroni"] = {"p": _ks_all_dims(reference, embeddings[window])}
        row["ks-384-bonferroni"]["s"] = time.perf_counter() - start
        start = time.perf_counter()
        p = _mmd_permutation(reference, embeddings[window], MMD_PERMUTATIONS, seed=i)
        row["mmd-rbf-200-permutations"] = {"p": p, "s": time.perf_counter() - start}
        rows.append(row)
    return {
        name: _summary(rows, name, ALPHA)
        for name in ("ks-384-bonferroni", "mmd-rbf-200-permutations")
    }


# -- Evidently ----------------------------------------------------------------------------------


def _ensure_evidently() -> Path:
    python = EVIDENTLY_VENV / "bin" / "python"
    if python.exists() and _venv_version(python, "evidently") == "0.7.23":
        return python
    print(f"installing {' '.join(EVIDENTLY_REQUIREMENTS)} into {EVIDENTLY_VENV} …", flush=True)
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *EVIDENTLY_REQUIREMENTS], check=True
    )
    return python


def _venv_version(python: Path, package: str) -> str | None:
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


def _evidently(
    embeddings: np.ndarray,
    split: Split,
    windows: list[tuple[float, np.ndarray]],
    full_reports: int,
) -> dict[str, Any]:
    try:
        python = _ensure_evidently()
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"error": f"Evidently could not be installed: {exc}"}
    with tempfile.TemporaryDirectory(prefix="niche-drift-") as folder:
        data = Path(folder)
        np.save(data / "reference.npy", embeddings[split.reference])
        np.save(data / "windows.npy", np.stack([embeddings[rows] for _, rows in windows]))
        (data / "shifts.json").write_text(json.dumps([shift for shift, _ in windows]))
        done = subprocess.run(
            [
                str(python),
                str(ROOT / "benchmarks" / "drift_evidently.py"),
                str(data),
                "--full-reports",
                str(full_reports),
            ],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        return {"error": f"benchmarks/drift_evidently.py exited with {done.returncode}"}
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    systems: dict[str, Any] = {"versions": raw["versions"]}
    for key, name, score in (
        ("embedding_drift", "evidently-embedding-drift", "score"),
        ("data_drift", "evidently-data-drift-preset", "drifted_share"),
    ):
        rows = raw[key]
        detection = {}
        for shift in SHIFTS:
            hits = [r["drift"] for r in rows if r["shift"] == shift]
            detection[str(shift)] = round(sum(hits) / len(hits), 4)
        reports = [r for r in rows if "report_s" in r]
        systems[name] = {
            "detection": detection,
            "false_alarm_rate": detection[str(SHIFTS[0])],
            "seconds_per_check": round(statistics.median(r["method_s"] for r in rows), 4),
            "seconds_per_report": round(statistics.median(r["report_s"] for r in reports), 3)
            if reports
            else None,
            "reports_timed": len(reports),
            "report_matches_method": all(
                abs(r[f"report_{score}"] - r[score]) < 1e-9 for r in reports
            ),
            "median_score_by_shift": {
                str(shift): round(
                    statistics.median(r[score] for r in rows if r["shift"] == shift), 4
                )
                for shift in SHIFTS
            },
        }
    return systems


# -- the run ------------------------------------------------------------------------------------


def _encode(texts: list[str], split: Split, windows: list[tuple[float, np.ndarray]]) -> Any:
    from niche.encoders import default_encoder

    # No embedding cache: the encoder itself is timed.
    encoder = default_encoder(Settings(), cache=False)
    encoder.encode(texts[:64])
    start = time.perf_counter()
    embeddings = encoder.encode(texts)
    all_s = time.perf_counter() - start
    window_s = []
    for _, rows in windows[:3]:
        start = time.perf_counter()
        encoder.encode([texts[i] for i in rows])
        window_s.append(time.perf_counter() - start)
    return embeddings, {
        "encoder": encoder.id,
        "texts": len(texts),
        "texts_per_s": round(len(texts) / all_s, 1),
        "seconds_per_window": round(statistics.median(window_s), 3),
    }


def _machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                model = value
                break
    except OSError:
        pass
    versions = {}
    for name in ("niche", "numpy", "scipy", "scikit-learn", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads_per_system": 1,
        "python": platform.python_version(),
        "versions": versions,
        "niche_commit": commit or None,
    }


def _monitor_scale(quick: bool) -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import monitor_scale  # type: ignore[import-not-found]
    except ImportError:
        return {"pending": "benchmarks/monitor_scale.py is not there yet"}
    if quick:
        return {"skipped": "--quick"}
    return monitor_scale.measure(records=1_000_000)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 windows per shift, 2 seeds")
    parser.add_argument("--windows", type=int, default=None, help="windows per shift (20)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds for niche alone (10)")
    parser.add_argument(
        "--full-reports", type=int, default=None, help="full Evidently reports per shift (2)"
    )
    parser.add_argument("--no-evidently", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args(argv)
    per_shift = args.windows or (4 if args.quick else 20)
    seeds = args.seeds or (2 if args.quick else 10)
    full_reports = args.full_reports if args.full_reports is not None else (0 if args.quick else 2)
    out = args.out or (None if args.quick else RESULTS)

    texts, intents, train = _read_banking77()
    split = Split(intents, train, SEED)
    windows = split.windows(per_shift)
    embeddings, encoding = _encode(texts, split, windows)
    specialist = Specialist(embeddings, intents, split)
    start = time.perf_counter()
    specialist.model.predict_proba(embeddings[windows[0][1]])
    encoding["specialist_predict_s_per_window"] = round(time.perf_counter() - start, 4)
    print(f"encoded {len(texts)} texts; specialist fitted in {specialist.fit_s:.1f} s", flush=True)

    niche = _niche_run(embeddings, specialist, split, windows)
    print("niche done", flush=True)
    baselines = _baselines(embeddings, split, windows)
    print("baselines done", flush=True)
    evidently = (
        {"skipped": "--no-evidently"}
        if args.no_evidently
        else _evidently(embeddings, split, windows, full_reports)
    )

    robustness: dict[str, Any] = {"seeds": list(range(seeds)), "per_seed": {}}
    pooled: dict[str, list[dict[str, float]]] = {}
    for seed in range(seeds):
        other = Split(intents, train, seed)
        other_specialist = specialist if seed == SEED else Specialist(embeddings, intents, other)
        run = (
            niche
            if seed == SEED
            else _niche_run(embeddings, other_specialist, other, other.windows(per_shift))
        )
        robustness["per_seed"][str(seed)] = {
            "held_back": other.held_back,
            "detection": {name: s["detection"] for name, s in run["signals"].items()},
        }
        for name, summary in run["signals"].items():
            pooled.setdefault(name, []).append(summary["detection"])
        print(f"seed {seed} done", flush=True)
    robustness["mean_detection"] = {
        name: {
            str(shift): round(statistics.mean(d[str(shift)] for d in runs), 4) for shift in SHIFTS
        }
        for name, runs in pooled.items()
    }

    result: dict[str, Any] = {
        "benchmark": "drift",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "settings": {
            "dataset": "banking77 (train and test splits together, 13,083 rows)",
            "seed": SEED,
            "held_back_intents": split.held_back,
            "reference_rows": REFERENCE_ROWS,
            "window_pool_rows": POOL_ROWS,
            "window_rows": WINDOW_ROWS,
            "windows_per_shift": per_shift,
            "shifts": list(SHIFTS),
            "alpha": ALPHA,
            "specialist": "LogisticRegression(C=10) on frozen embeddings, "
            f"{len(split.classifier)} train-split rows of the 67 intents",
            "evidently_full_reports_per_shift": full_reports,
        },
        "encoding": encoding,
        "niche": niche,
        "baselines": baselines,
        "evidently": evidently,
        "niche_over_seeds": robustness,
        "monitor_1m": _monitor_scale(args.quick),
    }
    result["ratios"] = _ratios(result)
    _print_table(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return result


def _ratios(result: dict[str, Any]) -> dict[str, Any]:
    ours = result["niche"]["signals"]
    theirs = result["evidently"].get("evidently-embedding-drift")
    if not theirs:
        return {}
    ratios: dict[str, Any] = {
        "detection_at_0.1": {
            "niche_input_drift": ours["input_drift"]["detection"]["0.1"],
            "niche_any(input, confidence)": ours["any(input, confidence)"]["detection"]["0.1"],
            "evidently_embedding_drift": theirs["detection"]["0.1"],
        },
    }
    if theirs.get("seconds_per_report"):
        ratios["evidently_embedding_report_s_over_niche_input_drift_s"] = round(
            theirs["seconds_per_report"] / ours["input_drift"]["seconds_per_check"], 1
        )
    ratios["evidently_embedding_method_s_over_niche_input_drift_s"] = round(
        theirs["seconds_per_check"] / ours["input_drift"]["seconds_per_check"], 1
    )
    return ratios


def _print_table(result: dict[str, Any]) -> None:
    rows: list[tuple[str, dict[str, Any]]] = [
        *result["niche"]["signals"].items(),
        *result["baselines"].items(),
        *(
            (name, value)
            for name, value in result["evidently"].items()
            if isinstance(value, dict) and "detection" in value
        ),
    ]
    header = " ".join(f"{'shift ' + str(s):>10s}" for s in SHIFTS)
    print(f"\n{'system':34s} {header} {'s/check':>9s}")
    for name, summary in rows:
        cells = " ".join(f"{summary['detection'][str(s)]:10.2f}" for s in SHIFTS)
        print(f"{name:34s} {cells} {summary['seconds_per_check']:9.4f}")
    print(f"\nniche over {len(result['niche_over_seeds']['seeds'])} seeds (mean detection):")
    for name, detection in result["niche_over_seeds"]["mean_detection"].items():
        cells = " ".join(f"{detection[str(s)]:10.3f}" for s in SHIFTS)
        print(f"{name:34s} {cells}")


if __name__ == "__main__":
    main()
