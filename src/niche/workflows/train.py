"""Train a specialist on a registered dataset version and register it as a model version.

>>> record = train_and_register("3f2a9c0d", task="banking77")
>>> record.task, record.version
('banking77', 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from niche.data import DatasetVersion
from niche.encoders import Encoder, default_encoder
from niche.errors import ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.workflows._context import resolve
from niche.workflows.data import open_dataset, save_dataset
from niche.workflows.evaluate import uncached_encoder
from niche.workflows.models import register_trained

if TYPE_CHECKING:
    from niche.registry import ModelVersionRecord, Registry, TaskRecord

__all__ = ["ensure_task_for", "task_name_for", "train_and_register"]


def task_name_for(name: str) -> str:
    """A valid task name from a dataset or file name.

    >>> task_name_for("clinc150/banking")
    'clinc150.banking'
    """
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "." for c in name.lower()).strip(".-_")
    return cleaned[:64] or "task"


def ensure_task_for(
    version: DatasetVersion,
    name: str,
    registry: Registry,
    *,
    label_descriptions: dict[str, str] | None = None,
    domain: str | None = None,
) -> TaskRecord:
    """The task ``name``, created from the dataset's label set (and ``domain`` as its domain
    tag) when it does not exist yet; an existing task is returned as it is.

    >>> ensure_task_for(version, "tickets", registry, domain="support").spec.domain
    'support'
    """
    from niche.registry.tasks import TaskSpec

    return registry.tasks.ensure(
        TaskSpec(
            name=name,
            labels=version.label_set,
            label_descriptions=dict(label_descriptions or {}),
            domain=domain,
        )
    )


def train_and_register(
    dataset: DatasetVersion | str,
    settings: Settings | None = None,
    *,
    task: str | None = None,
    kind: str = "text",
    encoder: Encoder | None = None,
    seed: int | None = None,
    fraction: float = 1.0,
    registry: Registry | None = None,
    label_descriptions: dict[str, str] | None = None,
    domain: str | None = None,
    options: Mapping[str, Any] | None = None,
    progress: Progress = NO_PROGRESS,
) -> ModelVersionRecord:
    """Train a specialist of ``kind`` on ``dataset`` and register it as ``task``'s next version.

    ``dataset`` is a dataset version or the fingerprint (or a unique prefix) of a registered
    one. ``kind`` names an installed specialist kind (``niche.specialists.available_kinds()``;
    an unknown one is refused listing them).
    ``task`` defaults to a name derived from the dataset's source, created when missing (with
    ``label_descriptions`` for its zero-shot general model, and ``domain`` as its domain tag).
    ``fraction`` trains on that share of each label's rows (a deliberately weak baseline).

    ``options`` are the kind's fit options (e.g. ``{"epochs": 2}`` for ``text-finetuned``,
    ``{"c": 10.0}`` for a fixed text head), checked against the kind before anything is
    fitted. A kind that tunes itself tunes for the task's metric (an existing task's;
    accuracy for one created here). A head fitted before on the same data is reused
    (``NICHE_HEAD_CACHE``).

    The specialist is fitted before anything is written, so data it refuses leaves no dataset
    version or task behind. A model version of ``task`` already trained from the same dataset
    version is said on ``progress``, and so is training that gives an existing version's very
    bytes (that version is returned; nothing new is registered).

    >>> train_and_register(version, task="tickets", fraction=0.05).version
    2
    """
    from niche.specialists import FitContext, get_kind
    from niche.training import train

    if not 0 < fraction <= 1:
        raise ValidationError(f"fraction must be in (0, 1], got {fraction}", param="fraction")
    # An unknown kind, or an option it does not take, is refused before any work.
    get_kind(kind).resolve_options(options or {})
    settings, registry = resolve(settings, registry)
    version = (
        open_dataset(dataset, settings, registry=registry) if isinstance(dataset, str) else dataset
    )
    seed = settings.get("NICHE_SEED") if seed is None else seed
    task = task or task_name_for(_source_name(version.source))
    earlier = _trained_from(version, task, kind, registry, progress)
    encoder = encoder or default_encoder(settings)
    load = getattr(uncached_encoder(encoder), "load", None)
    if callable(load):
        with progress.task("loading the encoder (exported to ONNX on first use)", total=None):
            load()
    context = FitContext(
        settings,
        encoder=encoder,
        seed=seed,
        progress=progress,
        options=options,
        metric=_task_metric(task, registry),
    )
    trained = train(version, kind, context, fraction=fraction)
    if not isinstance(dataset, str):
        save_dataset(version, settings, registry=registry)
    ensure_task_for(version, task, registry, label_descriptions=label_descriptions, domain=domain)
    record = register_trained(trained, task, settings, registry=registry)
    if record.version in earlier:
        _say(
            progress,
            f"{task} v{record.version} already exists: this data gives the same model, "
            "byte for byte; nothing new registered",
        )
    return record


def _task_metric(task: str, registry: Registry) -> str:
    """The metric of ``task`` when it exists; the default (accuracy) for one created here."""
    from niche.errors import TaskNotFoundError

    try:
        return registry.tasks.get(task).spec.metric
    except TaskNotFoundError:
        return "accuracy"


def _trained_from(
    version: DatasetVersion, task: str, kind: str, registry: Registry, progress: Progress
) -> list[int]:
    """The versions of ``task`` of this kind already trained on ``version``, said if any."""
    from niche.errors import TaskNotFoundError

    try:
        earlier = [
            record.version
            for record in registry.models.all(task)
            if record.dataset_fingerprint == version.fingerprint and record.kind == kind
        ]
    except TaskNotFoundError:
        return []
    if earlier:
        versions = ", ".join(f"v{v}" for v in earlier)
        _say(
            progress,
            f"{task} {versions} already trained ({kind}) from dataset version "
            f"{version.fingerprint[:16]}; training again",
        )
    return earlier


def _say(progress: Progress, note: str) -> None:
    # A finished step is how a workflow tells the CLI something without printing itself.
    with progress.task(note, total=None):
        pass


def _source_name(source: str) -> str:
    if source.startswith("catalog:"):
        return source.removeprefix("catalog:")
    if source.startswith("traffic:"):  # distilled: traffic:TASK#ids=1-500 is TASK's
        return source.removeprefix("traffic:").split("#", 1)[0]
    return Path(source).stem
