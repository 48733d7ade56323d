"""What a specialist kind gets to load or fit with, instead of a positional encoder.

    >>> context = LoadContext(settings)                     # the encoder is built on first use
    >>> predictor = get_kind("text").load(directory, context)
    >>> context.encoder_for("all-MiniLM-L6-v2/onnx-int8").id   # a model trained on another
    'all-MiniLM-L6-v2/onnx-int8'
    >>> fitted = get_kind("text").fit(texts, labels, FitContext(encoder=encoder, seed=3))

A kind that needs no encoder (a remote endpoint, gradient boosting on tables) never builds
one: :attr:`LoadContext.encoder` is made from the settings only when first read, once, and
shared by every predictor loaded with the same context.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from niche.encoders.base import Encoder
from niche.errors import ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings

__all__ = ["FIT_METRICS", "Clock", "FitContext", "LoadContext"]

Clock = Callable[[], float]
"""A monotonic clock in seconds, e.g. :func:`time.perf_counter` (the default)."""

FIT_METRICS = ("accuracy", "macro_f1")
"""What a fit may tune for: a task's metric (:data:`niche.registry.tasks.METRICS`)."""


class LoadContext:
    """The settings and the shared encoder a kind may need to load a specialist.

    ``encoder`` is used as given, or built lazily with
    :func:`~niche.encoders.default_encoder` from ``settings`` (behind the embedding cache
    unless ``embedding_cache`` is false: latency and cost measurements want real work).
    ``clock`` is what predictors time their compute with, recorded as their usage.

        >>> LoadContext(Settings(encoder_precision="fp32"), embedding_cache=False).encoder.id
        'all-MiniLM-L6-v2/onnx-fp32'
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        encoder: Encoder | None = None,
        embedding_cache: bool = True,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.settings = Settings() if settings is None else settings
        self.embedding_cache = embedding_cache
        self.clock = clock
        self._encoder = encoder
        self._others: dict[str, Encoder] = {}
        self._lock = threading.Lock()

    @property
    def encoder(self) -> Encoder:
        """The shared encoder, built from the settings on first use."""
        with self._lock:
            if self._encoder is None:
                from niche.encoders import default_encoder

                self._encoder = default_encoder(self.settings, cache=self.embedding_cache)
            return self._encoder

    def encoder_for(self, encoder_id: str) -> Encoder:
        """The encoder whose id is ``encoder_id``: the shared one if it has that id, else one
        built from the settings with that precision (once per id, cached like the shared one),
        so a specialist trained on another precision loads after the default changed.

        An id niche cannot build gives the shared encoder: the kind then refuses it by name.

            >>> context.encoder_for("all-MiniLM-L6-v2/onnx-int8").id
            'all-MiniLM-L6-v2/onnx-int8'
        """
        shared = self.encoder
        if shared.id == encoder_id:
            return shared
        from niche.encoders.export import precision_of

        precision = precision_of(encoder_id)
        if precision is None:
            return shared
        with self._lock:
            other = self._others.get(encoder_id)
            if other is None:
                from niche.encoders import default_encoder

                other = default_encoder(
                    self.settings, cache=self.embedding_cache, precision=precision
                )
                self._others[encoder_id] = other
            return other

    @property
    def has_encoder(self) -> bool:
        """Whether the encoder was given or already built (reading it would not build it)."""
        return self._encoder is not None

    def __repr__(self) -> str:
        encoder = repr(self._encoder) if self._encoder is not None else "built on first use"
        return f"{type(self).__name__}(encoder={encoder})"


class FitContext(LoadContext):
    """A :class:`LoadContext` plus what fitting needs: seed, progress, the kind's options and
    the task's metric.

    ``seed`` defaults to ``NICHE_SEED``; ``options`` are checked against the kind's own
    (:meth:`~niche.specialists.SpecialistKind.resolve_options`): a misspelt one is refused.
    ``metric`` (one of :data:`FIT_METRICS`) is what a kind that tunes itself tunes for, e.g.
    the text kind's cross-validated head.

        >>> FitContext(encoder=encoder, seed=0, options={"c": 1.0}, metric="macro_f1")
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        encoder: Encoder | None = None,
        embedding_cache: bool = True,
        clock: Clock = time.perf_counter,
        seed: int | None = None,
        progress: Progress = NO_PROGRESS,
        options: Mapping[str, Any] | None = None,
        metric: str = "accuracy",
    ) -> None:
        if metric not in FIT_METRICS:
            raise ValidationError(
                f"metric must be one of {', '.join(FIT_METRICS)}, got {metric!r}", param="metric"
            )
        super().__init__(settings, encoder=encoder, embedding_cache=embedding_cache, clock=clock)
        self.seed: int = self.settings.get("NICHE_SEED") if seed is None else seed
        self.progress = progress
        self.options: Mapping[str, Any] = MappingProxyType(dict(options or {}))
        self.metric = metric
