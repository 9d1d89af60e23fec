"""The aiohttp application: middlewares, the route table, shared resources, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator

import msgspec
from aiohttp import WSCloseCode, web

import bus
from services.api.auth import auth_middleware
from services.api.body_deadline import body_deadline_middleware
from services.api.cors import add_cors_headers, cors_middleware
from services.api.errors import error_middleware
from services.api.feed_limits import FeedCounts
from services.api.keys import (
    BUS,
    CLOSING,
    FEEDS,
    LEADERBOARDS,
    LOG_END,
    MODEL_DEFAULTS,
    OPENAI_ROUTES,
    OPENAPI,
    OWN_BODY_ROUTES,
    PUBLIC_ROUTES,
    SETTINGS,
    SOCKETS,
)
from services.api.leaderboard_cache import LeaderboardCache
from services.api.log_end import LogEnd
from services.api.openapi import build_openapi
from services.api.presence import ModelDefaults
from services.api.routes import ROUTES
from services.api.routes_session import hashing_pool
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT = 5.0


async def _live_connections(app: web.Application) -> AsyncIterator[None]:
    """Track open WebSockets and SSE streams for the app's lifetime; none may outlive it."""
    app[SOCKETS] = weakref.WeakSet()
    app[CLOSING] = asyncio.Event()
    settings = app[SETTINGS]
    app[FEEDS] = FeedCounts(settings.max_feeds_per_user, settings.max_feeds_per_key)
    yield
    await _close_live(app)


async def _close_live(app: web.Application) -> None:
    """Tell SSE streams to end and close every WebSocket with 1001 GOING_AWAY."""
    app[CLOSING].set()
    registry = app[SOCKETS]
    sockets = list(registry)
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in sockets),
        return_exceptions=True,
    )


def create_app(settings: ApiSettings, nbus: bus.Bus) -> web.Application:
    """The API application over an open bus (the caller owns and closes the bus)."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # CORS first: a preflight carries no credentials and is answered before auth looks for them.
        middlewares=[cors_middleware, error_middleware, auth_middleware, body_deadline_middleware],
    )
    app[SETTINGS] = settings
    app[BUS] = nbus
    app[MODEL_DEFAULTS] = ModelDefaults(nbus.js)
    app[LOG_END] = LogEnd(nbus.js)
    app[LEADERBOARDS] = LeaderboardCache()
    app[PUBLIC_ROUTES] = frozenset(route.name for route in ROUTES if route.public)
    app[OPENAI_ROUTES] = frozenset(route.name for route in ROUTES if route.dialect == "openai")
    app[OWN_BODY_ROUTES] = frozenset(
        route.name for route in ROUTES if route.request_media != "application/json"
    )
    app[OPENAPI] = msgspec.json.encode(build_openapi(ROUTES))
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler, name=route.name)
    app.cleanup_ctx.append(_live_connections)
    app.cleanup_ctx.append(hashing_pool)
    app.on_shutdown.append(_close_live)
    app.on_response_prepare.append(add_cors_headers)
    return app


async def run_api(settings: ApiSettings, nbus: bus.Bus, stop: asyncio.Event) -> None:
    """Serve the API on settings.host:port until `stop` is set, then shut down gracefully."""
    runner = web.AppRunner(create_app(settings, nbus), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await site.start()
        log.info("chatbus API listening on http://%s:%d", settings.host, settings.port)
        await stop.wait()
    finally:
        await runner.cleanup()
