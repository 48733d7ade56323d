"""Specialist kinds are plug-ins: found through entry points, loaded on first use.

A kind is a :class:`~niche.specialists.SpecialistKind` subclass declared under the
entry-point group ``niche.specialist_kinds``, named by the kind's name. niche declares its
own (``text``, ``zero-shot``) the same way in its ``pyproject.toml``; a third-party package
adds one with::

    [project.entry-points."niche.specialist_kinds"]
    tabular = "niche_tabular:TabularKind"

Nothing is looked up at import time: the first :func:`get_kind` reads the entry points and
imports only the plug-in it needs. Training, evaluation, the registry and serving all get a
kind from here (:func:`get_kind`) and load a stored model with :func:`load_predictor`.

    >>> get_kind("text").input_kind
    'text'
    >>> available_kinds()
    ['remote', 'text', 'text-finetuned', 'text-two-stage', 'zero-shot']
    >>> predictor = load_predictor("text", artifact_dir, LoadContext(settings))
"""

from __future__ import annotations

import threading
from importlib import metadata
from pathlib import Path

from niche.encoders.base import Encoder
from niche.errors import ArtifactError, ConfigurationError, ValidationError
from niche.specialists.base import Predictor, SpecialistKind
from niche.specialists.context import LoadContext

__all__ = ["ENTRY_POINT_GROUP", "available_kinds", "get_kind", "load_predictor"]

ENTRY_POINT_GROUP = "niche.specialist_kinds"

# niche's own kinds, as its pyproject.toml declares them. Used only for a name the installed
# metadata does not declare: an editable install made before the entry points were added, or
# a source tree on PYTHONPATH, still finds its own kinds (a test checks the declarations).
_BUILTIN = {
    "remote": "niche.specialists.remote:RemoteKind",
    "text": "niche.specialists.text:TextKind",
    "text-finetuned": "niche.specialists.finetuned:FineTunedKind",
    "text-two-stage": "niche.specialists.twostage:TwoStageKind",
    "zero-shot": "niche.specialists.zeroshot:ZeroShotKind",
}

_lock = threading.Lock()
_loaded: dict[str, SpecialistKind] = {}


def _declared() -> dict[str, list[metadata.EntryPoint]]:
    """Every entry point of the group, by name (a name may be declared twice: an error)."""
    found: dict[str, list[metadata.EntryPoint]] = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry_point.name, []).append(entry_point)
    for name, value in _BUILTIN.items():
        if name not in found:
            found[name] = [metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)]
    return found


def available_kinds() -> list[str]:
    """The names of every installed kind, sorted; none of them is imported.

    >>> available_kinds()
    ['remote', 'text', 'text-finetuned', 'text-two-stage', 'zero-shot']
    """
    return sorted(_declared())


def get_kind(name: str) -> SpecialistKind:
    """The kind called ``name``, its plug-in imported on first use.

    An unknown name is a :class:`~niche.errors.ValidationError` listing the known kinds; a
    plug-in that fails to import, or that is not a ``SpecialistKind`` of that name, is a
    :class:`~niche.errors.ConfigurationError` naming its entry point and distribution.

        >>> get_kind("zero-shot").name
        'zero-shot'
    """
    kind = _loaded.get(name)
    if kind is None:
        # Read the entry points again on a miss: a plug-in installed since the last look is
        # found without a restart, and known kinds never pay for the scan. The import runs
        # outside the lock, so a plug-in may itself call get_kind while it loads.
        loaded = _load(name, _declared())
        with _lock:
            kind = _loaded.setdefault(name, loaded)
    return kind


def _load(name: str, declared: dict[str, list[metadata.EntryPoint]]) -> SpecialistKind:
    entry_points = declared.get(name)
    if not entry_points:
        raise ValidationError(
            f"unknown specialist kind {name!r}; known kinds: {', '.join(sorted(declared))} "
            f"(plug-ins add kinds under the entry-point group {ENTRY_POINT_GROUP!r})",
            param="kind",
        )
    if len(entry_points) > 1:
        sources = "; ".join(f"{ep.value} ({_distribution(ep)})" for ep in entry_points)
        raise ConfigurationError(
            f"specialist kind {name!r} is declared more than once: {sources}; "
            "uninstall one of the plug-ins"
        )
    (entry_point,) = entry_points
    where = f"{entry_point.value} ({_distribution(entry_point)})"
    try:
        loaded = entry_point.load()
    except Exception as exc:  # a plug-in's import can fail in any way: say which one failed
        raise ConfigurationError(
            f"specialist kind {name!r} from {where} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    kind = loaded() if isinstance(loaded, type) and issubclass(loaded, SpecialistKind) else loaded
    if not isinstance(kind, SpecialistKind):
        raise ConfigurationError(
            f"specialist kind {name!r} from {where} is a {type(loaded).__name__}, "
            "not a SpecialistKind subclass or instance"
        )
    if kind.name != name:
        raise ConfigurationError(
            f"specialist kind {name!r} from {where} calls itself {kind.name!r}: "
            "the entry point must be named after the kind"
        )
    return kind


def _distribution(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    if dist is None:
        return "built in"
    return f"distribution {dist.metadata['Name']} {dist.version}"


def load_predictor(
    kind: str, directory: str | Path, context: LoadContext | Encoder | None = None
) -> Predictor:
    """The predictor of ``kind`` stored in ``directory``, loaded through its kind.

    ``context`` carries the settings and the encoder; an :class:`~niche.encoders.Encoder`
    is still accepted in its place (it becomes ``LoadContext(encoder=encoder)``). A kind no
    plug-in provides is an :class:`~niche.errors.ArtifactError`: the stored model is unusable.

        >>> load_predictor(record.kind, path, LoadContext(settings, embedding_cache=False))
    """
    if context is None:
        context = LoadContext()
    elif not isinstance(context, LoadContext):
        context = LoadContext(encoder=context)
    try:
        specialist_kind = get_kind(kind)
    except ValidationError as exc:
        raise ArtifactError(
            f"{directory}: no loader for model kind {kind!r} (known: "
            f"{', '.join(available_kinds())})",
            path=directory,
        ) from exc
    return specialist_kind.load(Path(directory), context)
