"""Evidently's side of benchmarks/drift.py, run in Evidently's own virtualenv (pandas < 3).

    benchmarks/.venvs/evidently/bin/python benchmarks/drift_evidently.py DIR [--full-reports K]

DIR holds reference.npy (rows x 384), windows.npy (windows x rows x 384) and shifts.json (the
shift of each window). For every window it runs the two drift computations of Evidently's
presets, each exactly as the preset calls it:

- embedding drift: ``EmbeddingsDrift`` (the ``Report`` metric) runs the default
  ``model()`` method (a domain classifier, SGD, ROC AUC > 0.55; no bootstrap for a reference
  of 1,000 rows or more; deterministic: ``random_state=42``), then a t-SNE of both samples for
  its plot;
- data drift: ``DataDriftPreset`` tests every column with its default test, for these sizes
  the normed Wasserstein distance, drift above 0.1, and calls the dataset drifted when at
  least half of the columns are (``drift_share=0.5``).

On every window the computation alone is run and timed (the verdict); on the first K windows
of each shift the full ``Report.run`` is timed too (what a user runs: t-SNE, the per-column
metrics and widgets), and its value is checked against the computation's. Prints one JSON
object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--full-reports", type=int, default=2)
    args = parser.parse_args(argv)

    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests import wasserstein_stat_test
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model
    from evidently.metrics import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    reference = np.load(args.data / "reference.npy")
    windows = np.load(args.data / "windows.npy", mmap_mode="r")
    shifts = json.loads((args.data / "shifts.json").read_text())
    columns = [f"e{i}" for i in range(reference.shape[1])]
    definition = DataDefinition(numerical_columns=columns, embeddings={"embedding": columns})
    reference_frame = pd.DataFrame(reference, columns=columns)
    reference_dataset = Dataset.from_pandas(reference_frame, data_definition=definition)
    # The preset's own choice for > 1,000 reference rows of a numerical column.
    threshold = 0.1
    drift_share = 0.5

    embedding_rows: list[dict[str, Any]] = []
    data_rows: list[dict[str, Any]] = []
    reports_done: dict[str, int] = {}
    for i, shift in enumerate(shifts):
        current_frame = pd.DataFrame(np.asarray(windows[i]), columns=columns)

        start = time.perf_counter()
        # model() adds a target column to the frames it gets: give it copies.
        auc, drifted, _ = model(bootstrap=reference.shape[0] < 1000)(
            current_frame.copy(), reference_frame.copy()
        )
        embedding = {
            "shift": shift,
            "score": float(auc),
            "drift": bool(drifted),
            "method_s": time.perf_counter() - start,
        }

        start = time.perf_counter()
        column_drift = [
            bool(
                wasserstein_stat_test(
                    reference_frame[c], current_frame[c], "num", threshold
                ).drifted
            )
            for c in columns
        ]
        share = sum(column_drift) / len(columns)
        data = {
            "shift": shift,
            "drifted_share": share,
            "drift": share >= drift_share,
            "method_s": time.perf_counter() - start,
        }

        key = str(shift)
        if reports_done.get(key, 0) < args.full_reports:
            reports_done[key] = reports_done.get(key, 0) + 1
            current_dataset = Dataset.from_pandas(current_frame, data_definition=definition)
            start = time.perf_counter()
            snapshot = Report([EmbeddingsDrift(embeddings_name="embedding")]).run(
                current_data=current_dataset, reference_data=reference_dataset
            )
            embedding["report_s"] = time.perf_counter() - start
            embedding["report_score"] = float(snapshot.dict()["metrics"][0]["value"])
            start = time.perf_counter()
            snapshot = Report([DataDriftPreset()]).run(
                current_data=current_dataset, reference_data=reference_dataset
            )
            data["report_s"] = time.perf_counter() - start
            data["report_drifted_share"] = float(snapshot.dict()["metrics"][0]["value"]["share"])
        embedding_rows.append(embedding)
        data_rows.append(data)
        print(f"evidently window {i + 1}/{len(shifts)}", file=sys.stderr, flush=True)

    result = {
        "versions": {
            "evidently": metadata.version("evidently"),
            "pandas": metadata.version("pandas"),
            "numpy": metadata.version("numpy"),
            "scikit-learn": metadata.version("scikit-learn"),
            "python": sys.version.split()[0],
        },
        "embedding_drift": embedding_rows,
        "data_drift": data_rows,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
