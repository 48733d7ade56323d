"""The gateway's OpenAPI 3.1 document, served at ``/openapi.json`` (and fuzzed by the tests).

Written by hand because the hot routes are raw ASGI; only what the gateway itself checks is
described for the OpenAI-compatible routes (everything else passes through).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from niche.gateway.routes.feedback import FEEDBACK_MAX_ITEMS

__all__ = ["openapi_document"]


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_COMMON_ERRORS = {
    "400": _error("Malformed request"),
    "401": _error("Missing or invalid API key"),
    "413": _error("Request body too large"),
    "429": _error("Over the concurrency limit or the key's budget"),
}
_ADMIN_ERRORS = {
    **_COMMON_ERRORS,
    "403": _error("The key is not an admin key"),
    "404": _error("No such task, alias or key"),
    "409": _error("Conflict"),
}
_TASK = {"name": "task", "in": "path", "required": True, "schema": {"type": "string"}}
_BODY = {"required": True}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {**_BODY, "content": {"application/json": {"schema": schema}}}


@cache
def openapi_document() -> dict[str, Any]:
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {
                "type": "string",
                "enum": ["system", "developer", "user", "assistant", "tool", "function"],
            },
            "content": {"anyOf": [{"type": "string"}, {"type": "array"}, {"type": "null"}]},
        },
    }
    nonblank = {"type": "string", "minLength": 1, "pattern": r"\S"}
    feedback = {
        "type": "object",
        "required": ["request_id", "label"],
        "additionalProperties": False,
        "properties": {
            "request_id": {
                **nonblank,
                "description": "The id the gateway returned: a chat completion's `id`, a "
                "prediction's `request_id`",
            },
            "label": {**nonblank, "description": "The true label, one of the task's labels"},
        },
    }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "ChatCompletionRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                "model": {"type": "string", "minLength": 1},
                "messages": {"type": "array", "minItems": 1, "items": message},
                "stream": {"type": "boolean"},
            },
        },
        "ChatCompletion": {
            "type": "object",
            "required": ["id", "object", "choices"],
            "properties": {
                "id": {"type": "string"},
                "object": {"type": "string"},
                "model": {"type": "string"},
                "choices": {"type": "array"},
                "usage": {"type": "object"},
                "niche": {"type": "object"},
            },
        },
        "PredictRequest": {
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 256,
                    "items": {"type": "string", "minLength": 1, "pattern": r"\S"},
                }
            },
        },
        "Feedback": feedback,
        "FeedbackRequest": {
            "anyOf": [
                feedback,
                {
                    "type": "object",
                    "required": ["feedback"],
                    "additionalProperties": False,
                    "properties": {
                        "feedback": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": FEEDBACK_MAX_ITEMS,
                            "items": _ref("Feedback"),
                        }
                    },
                },
            ]
        },
        "SetAliasRequest": {
            "type": "object",
            "required": ["version", "reason"],
            "additionalProperties": False,
            "properties": {
                "version": {"type": "integer", "minimum": 1},
                "reason": {"type": "string", "minLength": 1, "pattern": r"\S"},
                "expected_current": {"type": ["integer", "null"]},
                "force": {"type": "boolean"},
            },
        },
        "CreateKeyRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "scope": {"type": "string", "enum": ["inference", "admin"]},
                "budget_usd": {"type": ["number", "null"], "minimum": 0},
                "name": {"type": ["string", "null"], "minLength": 1, "pattern": r"\S"},
            },
        },
    }
    any_object = {"type": "object"}
    paths: dict[str, Any] = {
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI-compatible chat completion: a task, or pass-through",
                "requestBody": _body(_ref("ChatCompletionRequest")),
                "responses": {
                    "200": {
                        "description": "A chat completion (an SSE stream when stream is true)",
                        "content": {
                            "application/json": {"schema": _ref("ChatCompletion")},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_COMMON_ERRORS,
                    "404": _error("Unknown model, and no general model to pass it through to"),
                    "502": _error("The general model failed"),
                    "503": _error("The general model's circuit is open"),
                    "504": _error("The general model timed out"),
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "Tasks served, and the pass-through model",
                "responses": {"200": _json(any_object), **_COMMON_ERRORS},
            }
        },
        "/v1/tasks/{task}/predict": {
            "post": {
                "summary": "Labels, confidences and routes for a batch of texts",
                "parameters": [_TASK],
                "requestBody": _body(_ref("PredictRequest")),
                "responses": {
                    "200": _json(any_object),
                    **_COMMON_ERRORS,
                    "404": _error("No such task"),
                    "502": _error("Specialist and general model both failed"),
                    "504": _error("The general model timed out"),
                },
            }
        },
        "/v1/feedback": {
            "post": {
                "summary": "Gold labels for answered task requests, by the request id returned",
                "requestBody": _body(_ref("FeedbackRequest")),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["attached"],
                            "properties": {"attached": {"type": "integer", "minimum": 0}},
                        },
                        "The labels were attached (all of them)",
                    ),
                    **_COMMON_ERRORS,
                    "400": _error("Malformed request, or a label outside its task's label set"),
                    "404": _error("No captured task request has this request id"),
                    "503": _error("The registry database cannot be reached"),
                },
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json(any_object)}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: the portfolio is loaded",
                "responses": {"200": _json(any_object), "503": _json(any_object, "Not ready")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/admin/tasks": {
            "get": {
                "summary": "Tasks with their specs and served versions",
                "responses": {"200": _json({"type": "array"}), **_ADMIN_ERRORS},
            }
        },
        "/v1/admin/tasks/{task}": {
            "get": {
                "summary": "One task",
                "parameters": [_TASK],
                "responses": {"200": _json(any_object), **_ADMIN_ERRORS},
            }
        },
        "/v1/admin/tasks/{task}/aliases": {
            "get": {
                "summary": "A task's aliases and their history",
                "parameters": [_TASK],
                "responses": {"200": _json(any_object), **_ADMIN_ERRORS},
            }
        },
        "/v1/admin/tasks/{task}/aliases/{alias}": {
            "put": {
                "summary": "Move an alias (champion needs a passed gate, or force and a reason)",
                "parameters": [
                    _TASK,
                    {"name": "alias", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "requestBody": _body(_ref("SetAliasRequest")),
                "responses": {"200": _json(any_object), **_ADMIN_ERRORS},
            }
        },
        "/v1/admin/keys": {
            "get": {
                "summary": "API keys (never their secrets)",
                "responses": {"200": _json({"type": "array"}), **_ADMIN_ERRORS},
            },
            "post": {
                "summary": "Create an API key; its secret is shown once",
                "requestBody": _body(_ref("CreateKeyRequest")),
                "responses": {"201": _json(any_object, "Created"), **_ADMIN_ERRORS},
            },
        },
        "/v1/admin/keys/{key}": {
            "delete": {
                "summary": "Revoke a key by id or prefix",
                "parameters": [
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json(any_object), **_ADMIN_ERRORS},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "niche gateway", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
