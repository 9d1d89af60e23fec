"""CORS for browser apps and tools on other origins (CHATBUS_CORS_ORIGINS; empty: off, nothing changes).

A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here, before
authentication (a browser sends no credentials with it): 204 with the path's methods for an allowed
origin, 403 for another. Every actual answer to an allowed origin, errors and streams included, carries
`Access-Control-Allow-Origin`, added just before its headers go out. A listed origin is echoed with
`Access-Control-Allow-Credentials: true`; one allowed only by `*` gets `*` and never credentials. Whether
a cookie session is honoured is not decided here: services/api/auth.py serves sessions only to this
site's own pages (and CHATBUS_ALLOWED_ORIGINS), so other origins authenticate with an API key.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from services.api.errors import error_response
from services.api.keys import SETTINGS

WILDCARD = "*"
MAX_AGE_SECONDS = 3600  # how long a browser may reuse a preflight (Chromium caps it at 7200)
# What a cross-origin caller may always send: its key, a JSON body, a bot's version, a feed's resume point.
# It may send other headers too (the OpenAI SDK's x-stainless-*), but never one that names a user or a
# hop: a trusted proxy's user header and the X-Forwarded-* family are the proxy's to write.
ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "if-match",
    "if-none-match",
    "last-event-id",
    "x-csrf-token",
)
# What its script may read besides the safelisted ones: when to retry, an image's tag, why a 401.
EXPOSE_HEADERS = "Retry-After, ETag, WWW-Authenticate, Allow"


def cors_grant(origins: tuple[str, ...], origin: str | None) -> tuple[str, bool] | None:
    """What `Access-Control-Allow-Origin` to answer `origin` with, and whether credentials may come
    along (only for a listed origin, never for `*`); None when the origin is not allowed."""
    if origin is None or not origins:
        return None
    if origin.lower() in (allowed.lower() for allowed in origins):
        return origin, True
    if WILDCARD in origins:
        return WILDCARD, False
    return None


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


def _path_methods(request: web.Request) -> list[str] | None:
    """The methods the requested path answers (a preflight's OPTIONS matches no route itself)."""
    match = request.match_info
    if match.http_exception is None:
        return [request.method]
    if isinstance(match.http_exception, web.HTTPMethodNotAllowed):
        return sorted(match.http_exception.allowed_methods)
    return None  # no such path


def _preflight(request: web.Request, origins: tuple[str, ...]) -> web.Response:
    origin = request.headers[hdrs.ORIGIN]
    grant = cors_grant(origins, origin)
    if grant is None:
        return error_response(403, "cors_origin", f"the origin {origin} is not one of CHATBUS_CORS_ORIGINS")
    methods = _path_methods(request)
    if methods is None:
        return error_response(404, "not_found", f"no route at {request.path}")
    wanted = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD].upper()
    if wanted not in methods:
        message = f"{request.path} answers {', '.join(methods)}, not {wanted}"
        return error_response(405, "method_not_allowed", message, {"Allow": ", ".join(methods)})
    asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "")
    names = [name.strip().lower() for name in asked.split(",") if name.strip()]
    user_header = request.app[SETTINGS].trusted_user_header.lower()
    refused = [n for n in names if n == user_header or n.startswith("x-forwarded-") or n == "forwarded"]
    if refused:
        message = f"a script of another origin may not send {', '.join(refused)}"
        return error_response(403, "cors_header", message)
    headers = {
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(methods),
        hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(dict.fromkeys([*ALLOW_HEADERS, *names])),
        hdrs.ACCESS_CONTROL_MAX_AGE: str(MAX_AGE_SECONDS),
    }
    return web.Response(status=204, headers=headers)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights before anything else looks at the request (auth included)."""
    origins = request.app[SETTINGS].cors_origins
    if origins and _is_preflight(request):
        return _preflight(request, origins)
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the CORS headers of every answer (also streams, errors and 304s)."""
    origins = request.app[SETTINGS].cors_origins
    if not origins:
        return
    if "Origin" not in response.headers.getall(hdrs.VARY, []):
        response.headers.add(hdrs.VARY, "Origin")  # the answer depends on the caller's origin
    grant = cors_grant(origins, request.headers.get(hdrs.ORIGIN))
    if grant is None:
        return
    allow_origin, credentials = grant
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = allow_origin
    if credentials:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
    if not _is_preflight(request):
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS
