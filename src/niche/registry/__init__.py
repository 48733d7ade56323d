"""Where tasks, dataset versions and model versions are kept, with aliases and gates.

    >>> from niche.registry import LocalStore, Registry
    >>> path = LocalStore(Settings()).save_dataset(version)
    >>> Registry().models.get("banking77", "champion").version
    3

The database half (:class:`Registry` and its records) loads SQLAlchemy on first access, so
importing this package stays cheap for code that only needs task specs or files.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from niche.registry.files import LocalStore

if TYPE_CHECKING:
    from niche.registry.store import (
        UNSET,
        AliasEventRecord,
        AuditEventRecord,
        DatasetRecord,
        EvaluationRecord,
        GateRecord,
        KeyRecord,
        ModelVersionRecord,
        PromotionRecord,
        Registry,
        StoredTrafficRecord,
        TaskRecord,
        TrafficRecord,
    )

__all__ = [
    "UNSET",
    "AliasEventRecord",
    "AuditEventRecord",
    "DatasetRecord",
    "EvaluationRecord",
    "GateRecord",
    "KeyRecord",
    "LocalStore",
    "ModelVersionRecord",
    "PromotionRecord",
    "Registry",
    "StoredTrafficRecord",
    "TaskRecord",
    "TrafficRecord",
]

_LAZY = {name: "niche.registry.store" for name in __all__ if name != "LocalStore"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
