"""The daemon's HTTP API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

Built at runtime: every route the application has, each request body's schema from its
pydantic model (``model_json_schema``, so a field added to a body appears here with no
edit), the success answer's shape and OpenAI's error body for every error status. The
document is served under the same rules as the other routes (the API key when the daemon
has one): only ``/health`` is open, for probes that hold no key.

Fields whose validator checks more than their Python type says get that shape from
:data:`_SHAPES` (chat messages are ``dict[str, str]`` to Python, role and content to the
validator); fields declared with no usable default are listed as required.

pydantic writes the bounds of a number whose type has a before-validator
(:data:`~ridgeline_core.validation.JsonInt`) as ``ge``/``le``, which JSON Schema does not
know; :func:`_json_schema_bounds` names them ``minimum``/``maximum``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ridgeline_core import __version__

from .bodies import ChatBody, ClassifyBody, CompletionBody, EmbeddingsBody
from .responses_api import ResponsesBody

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["OPERATIONS", "Operation", "document", "serve"]

_OBJECT = {"type": "object"}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _generated(kind: str, answer: str, usage: tuple[str, ...]) -> dict[str, Any]:
    """A generation's answer: ``object`` is ``kind``, the text is in ``answer``."""
    return {
        "type": "object",
        "required": ["id", "object", "model", answer, "usage", "ridgeline"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": kind},
            "model": {"type": "string"},
            answer: {"type": "array", "minItems": 1},
            "usage": {
                "type": "object",
                "required": list(usage),
                "properties": {name: {"type": "integer", "minimum": 0} for name in usage},
            },
            "ridgeline": {"type": "object", "description": "the answer's decision record"},
        },
    }


def _event(payload: dict[str, Any], done: bool) -> dict[str, Any]:
    """One server-sent event (schemathesis reads it as ``{event, data}``): its data is
    JSON, ``payload`` or an error body, or the ``[DONE]`` line (``done``)."""
    json_data = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"anyOf": [payload, {"$ref": "#/components/schemas/Error"}]},
    }
    data = {"anyOf": [{"const": "[DONE]"}, json_data]} if done else json_data
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"event": {"type": "string"}, "data": data},
    }


_CHAT_USAGE = ("prompt_tokens", "completion_tokens", "total_tokens")
_RESPONSE_USAGE = ("input_tokens", "output_tokens", "total_tokens")
_CHUNK = {
    "type": "object",
    "required": ["id", "object", "model", "choices"],
    "properties": {"object": {"enum": ["chat.completion.chunk", "text_completion"]}},
}
_RESPONSE_EVENT = {
    "type": "object",
    "required": ["type", "sequence_number"],
    "properties": {
        "type": {"type": "string", "pattern": "^(response[.][a-z_.]+|error)$"},
        "sequence_number": {"type": "integer", "minimum": 0},
    },
}
_MODEL = {
    "type": "object",
    "required": ["id", "object"],
    "properties": {"id": {"type": "string"}, "object": {"const": "model"}},
}
_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array"}},
}
_HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"enum": ["ok", "draining"]}},
}
_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {  # null: an assistant turn with no text
            "anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}, {"type": "null"}]
        },
    },
}
# shapes a field's validator checks that its Python type does not say (by body and field)
_SHAPES = {"ChatBody": {"messages": {"type": "array", "minItems": 1, "items": _MESSAGE}}}
_ERRORS = ("400", "401", "403", "404", "413", "500", "503")
_READ_ERRORS = ("401", "403", "500")
_HEADERS = (  # the Ridgeline options a generation request may also set as headers
    ("X-Ridgeline-Mode", {"enum": ["auto", "local", "cloud"]}),
    ("X-Ridgeline-Threshold", {"type": "string", "pattern": r"^(0(\.[0-9]+)?|1(\.0+)?)$"}),
    ("X-Ridgeline-Private", {"enum": ["true", "false", "1", "0"]}),
)


@dataclass(frozen=True)
class Operation:
    """One route: what it takes and what it answers (``content``: media type to schema)."""

    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    content: dict[str, Any] = field(default_factory=lambda: {"application/json": _OBJECT})
    errors: tuple[str, ...] = _READ_ERRORS
    open: bool = False  # no API key needed


def _generation(
    path: str, summary: str, body: type[BaseModel], answer: dict[str, Any]
) -> Operation:
    done = answer["properties"]["object"]["const"] != "response"  # Responses: no [DONE]
    content = {
        "application/json": answer,
        "text/event-stream": _event(_CHUNK if done else _RESPONSE_EVENT, done),
    }
    return Operation("post", path, summary, body, content, _ERRORS)


OPERATIONS = (
    _generation(
        "/v1/chat/completions",
        "OpenAI chat completion",
        ChatBody,
        _generated("chat.completion", "choices", _CHAT_USAGE),
    ),
    _generation(
        "/v1/completions",
        "OpenAI text completion (one user turn)",
        CompletionBody,
        _generated("text_completion", "choices", _CHAT_USAGE),
    ),
    _generation(
        "/v1/responses",
        "OpenAI Responses API, text subset",
        ResponsesBody,
        _generated("response", "output", _RESPONSE_USAGE),
    ),
    Operation("get", "/v1/models", "the local chat models", content={"application/json": _LIST}),
    Operation(
        "get",
        "/v1/models/{name}",
        "one local chat model",
        content={"application/json": _MODEL},
        errors=(*_READ_ERRORS, "404"),
    ),
    Operation("post", "/v1/embeddings", "OpenAI embeddings", EmbeddingsBody, errors=_ERRORS),
    Operation("post", "/v1/classify", "a specialist's label", ClassifyBody, errors=_ERRORS),
    Operation(
        "get",
        "/health",
        "liveness and load (503 while draining)",
        content={"application/json": _HEALTH},
        errors=("500",),
        open=True,
    ),
    Operation("get", "/metrics", "Prometheus metrics", content={"text/plain": {"type": "string"}}),
    Operation("get", "/openapi.json", "this document"),
)


def document(routes: Iterable[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The OpenAPI document for ``routes`` (method, path; default: :data:`OPERATIONS`).
    A route without an entry in :data:`OPERATIONS` is listed as "undocumented"."""
    known = {(op.method, op.path): op for op in OPERATIONS}
    wanted = [(op.method, op.path) for op in OPERATIONS] if routes is None else routes
    components: dict[str, Any] = {"Error": ERROR}
    paths: dict[str, Any] = {}
    for method, path in wanted:
        operation = known.get((method, path)) or Operation(method, path, "undocumented")
        paths.setdefault(path, {})[method] = _operation(operation, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ridgeline edge daemon",
            "version": __version__,
            "description": "OpenAI-compatible API of edge-agent serve; errors use OpenAI's body.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    responses: dict[str, Any] = {
        "200": {
            "description": "the answer",
            "content": {kind: {"schema": schema} for kind, schema in op.content.items()},
        }
    }
    responses.update({status: {"description": "an error", **error} for status in op.errors})
    data: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_')}",
        "responses": responses,
        # the key is needed only when the daemon has one (daemon.api_key)
        "security": [] if op.open else [{}, {"apiKey": []}],
    }
    parameters = [
        {"name": name[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _placeholders(op.path)
    ]
    if op.body is not None:
        components.update(_schemas(op.body))
        ref = {"$ref": f"#/components/schemas/{op.body.__name__}"}
        data["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    if op.content.get("text/event-stream"):
        parameters += [
            {"name": name, "in": "header", "required": False, "schema": schema}
            for name, schema in _HEADERS
        ]
    if parameters:
        data["parameters"] = parameters
    return data


def _placeholders(path: str) -> list[str]:
    return [part for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _schemas(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s schema and those it refers to, by name."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    nested = schema.pop("$defs", {})
    properties = schema.get("properties", {})
    for name, info in model.model_fields.items():
        if info.validate_default and info.default is None and name in properties:
            # declared with no usable default: its validator refuses a body without it
            properties[name].pop("default", None)
            schema.setdefault("required", []).append(name)
        if name in _SHAPES.get(model.__name__, {}) and name in properties:
            properties[name] = {**properties[name], **_SHAPES[model.__name__][name]}
    return {name: _json_schema_bounds(s) for name, s in {**nested, model.__name__: schema}.items()}


_BOUND_NAMES = {
    "ge": "minimum",
    "le": "maximum",
    "gt": "exclusiveMinimum",
    "lt": "exclusiveMaximum",
}


def _json_schema_bounds(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_json_schema_bounds(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    numeric = schema.get("type") in ("integer", "number")
    return {
        (_BOUND_NAMES.get(key, key) if numeric else key): _json_schema_bounds(value)
        for key, value in schema.items()
    }


async def serve(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the document for the routes this application has."""
    from aiohttp import web

    routes = [
        (route.method.lower(), route.resource.canonical)
        for route in request.app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "*")
    ]
    return web.json_response(document(routes))
