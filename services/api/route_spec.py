"""How a route is described: its registration and what the OpenAPI document says of it (the table is
services/api/routes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp.typedefs import Handler


@dataclass(frozen=True)
class Param:
    """A query parameter (or header) a route reads."""

    name: str
    type: Literal["integer", "string"]
    description: str
    where: Literal["query", "header"] = "query"


@dataclass(frozen=True)
class Route:
    """One route: how it is registered and how the OpenAPI document describes it."""

    method: str
    path: str
    handler: Handler
    name: str
    status: int = 200
    body: type | None = None
    answer: type | None = None
    params: tuple[Param, ...] = ()
    public: bool = False
    # "openai": errors in OpenAI's shape, for the routes its SDKs call.
    dialect: Literal["chatbus", "openai"] = "chatbus"
    media: Literal["application/json", "text/event-stream", "websocket", "image/*", "text/html"] = (
        "application/json"
    )
    # Not JSON: the route reads (and bounds) its body itself (services/api/body_deadline.py).
    request_media: Literal["application/json", "image/*", "application/jsonl", "multipart/form-data"] = (
        "application/json"
    )
