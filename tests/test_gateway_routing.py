"""The route table on its own: static and parametrized patterns, 404, 405, the fallback."""

from __future__ import annotations

import pytest

from niche.errors import MethodNotAllowedError, NotFoundError
from niche.gateway.asgi import Params, Request, Send
from niche.gateway.routing import Fallback, Route, RouteTable


def _handler(name: str):
    async def handler(request: Request, send: Send, params: Params) -> None:
        raise AssertionError(f"{name} is not called by the table")

    handler.__name__ = name
    return handler


CHAT, MODELS, PREDICT, TASK, ALIAS, SET_ALIAS, FORWARD = (
    _handler(n) for n in ("chat", "models", "predict", "task", "alias", "set_alias", "forward")
)


def _table(*, fallback: bool = True) -> RouteTable:
    return RouteTable(
        [
            Route("/v1/chat/completions", CHAT, ("POST",)),
            Route("/v1/models", MODELS),
            Route("/v1/tasks/{task}/predict", PREDICT, ("POST",)),
            Route("/v1/admin/tasks/{task}", TASK),
            Route("/v1/admin/tasks/{task}/aliases/{alias}", ALIAS),
            Route("/v1/admin/tasks/{task}/aliases/{alias}", SET_ALIAS, ("PUT",)),
        ],
        fallback=Fallback(lambda path: path.startswith("/v1/"), FORWARD) if fallback else None,
    )


def test_static_routes_match_without_parameters():
    handler, params = _table().match("POST", "/v1/chat/completions")
    assert (handler, dict(params)) == (CHAT, {})
    assert _table().match("GET", "/v1/models").handler is MODELS


def test_parameters_are_read_from_the_path_for_the_handler():
    assert _table().match("POST", "/v1/tasks/banking77/predict") == (
        PREDICT,
        {"task": "banking77"},
    )
    assert _table().match("PUT", "/v1/admin/tasks/sms.v2/aliases/champion") == (
        SET_ALIAS,
        {"task": "sms.v2", "alias": "champion"},
    )
    assert _table().match("GET", "/v1/admin/tasks/sms/aliases/champion").handler is ALIAS
    # Slashes around a parametrized path do not matter (as when the path was split by hand).
    assert _table().match("GET", "/v1/admin/tasks/sms/").params == {"task": "sms"}


def test_a_static_path_with_another_method_is_405_and_unknown_paths_404():
    with pytest.raises(MethodNotAllowedError) as refused:
        _table().match("GET", "/v1/chat/completions")
    assert (refused.value.http_status, refused.value.code) == (405, "method_not_allowed")
    assert refused.value.message == "method GET is not allowed on /v1/chat/completions"
    with pytest.raises(NotFoundError, match=r"^no route GET /nowhere$"):
        _table().match("GET", "/nowhere")
    # A parametrized route asked with another method is no route, as it always was.
    with pytest.raises(NotFoundError, match=r"^no route DELETE /v1/admin/tasks/sms$"):
        _table(fallback=False).match("DELETE", "/v1/admin/tasks/sms")
    # One segment per parameter: an empty or a nested one does not match.
    for path in ("/v1/tasks//predict", "/v1/tasks/a/b/predict"):
        with pytest.raises(NotFoundError):
            _table(fallback=False).match("POST", path)


def test_the_fallback_takes_what_no_route_matches_but_never_a_static_path():
    table = _table()
    assert table.match("POST", "/v1/embeddings") == (FORWARD, {})
    assert table.match("GET", "/v1/models/gpt-4") == (FORWARD, {})
    with pytest.raises(MethodNotAllowedError):
        table.match("DELETE", "/v1/models")
    with pytest.raises(NotFoundError):
        table.match("GET", "/healthz")  # the fallback does not accept it


def test_two_routes_for_one_method_and_pattern_are_refused():
    with pytest.raises(ValueError, match="two routes for GET /v1/models"):
        RouteTable([Route("/v1/models", MODELS), Route("/v1/models", CHAT)])
