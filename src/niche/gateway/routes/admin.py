"""Admin routes under ``/v1/admin/`` (an ``admin`` key, or local mode): tasks, aliases, keys.

Each parses the request, makes one registry call on a thread, and answers its record.
Changes are made as ``api:<key prefix>`` (``api:local`` in local mode), so the audit trail
says who.

    GET    /v1/admin/tasks                          every task, with what is serving
    GET    /v1/admin/tasks/{task}                   one task and its aliases
    GET    /v1/admin/tasks/{task}/aliases           aliases and their history
    PUT    /v1/admin/tasks/{task}/aliases/{alias}   move an alias (champion, challenger: a
                                                    gate passed under the task's current
                                                    spec, or force with a reason): the
                                                    registry's one promotion rule
    GET    /v1/admin/keys                           every key (never a secret)
    POST   /v1/admin/keys                           create a key (its secret shown once)
    DELETE /v1/admin/keys/{key}                     revoke a key (id or prefix)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import orjson

from niche.errors import RequestError
from niche.gateway.asgi import Params, Request, Send, respond
from niche.gateway.protocol import only_fields
from niche.gateway.routing import Route
from niche.registry.stores.promotions import UNSET

if TYPE_CHECKING:
    from niche.gateway.auth import Guard
    from niche.gateway.portfolio import Portfolio
    from niche.registry.store import KeyRecord, Registry, TaskRecord

__all__ = ["AdminRoutes"]

P = ParamSpec("P")
T = TypeVar("T")


async def _call(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A registry call on a thread (the event loop never waits for the database)."""
    return await asyncio.to_thread(function, *args, **kwargs)


def _actor(key: KeyRecord | None) -> str:
    return f"api:{key.prefix}" if key is not None else "api:local"


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
            Route("/v1/admin/tasks/{task}/aliases/{alias}", self.move_alias, ("PUT",)),
            Route("/v1/admin/keys", self.keys),
            Route("/v1/admin/keys", self.create_key, ("POST",)),
            Route("/v1/admin/keys/{key}", self.revoke_key, ("DELETE",)),
        ]

    def _task_view(self, record: TaskRecord) -> dict[str, Any]:
        state = self.portfolio.get(record.name)
        return {**record.to_dict(), "serving": state.served() if state else {}}

    async def tasks(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request, admin=True)
        records = await _call(self.registry.tasks.all)
        await respond(send, 200, orjson.dumps([self._task_view(r) for r in records]))

    async def task(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request, admin=True)
        record = await _call(self.registry.tasks.get, params["task"])
        aliases = await _call(self.registry.promotions.aliases, params["task"])
        await respond(send, 200, orjson.dumps({**self._task_view(record), "aliases": aliases}))

    async def aliases(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request, admin=True)
        name = params["task"]
        aliases = await _call(self.registry.promotions.aliases, name)
        history = await _call(self.registry.promotions.history, name)
        payload = {"task": name, "aliases": aliases, "history": [e.to_dict() for e in history]}
        await respond(send, 200, orjson.dumps(payload))

    async def move_alias(self, request: Request, send: Send, params: Params) -> None:
        """Move an alias through ``registry.promotions.promote``, the one promotion rule.

        The answer is the alias event the move wrote, with ``moved`` and ``forced``; when the
        version held the alias already nothing is written, and the answer is the move that
        put it there (``moved: false``). A guarded alias (champion, challenger) without a gate
        passed for the version under the task's current spec (SLA, labels, general model) is
        refused by the registry (:class:`~niche.errors.GateRefusedError`: 409, code
        ``gate_required``, saying how to gate it again); a forced move stores a forced gate
        decision with its reason and the caller as actor.
        """
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
        expected = data.get("expected_current", UNSET)
        if (
            expected is not UNSET
            and expected is not None
            and (isinstance(expected, bool) or not isinstance(expected, int))
        ):
            raise RequestError(
                "'expected_current' must be a version number or null", param="expected_current"
            )
        task, alias = params["task"], params["alias"]
        outcome = await _call(
            self.registry.promotions.promote,
            task,
            alias,
            version,
            force=force,
            why=reason,
            actor=_actor(key),
            expected_current=expected,
        )
        event = outcome.event
        if event is None:  # it held the alias already: the move that put it there
            event = (await _call(self.registry.promotions.history, task, alias))[-1]
        await self.portfolio.refresh()
        body = {**event.to_dict(), "moved": outcome.moved, "forced": outcome.forced}
        await respond(send, 200, orjson.dumps(body))

    async def keys(self, request: Request, send: Send, params: Params) -> None:
        await self.guard.check(request, admin=True)
        records = await _call(self.registry.keys.all)
        await respond(send, 200, orjson.dumps([r.to_dict() for r in records]))

    async def create_key(self, request: Request, send: Send, params: Params) -> None:
        key = await self.guard.check(request, admin=True)
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
            self.registry.keys.create, scope=scope, budget_usd=budget, name=name, actor=_actor(key)
        )
        await respond(send, 201, orjson.dumps({"key": record.to_dict(), "secret": secret}))

    async def revoke_key(self, request: Request, send: Send, params: Params) -> None:
        key = await self.guard.check(request, admin=True)
        record = await _call(self.registry.keys.revoke, params["key"], actor=_actor(key))
        await respond(send, 200, orjson.dumps(record.to_dict()))
