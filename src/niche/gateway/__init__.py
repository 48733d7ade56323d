"""The gateway: the portfolio behind one OpenAI-compatible endpoint (``niche serve``).

    >>> from niche.gateway import Gateway
    >>> app = Gateway()          # an ASGI app; uvicorn runs it

Importing this package loads nothing heavy; the app module loads on first access.

Its rooms: ``app`` (the composition root), ``asgi`` and ``routing`` (request, send, relay;
the route table and the dispatcher), ``routes/`` (``openai``, ``native``, ``feedback``, ``admin``),
``policy`` (the cascade, no HTTP), ``handles`` (the ``SpecialistHandle`` seam and its
micro-batched implementation), ``general`` (the general-model client), ``portfolio``,
``auth``, ``traffic`` and ``capture``, ``metrics``, ``protocol`` (the OpenAI wire format).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from niche.gateway.app import Gateway, create_app
    from niche.gateway.config import GatewayConfig
    from niche.gateway.server import serve

__all__ = ["Gateway", "GatewayConfig", "create_app", "serve"]

_LAZY = {
    "Gateway": "niche.gateway.app",
    "create_app": "niche.gateway.app",
    "GatewayConfig": "niche.gateway.config",
    "serve": "niche.gateway.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
