"""Reading client input: path ids, query integers and JSON bodies, each refused with a precise 4xx."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from aiohttp import hdrs, web

from schemas.ids import is_valid_id
from services.api.errors import ApiError

T = TypeVar("T")


def path_id(request: web.Request, name: str) -> str:
    """A token-safe id from the path, else 400."""
    value = request.match_info[name]
    if not is_valid_id(value):
        raise ApiError(400, "bad_id", f"{name} must be 1-64 characters of [A-Za-z0-9_-]")
    return value


def query_int(request: web.Request, name: str, default: int, low: int = 0, high: int | None = None) -> int:
    """An integer query parameter within [low, high], else 400."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(400, "bad_parameter", f"{name} must be {bound}")
    return value


def query_str(request: web.Request, name: str, max_length: int = 512) -> str | None:
    """A short string query parameter, else 400."""
    value = request.query.get(name)
    if value is not None and len(value) > max_length:
        raise ApiError(400, "bad_parameter", f"{name} is longer than {max_length} characters")
    return value or None


def require_json(request: web.Request) -> None:
    """A JSON body must say it is one (415 otherwise). A page of another site can post `text/plain` or a
    form without asking, but not `application/json`: this is what keeps cross-site forms out of JSON
    routes (login CSRF). An empty body is the defaults, whatever it is said to be."""
    if not request.body_exists:
        return
    if request.content_type != "application/json":
        declared = request.headers.get(hdrs.CONTENT_TYPE)
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as JSON with Content-Type: application/json (not {declared or 'nothing'})",
        )


async def read_body(request: web.Request, body_type: type[T]) -> T:
    """Decode the JSON body into a request Struct: not declared JSON → 415, malformed → 400, wrong
    fields or types → 422."""
    require_json(request)
    raw = await request.read()  # aiohttp raises 413 beyond client_max_size
    try:
        return msgspec.json.decode(raw or b"{}", type=body_type)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
