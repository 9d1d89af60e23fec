"""Routes outside chats: liveness, readiness, the model list and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

import bus
from schemas.api import ModelList, StatusResponse
from schemas.queries import Checkpoints, CheckpointsAnswer
from schemas.streams import PROJECTOR_SERVICE
from schemas.subjects import service_endpoint
from services.api.errors import error_response, json_response
from services.api.keys import BUS, OPENAPI
from services.api.presence import group_models, live_workers

READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.StreamResponse:
    """The process is up."""
    return json_response(StatusResponse(status="ok"))


async def readyz(request: web.Request) -> web.StreamResponse:
    """NATS is connected and the projector answers `status`."""
    nbus = request.app[BUS]
    if not nbus.nc.is_connected:
        return error_response(503, "unavailable", "not connected to NATS", {"Retry-After": "1"})
    try:
        await bus.call(
            nbus.nc,
            service_endpoint(PROJECTOR_SERVICE, "status"),
            Checkpoints(),
            CheckpointsAnswer,
            timeout=READY_TIMEOUT,
        )
    except bus.ServiceError as exc:
        return error_response(
            503, "unavailable", f"the projector does not answer: {exc}", {"Retry-After": "1"}
        )
    return json_response(StatusResponse(status="ready"))


async def list_models(request: web.Request) -> web.StreamResponse:
    """The model aliases that live workers serve, with their load."""
    workers = await live_workers(request.app[BUS].js)
    return json_response(ModelList(data=group_models(workers)))


async def openapi(request: web.Request) -> web.StreamResponse:
    """This API's OpenAPI 3.1 document."""
    return web.Response(body=request.app[OPENAPI], content_type="application/json")
