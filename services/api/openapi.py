"""The OpenAPI 3.1 document, generated from the route table and the msgspec Structs."""

from __future__ import annotations

import inspect
import re
from typing import Any

import msgspec

from schemas.api import ErrorBody
from services.api.route_spec import Route

_PATH_PARAM = re.compile(r"{(\w+)(?::[^}]+)?}")
_PATTERNS = {"sha256": "^[0-9a-f]{64}$"}
_REF = "#/components/schemas/{name}"
_ERRORS = {
    "400": "Bad input (malformed JSON, bad id or parameter).",
    "401": "Missing, invalid or revoked API key.",
    "404": "No such chat or image, or not yours.",
    "409": "Conflict (no worker serves the model, reply finished).",
    "413": "Body, message or image too large.",
    "415": "Not an accepted image format (PNG, JPEG, WebP, GIF), or not the declared one.",
    "422": "Unknown fields or wrong types; an image that is corrupt, unknown, or whose URL was refused.",
    "503": "The bus or the read model is not ready; see Retry-After.",
}


def _summary(route: Route) -> str:
    return (inspect.getdoc(route.handler) or route.name).splitlines()[0]


def _operation(route: Route, refs: dict[type, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": _PATTERNS.get(name, "^[A-Za-z0-9_-]{1,64}$")},
        }
        for name in _PATH_PARAM.findall(route.path)
    ]
    params += [
        {
            "name": p.name,
            "in": p.where,
            "required": False,
            "description": p.description,
            "schema": {"type": p.type},
        }
        for p in route.params
    ]
    answer: dict[str, Any] = {"description": _summary(route)}
    if route.media == "text/html":
        answer["content"] = {"text/html": {"schema": {"type": "string"}}}
    elif route.media == "image/*":
        answer["content"] = {"image/*": {"schema": {"type": "string", "format": "binary"}}}
    elif route.answer is not None:
        media = "application/json" if route.media == "websocket" else route.media
        answer["content"] = {media: {"schema": refs[route.answer]}}
    elif route.name == "openapi":
        answer["content"] = {"application/json": {"schema": {"type": "object"}}}
    error = {"content": {"application/json": {"schema": refs[ErrorBody]}}}
    responses = {str(route.status): answer}
    for status, text in _ERRORS.items():
        if not route.public:
            responses[status] = {"description": text, **error}
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": _summary(route),
        "parameters": params,
        "responses": responses,
    }
    if route.request_media == "image/*":
        operation["requestBody"] = {
            "required": True,
            "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    elif route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[route.body]}},
        }
    if not route.public:
        operation["security"] = [{"bearer": []}]
    if route.media == "websocket":
        operation["description"] = (
            "WebSocket: the server sends LiveFrame JSON text frames; clients may send "
            "`ping`. Frames from the client above CHATBUS_WS_MAX_FRAME_BYTES close 1009."
        )
    return operation


def build_openapi(
    routes: tuple[Route, ...], title: str = "chatbus", version: str = "0.1.0"
) -> dict[str, Any]:
    """The OpenAPI document of `routes`: every path and method, bodies and answers by $ref."""
    types: list[type] = [ErrorBody]
    for route in routes:
        types += [t for t in (route.body, route.answer) if t is not None and t not in types]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PATH_PARAM.sub(r"{\1}", route.path)  # aiohttp's `{name:regex}` is `{name}` in OpenAPI
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
