"""One store per concept, each reached through the :class:`~niche.registry.Registry` facade.

    >>> registry.tasks.get("banking77")          # TaskStore
    >>> registry.promotions.served()              # PromotionStore

The stores share one :class:`~niche.registry.stores.base.Database`; each method is one
transaction, and each change writes its audit event in that same transaction.
"""

from __future__ import annotations

from niche.registry.stores.audit import AuditStore
from niche.registry.stores.base import Database, Store, default_actor
from niche.registry.stores.datasets import DatasetStore
from niche.registry.stores.keys import KeyStore
from niche.registry.stores.leases import LeaseStore
from niche.registry.stores.models import ModelStore
from niche.registry.stores.monitoring import MonitoringStore
from niche.registry.stores.promotions import GUARDED_ALIASES, UNSET, PromotionStore
from niche.registry.stores.tasks import TaskStore
from niche.registry.stores.traffic import TrafficStore

__all__ = [
    "GUARDED_ALIASES",
    "UNSET",
    "AuditStore",
    "Database",
    "DatasetStore",
    "KeyStore",
    "LeaseStore",
    "ModelStore",
    "MonitoringStore",
    "PromotionStore",
    "Store",
    "TaskStore",
    "TrafficStore",
    "default_actor",
]
