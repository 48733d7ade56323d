"""Which class loads a stored model of each kind (``ModelVersionRecord.kind``).

New kinds (tabular, LoRA) register here, so serving and evaluation load them unchanged.

    >>> predictor = load_predictor("text", artifact_dir, encoder)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from niche.encoders.base import Encoder
from niche.errors import ArtifactError
from niche.specialists.base import Predictor
from niche.specialists.text import TextSpecialist

__all__ = ["LOADERS", "load_predictor"]

LOADERS: dict[str, Callable[[Path, Encoder], Predictor]] = {
    TextSpecialist.kind: TextSpecialist.load,
}


def load_predictor(kind: str, directory: str | Path, encoder: Encoder) -> Predictor:
    """The predictor of ``kind`` stored in ``directory``."""
    loader = LOADERS.get(kind)
    if loader is None:
        raise ArtifactError(
            f"{directory}: no loader for model kind {kind!r} (known: {', '.join(sorted(LOADERS))})",
            path=directory,
        )
    return loader(Path(directory), encoder)
