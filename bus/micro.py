"""Serve and call NATS micro services (`nats micro ls` lists them) with msgspec bodies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.micro import ServiceConfig, add_service
from nats.micro.request import Request
from nats.micro.service import Service

from bus.errors import ServiceError

log = logging.getLogger(__name__)

T = TypeVar("T")
EndpointHandler = Callable[[bytes], Awaitable[bytes]]


async def serve(
    nc: Client, name: str, version: str, endpoints: dict[str, EndpointHandler], description: str = ""
) -> Service:
    """Start a micro service; each endpoint `x.y` answers on subject `<name>.x.y` (queue group shared)."""
    service = await add_service(nc, ServiceConfig(name=name, version=version, description=description))
    group = service.add_group(name=name)
    for endpoint, handler in endpoints.items():
        # Endpoint names allow no dots (nats micro); the subject keeps them: `chats.list` -> `chats_list`.
        await group.add_endpoint(name=endpoint.replace(".", "_"), subject=endpoint, handler=_wrap(handler))
    return service


def _wrap(handler: EndpointHandler) -> Callable[[Request], Awaitable[None]]:
    async def handle(request: Request) -> None:
        try:
            body = await handler(request.data)
        except ServiceError as exc:
            await request.respond_error(exc.code, exc.message)
            return
        except msgspec.ValidationError as exc:
            await request.respond_error("bad_request", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a service must answer, not die
            log.exception("endpoint failed")
            await request.respond_error("internal", f"{type(exc).__name__}: {exc}")
            return
        await request.respond(body)

    return handle


async def call(nc: Client, subject: str, body: Any, answer_type: type[T], timeout: float = 10.0) -> T:
    """Request a micro service endpoint and decode its answer; errors raise ServiceError."""
    try:
        reply = await nc.request(subject, msgspec.json.encode(body), timeout=timeout)
    except NoRespondersError as exc:
        raise ServiceError("unavailable", f"no service answers {subject}") from exc
    except NatsTimeoutError as exc:
        raise ServiceError("timeout", f"{subject} did not answer within {timeout}s") from exc
    headers = reply.headers or {}
    if "Nats-Service-Error-Code" in headers:
        raise ServiceError(headers["Nats-Service-Error-Code"], headers.get("Nats-Service-Error", ""))
    return msgspec.json.decode(reply.data, type=answer_type)
