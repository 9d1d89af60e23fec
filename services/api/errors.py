"""HTTP errors as JSON: one exception type for handlers, one middleware that renders every failure."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

import bus
from schemas.api import ErrorBody
from schemas.openai import OpenAIError, OpenAIErrorDetail
from services.api.keys import OPENAI_ROUTES

log = logging.getLogger(__name__)
Headers = Mapping[str, str] | None

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised by handlers: becomes `status` with an ErrorBody {error: code, message}."""

    def __init__(
        self, status: int, code: str, message: str, headers: Headers = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.param = param  # the request field at fault (OpenAI-style answers name it)


def json_response(body: object, status: int = 200, headers: Headers = None) -> web.Response:
    """A response whose body is msgspec JSON."""
    return web.Response(
        body=msgspec.json.encode(body), status=status, headers=headers, content_type="application/json"
    )


def error_response(status: int, code: str, message: str, headers: Headers = None) -> web.Response:
    """An ErrorBody response."""
    return json_response(ErrorBody(error=code, message=message), status=status, headers=headers)


# OpenAI's error `type` by status; a 422 (the body's shape is wrong) is a 400 there.
_OPENAI_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "rate_limit_error"}
_OPENAI_CODES = {"unauthorized": "invalid_api_key", "invalid": "invalid_request_error"}


def openai_error_response(
    status: int, code: str, message: str, headers: Headers = None, param: str | None = None
) -> web.Response:
    """An error in OpenAI's shape `{"error": {message, type, param, code}}`."""
    status = 400 if status == 422 else status
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    detail = OpenAIErrorDetail(message=message, type=kind, param=param, code=_OPENAI_CODES.get(code, code))
    body = OpenAIError(error=detail)
    return json_response(body, status=status, headers=headers)


# Paths under which no route matched still answer in OpenAI's shape (a 404 of the SDKs' own calls).
OPENAI_PATHS = ("/v1/batches/", "/v1/files/")


def _render(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    headers: Headers = None,
    param: str | None = None,
) -> web.Response:
    """An error in the dialect of the route asked for: OpenAI's on its compatible routes, else ErrorBody."""
    route = request.match_info.route
    if route.name is None and request.path.startswith(OPENAI_PATHS):
        return openai_error_response(status, code, message, headers, param)  # no route: aiohttp's 404
    if route.name is not None and route.name in request.app.get(OPENAI_ROUTES, ()):
        return openai_error_response(status, code, message, headers, param)
    return error_response(status, code, message, headers)


def unavailable(message: str, retry_after: int = 1) -> ApiError:
    """A 503 that tells the client when to retry."""
    return ApiError(503, "unavailable", message, {"Retry-After": str(retry_after)})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render ApiError, aiohttp's HTTP errors, bus outages and surprises as JSON ErrorBody answers."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _render(request, exc.status, exc.code, exc.message, exc.headers, exc.param)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        return _render(request, exc.status, _CODES.get(exc.status, "error"), message, headers)
    except (bus.BusError, TimeoutError) as exc:
        log.warning("%s %s: bus unavailable: %s", request.method, request.path, exc)
        return _render(
            request, 503, "unavailable", "the event bus did not answer; retry shortly", {"Retry-After": "1"}
        )
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _render(request, 500, "internal", "internal error; it has been logged")
