"""The typed keys under which the application keeps its shared resources."""

from __future__ import annotations

import asyncio
import weakref

from aiohttp import web

import bus
from identity.attempts import BlockedAddresses
from identity.hashing import HashingPool
from services.api.feed_limits import FeedCounts
from services.api.leaderboard_cache import LeaderboardCache
from services.api.log_end import LogEnd
from services.api.presence import ModelDefaults
from services.api.settings import ApiSettings

SETTINGS = web.AppKey("settings", ApiSettings)
BUS = web.AppKey("bus", bus.Bus)
PUBLIC_ROUTES: web.AppKey[frozenset[str]] = web.AppKey("public_routes")
OPENAI_ROUTES: web.AppKey[frozenset[str]] = web.AppKey("openai_routes")  # errors in OpenAI's shape
OWN_BODY_ROUTES: web.AppKey[frozenset[str]] = web.AppKey("own_body_routes")  # read their bodies themselves
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
CLOSING = web.AppKey("closing", asyncio.Event)
FEEDS = web.AppKey("feeds", FeedCounts)
OPENAPI = web.AppKey("openapi", bytes)
MODEL_DEFAULTS = web.AppKey("model_defaults", ModelDefaults)
HASHING = web.AppKey("hashing", HashingPool)  # argon2 off the event loop (identity.hashing)
BLOCKED = web.AppKey("blocked_addresses", BlockedAddresses)  # at their login limit (identity.attempts)
LOG_END = web.AppKey("log_end", LogEnd)
LEADERBOARDS = web.AppKey("leaderboards", LeaderboardCache)  # fitted leaderboards, by filters and votes
