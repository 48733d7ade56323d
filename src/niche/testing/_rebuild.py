"""Rebuild a saved predictor from its spec, in this process or in a fresh one.

The spec is what a worker in another process gets (a Ray task, a second gateway): the kind's
name, the artifact directory and the settings — never the weights. :func:`main` reads a
pickled :class:`RebuildSpec` on stdin and writes the predictions as JSON on stdout:

    $ python -c "from niche.testing._rebuild import main; main()" < spec.pickle
    {"labels": ["spam", "ham"], "confidences": [0.98, 0.91]}
"""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from niche.settings import Settings
from niche.specialists import LoadContext, Predictions, get_kind

__all__ = ["RebuildSpec", "main"]


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
