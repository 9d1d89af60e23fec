"""The typed keys under which the application keeps its shared resources."""

from __future__ import annotations

import asyncio
import weakref

from aiohttp import web

import bus
from services.api.log_end import LogEnd
from services.api.presence import ModelDefaults
from services.api.settings import ApiSettings

SETTINGS = web.AppKey("settings", ApiSettings)
BUS = web.AppKey("bus", bus.Bus)
PUBLIC_ROUTES: web.AppKey[frozenset[str]] = web.AppKey("public_routes")
OPENAI_ROUTES: web.AppKey[frozenset[str]] = web.AppKey("openai_routes")  # errors in OpenAI's shape
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
CLOSING = web.AppKey("closing", asyncio.Event)
OPENAPI = web.AppKey("openapi", bytes)
MODEL_DEFAULTS = web.AppKey("model_defaults", ModelDefaults)
LOG_END = web.AppKey("log_end", LogEnd)
