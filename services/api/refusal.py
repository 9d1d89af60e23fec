"""A refused decision (schemas/chat_decide.py's Refused) as an HTTP answer: the one mapping every route
that decides on a chat uses."""

from __future__ import annotations

from schemas.chat_decide import Conflict, Invalid, Refused
from services.api.errors import ApiError


def refusal(exc: Refused) -> ApiError:
    """409 when the chat cannot do it, 400 when the request is wrong, 404 for what is not there; with the
    refusal's own code when it names one (`arena_battle`, `already_voted`, ...)."""
    if isinstance(exc, Conflict):
        return ApiError(409, exc.code or "conflict", str(exc))
    if isinstance(exc, Invalid):
        return ApiError(400, exc.code or "bad_request", str(exc))
    return ApiError(404, exc.code or "not_found", str(exc))
