"""Rebuild a saved predictor from its spec, in this process or in a fresh one.

The spec is what a worker in another process gets (a Ray task, a second gateway): the kind's
name, the artifact directory and the settings — never the weights. :func:`main` reads a
pickled :class:`RebuildSpec` on stdin and writes the predictions as JSON on stdout:

    $ python -c "from niche.testing._rebuild import main; main()" < spec.pickle
    {"labels": ["spam", "ham"], "confidences": [0.98, 0.91]}
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from niche.settings import Settings
from niche.specialists import LoadContext, Predictions, get_kind

__all__ = ["RebuildError", "RebuildSpec", "main"]


class RebuildError(Exception):
    """The predictor could not be rebuilt from its spec; the message says why."""


@dataclass(frozen=True)
class RebuildSpec:
    """How to rebuild a saved predictor elsewhere, and the inputs to predict there."""

    kind: str
    directory: str
    settings: Settings
    embedding_cache: bool = True
    inputs: list[Any] = field(default_factory=list)

    def predict(self) -> Predictions:
        """Load through the kind with a fresh context built from the settings, and predict."""
        context = LoadContext(self.settings, embedding_cache=self.embedding_cache)
        predictor = get_kind(self.kind).load(Path(self.directory), context)
        return predictor.predict(self.inputs)

    def predict_elsewhere(
        self, mode: Literal["subprocess", "pickle"], *, timeout_s: float = 300.0
    ) -> Predictions:
        """:meth:`predict` after a pickle round trip of this spec: in a fresh Python process
        (``"subprocess"``, with this process's ``sys.path``), or in this one (``"pickle"``).

        The subprocess's predictions come back as labels and confidences only.
        """
        try:
            blob = pickle.dumps(self)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise RebuildError(f"its rebuild spec does not pickle: {exc}") from exc
        if mode == "pickle":
            rebuilt = pickle.loads(blob)
            return rebuilt.predict() if isinstance(rebuilt, RebuildSpec) else _unexpected(rebuilt)
        # The child sees this process's import path, so the same plug-ins are installed there.
        path = os.pathsep.join(entry for entry in sys.path if entry)
        try:
            result = subprocess.run(
                [sys.executable, "-c", "from niche.testing._rebuild import main; main()"],
                input=blob,
                capture_output=True,
                timeout=timeout_s,
                env={**os.environ, "PYTHONPATH": path},
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RebuildError(f"a fresh process did not rebuild it within {timeout_s} s") from exc
        if result.returncode != 0:
            stderr = result.stderr.decode("utf-8", "replace").strip()
            raise RebuildError(
                f"a fresh process could not rebuild it (exit {result.returncode}): {stderr[-2000:]}"
            )
        data = json.loads(result.stdout)
        return Predictions(labels=data["labels"], confidences=np.asarray(data["confidences"]))


def _unexpected(value: object) -> Predictions:
    raise RebuildError(f"the spec came back from pickle as {type(value).__name__}")


def main() -> None:
    """Read a pickled spec on stdin; print its predictions as JSON."""
    spec = pickle.loads(sys.stdin.buffer.read())
    if not isinstance(spec, RebuildSpec):
        raise SystemExit(f"expected a pickled RebuildSpec on stdin, got {type(spec).__name__}")
    predictions = spec.predict()
    json.dump(
        {
            "labels": list(predictions.labels),
            "confidences": [float(c) for c in predictions.confidences],
        },
        sys.stdout,
    )
