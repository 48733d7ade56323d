"""Where a workflow gets its settings and its registry when the caller passes none.

Every workflow takes ``settings`` and a ``registry`` keyword; this is the one place that fills
them in, so tests and the loop inject their own while the CLI passes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from niche.settings import Settings

if TYPE_CHECKING:
    from niche.registry import Registry

__all__ = ["resolve"]


def resolve(settings: Settings | None, registry: Registry | None) -> tuple[Settings, Registry]:
    """``settings`` (default: from the environment) and ``registry`` (default: built from them).

    >>> settings, registry = resolve(None, None)
    """
    from niche.registry import Registry

    settings = settings or Settings()
    return settings, registry or Registry(settings=settings)
