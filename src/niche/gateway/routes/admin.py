"""Admin routes under ``/v1/admin/`` (an ``admin`` key, or local mode): tasks, aliases, keys.

Each parses the request, makes one registry call on a thread, and answers its record.

    GET    /v1/admin/tasks                          every task, with what is serving
    GET    /v1/admin/tasks/{task}                   one task and its aliases
    GET    /v1/admin/tasks/{task}/aliases           aliases and their history
    PUT    /v1/admin/tasks/{task}/aliases/{alias}   move an alias (champion: a passed gate,
                                                    or force with a reason)
    GET    /v1/admin/keys                           every key (never a secret)
    POST   /v1/admin/keys                           create a key (its secret shown once)
    DELETE /v1/admin/keys/{key}                     revoke a key (id or prefix)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from niche.errors import ConfigurationError, RequestError, ValidationError
from niche.gateway.asgi import Params, Request, Send, respond
from niche.gateway.protocol import only_fields
from niche.gateway.routing import Route

if TYPE_CHECKING:
    from niche.gateway.auth import Guard
    from niche.gateway.portfolio import Portfolio
    from niche.registry.store import AliasEventRecord, Registry, TaskRecord

__all__ = ["AdminRoutes", "move_alias"]

T = TypeVar("T")
_MISSING: Any = object()


async def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A registry call on a thread (the event loop never waits for the database)."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except ConfigurationError as exc:
        # The registry still raises ConfigurationError for the request's own values (an
        # alias name, a key reference); once it raises ValidationError this goes.
        raise ValidationError(str(exc)) from exc


async def move_alias(
    registry: Registry,
    task: str,
    alias: str,
    version: int,
    *,
    force: bool,
    reason: str,
    actor: str,
    expected_current: Any = _MISSING,
) -> AliasEventRecord:
    """Point ``alias`` of ``task`` at ``version``: the promotion rule, in one place.

    ``champion`` moves only to a version with a passed gate for it, or with ``force`` (and
    ``reason``, recorded). ``expected_current`` (a version, or None for "not set") makes the
    move a compare-and-set. To become ``registry.promotions.promote(...)``.
    """
    if alias == "champion" and not force:
        decisions = await _call(registry.gate_decisions, task)
        if not any(d.passed and d.version == version and d.alias == alias for d in decisions):
            raise RequestError(
                f"task {task} v{version} has no passed gate for champion; run "
                "`niche promote` (which gates it), or send force: true with a reason",
                param="version",
                code="gate_required",
            )
    kwargs: dict[str, Any] = {"actor": actor, "reason": reason}
    if expected_current is not _MISSING:
        kwargs["expected_current"] = expected_current
    return await _call(registry.set_alias, task, alias, version, **kwargs)


class AdminRoutes:
    """The handlers of the admin routes."""

    def __init__(self, *, guard: Guard, registry: Registry, portfolio: Portfolio) -> None:
        self.guard = guard
        self.registry = registry
        self.portfolio = portfolio

    def routes(self) -> list[Route]:
        return [
            Route("/v1/admin/tasks", self.tasks),
            Route("/v1/admin/tasks/{task}", self.task),
            Route("/v1/admin/tasks/{task}/aliases", self.aliases),
            Route("/v1/admin/tasks/{task}/aliases/{alias}", self.set_alias, ("PUT",)),
            Route("/v1/admin/keys", self.keys),
            Route("/v1/admin/keys", self.create_key, ("POST",)),
            Route("/v1/admin/keys/{key}", self.revoke_key, ("DELETE",)),
        ]

    def _task_view(self, record: TaskRecord) -> dict[str, Any]:
        state = self.portfolio.get(record.name)
        return {**record.to_dict(), "serving": state.served() if state else {}}

    async def tasks(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request, admin=True)
        records = await _call(self.registry.list_tasks)
        await respond(send, 200, orjson.dumps([self._task_view(r) for r in records]))

    async def task(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request, admin=True)
        record = await _call(self.registry.get_task, params["task"])
        aliases = await _call(self.registry.list_aliases, params["task"])
        await respond(send, 200, orjson.dumps({**self._task_view(record), "aliases": aliases}))

    async def aliases(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request, admin=True)
        name = params["task"]
        aliases = await _call(self.registry.list_aliases, name)
        history = await _call(self.registry.alias_history, name)
        payload = {"task": name, "aliases": aliases, "history": [e.to_dict() for e in history]}
        await respond(send, 200, orjson.dumps(payload))

    async def set_alias(self, request: Request, send: Send, params: Params) -> None:
        key = await self.guard.check(request, admin=True)
        data = await request.json()
        only_fields(data, {"version", "reason", "expected_current", "force"})
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RequestError("'version' must be a positive integer", param="version")
        reason = data.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise RequestError("'reason' must say why the alias moves", param="reason")
        force = data.get("force", False)
        if not isinstance(force, bool):
            raise RequestError("'force' must be true or false", param="force")
        expected = data.get("expected_current", _MISSING)
        if (
            expected is not _MISSING
            and expected is not None
            and (isinstance(expected, bool) or not isinstance(expected, int))
        ):
            raise RequestError(
                "'expected_current' must be a version number or null", param="expected_current"
            )
        event = await move_alias(
            self.registry,
            params["task"],
            params["alias"],
            version,
            force=force,
            reason=reason,
            actor=f"api:{key.prefix}" if key is not None else "api:local",
            expected_current=expected,
        )
        await self.portfolio.refresh()
        await respond(send, 200, orjson.dumps(event.to_dict()))

    async def keys(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request, admin=True)
        records = await _call(self.registry.list_keys)
        await respond(send, 200, orjson.dumps([r.to_dict() for r in records]))

    async def create_key(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request, admin=True)
        data = await request.json()
        only_fields(data, {"scope", "budget_usd", "name"})
        budget = data.get("budget_usd")
        if budget is not None and (
            isinstance(budget, bool)
            or not isinstance(budget, int | float)
            or not math.isfinite(budget)
            or budget < 0
        ):
            raise RequestError("'budget_usd' must be a non-negative number", param="budget_usd")
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise RequestError("'name' must be a string", param="name")
        scope = data.get("scope", "inference")
        if not isinstance(scope, str):
            raise RequestError("'scope' must be 'inference' or 'admin'", param="scope")
        record, secret = await _call(
            self.registry.create_key, scope=scope, budget_usd=budget, name=name
        )
        await respond(send, 201, orjson.dumps({"key": record.to_dict(), "secret": secret}))

    async def revoke_key(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request, admin=True)
        record = await _call(self.registry.revoke_key, params["key"])
        await respond(send, 200, orjson.dumps(record.to_dict()))
