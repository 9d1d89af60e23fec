"""Bearer-key authentication: every request reads the key's latest IDENTITY event (no cache to go stale)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from services.api.errors import error_response
from services.api.identity import Principal, authenticate
from services.api.keys import BUS, PUBLIC_ROUTES

PRINCIPAL = web.RequestKey("principal", Principal)


def principal_of(request: web.Request) -> Principal:
    """The authenticated caller of a request that passed the auth middleware."""
    return request[PRINCIPAL]


def bearer_key(request: web.Request) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def _unauthorized(message: str) -> web.Response:
    return error_response(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="chatbus"'})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests without a valid, unrevoked API key with 401, except on public routes."""
    match = request.match_info
    if match.http_exception is not None or match.route.name in request.app[PUBLIC_ROUTES]:
        return await handler(request)
    key = bearer_key(request)
    if key is None:
        return _unauthorized("send `Authorization: Bearer <api key>`")
    principal = await authenticate(request.app[BUS].js, key)
    if principal is None:
        return _unauthorized("the API key is invalid or revoked")
    request[PRINCIPAL] = principal
    return await handler(request)
