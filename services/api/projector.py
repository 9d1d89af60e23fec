"""Reads from the projector micro service, with its errors mapped to HTTP answers."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web

import bus
from schemas.streams import PROJECTOR_SERVICE
from schemas.subjects import service_endpoint
from services.api.errors import ApiError, unavailable
from services.api.inputs import query_int
from services.api.keys import BUS, LOG_END, SETTINGS

T = TypeVar("T")
MAX_SEQ = 2**63 - 1


async def min_seq_of(request: web.Request, at_least: int = 0) -> int:
    """The `min_seq` query parameter (at least `at_least`): 400 at once when the log has not reached it."""
    asked = query_int(request, "min_seq", 0, high=MAX_SEQ)
    if asked > at_least and not await request.app[LOG_END].reaches(asked):
        last = request.app[LOG_END].seen
        raise ApiError(
            400,
            "bad_parameter",
            f"min_seq {asked} is beyond the last sequence of the log ({last})",
            param="min_seq",
        )
    return max(asked, at_least)


async def query(request: web.Request, endpoint: str, body: Any, answer_type: type[T]) -> T:
    """Ask `projector.<endpoint>`; behind, busy or absent → 503 with Retry-After, bad request → 400."""
    app = request.app
    subject = service_endpoint(PROJECTOR_SERVICE, endpoint)
    try:
        return await bus.call(app[BUS].nc, subject, body, answer_type, timeout=app[SETTINGS].read_timeout)
    except bus.ServiceError as exc:
        if exc.code == "behind":
            raise unavailable("the read model has not caught up yet; retry shortly") from None
        if exc.code == "busy":
            raise unavailable("too many reads are waiting for the read model; retry shortly") from None
        if exc.code in ("unavailable", "timeout"):
            raise unavailable(f"the projector is not answering ({exc.code})", retry_after=2) from None
        if exc.code == "bad_request":
            raise ApiError(400, "bad_request", exc.message) from None
        raise ApiError(502, "projector_error", f"the projector failed: {exc.message}") from None
