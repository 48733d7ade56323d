"""Where tasks, dataset versions and model versions are kept, with aliases and gates.

    >>> from niche.registry import LocalStore, Registry
    >>> path = LocalStore(Settings()).save_dataset(version)
    >>> Registry().models.get("banking77", "champion").version
    3

The database half (:class:`Registry`, its stores) loads SQLAlchemy on first access, so
importing this package, or a record class from it, stays cheap for code that only needs task
specs, records or files.
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

# Records need no SQLAlchemy; the Registry (and UNSET, beside its stores) do.
_LAZY = {
    name: "niche.registry.records"
    for name in __all__
    if name not in ("LocalStore", "Registry", "UNSET")
}
_LAZY |= {"Registry": "niche.registry.store", "UNSET": "niche.registry.stores.promotions"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
