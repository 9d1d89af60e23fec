"""HTTP errors as JSON: one exception type for handlers, one middleware that renders every failure."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

import bus
from schemas.api import ErrorBody

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

    def __init__(self, status: int, code: str, message: str, headers: Headers = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def json_response(body: object, status: int = 200, headers: Headers = None) -> web.Response:
    """A response whose body is msgspec JSON."""
    return web.Response(
        body=msgspec.json.encode(body), status=status, headers=headers, content_type="application/json"
    )


def error_response(status: int, code: str, message: str, headers: Headers = None) -> web.Response:
    """An ErrorBody response."""
    return json_response(ErrorBody(error=code, message=message), status=status, headers=headers)


def unavailable(message: str, retry_after: int = 1) -> ApiError:
    """A 503 that tells the client when to retry."""
    return ApiError(503, "unavailable", message, {"Retry-After": str(retry_after)})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render ApiError, aiohttp's HTTP errors, bus outages and surprises as JSON ErrorBody answers."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        return error_response(exc.status, _CODES.get(exc.status, "error"), message, headers)
    except (bus.BusError, TimeoutError) as exc:
        log.warning("%s %s: bus unavailable: %s", request.method, request.path, exc)
        return error_response(
            503, "unavailable", "the event bus did not answer; retry shortly", {"Retry-After": "1"}
        )
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal", "internal error; it has been logged")
