"""Request bodies must arrive within a deadline: a client sending one byte a second holds nothing long."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from services.api.errors import ApiError
from services.api.keys import OWN_BODY_ROUTES, SETTINGS


@web.middleware
async def body_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the body (at most client_max_size) within CHATBUS_BODY_SECONDS, else 408, before the handler.

    aiohttp's client_max_size bounds a body's size, not its time. Routes that stream their bodies
    (image uploads) read them with their own deadline.
    """
    match = request.match_info
    if (
        request.body_exists
        and match.http_exception is None
        and match.route.name not in request.app[OWN_BODY_ROUTES]
    ):
        seconds = request.app[SETTINGS].body_seconds
        try:
            async with asyncio.timeout(seconds):
                await request.read()  # kept by aiohttp: the handler's read() returns it
        except TimeoutError:
            raise ApiError(408, "timeout", f"the request body did not arrive within {seconds:g} s") from None
    return await handler(request)
