"""Serve and call NATS micro services (`nats micro ls` lists them) with msgspec bodies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.micro import ServiceConfig, add_service
from nats.micro.request import Request
from nats.micro.service import Service

from bus.consumer import Handler, pull_loop
from bus.errors import BusError, BusUnavailable, ServiceError
from schemas.streams import ConsumerSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
EndpointHandler = Callable[[bytes], Awaitable[bytes]]
# Raw endpoints take bytes that are not JSON (an upload) with their metadata in the request headers.
RawEndpointHandler = Callable[[bytes, Mapping[str, str]], Awaitable[bytes]]


class Served:
    """A running micro service: stop() stops taking requests and lets those in hand finish."""

    def __init__(self, service: Service, tasks: set[asyncio.Task[None]]) -> None:
        self.service = service
        self.tasks = tasks

    async def stop(self, timeout: float = 30.0) -> None:
        """Unsubscribe, then wait up to `timeout` for requests being handled (cancel the rest).

        BusUnavailable when the connection is gone (then nothing more arrives anyway)."""
        try:
            await self.service.stop()
        except (NatsError, ConnectionError) as exc:
            raise BusUnavailable(f"stopping the service: {exc!r}") from exc
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=timeout)
            for task in late:
                task.cancel()


async def serve(
    nc: Client,
    name: str,
    version: str,
    endpoints: dict[str, EndpointHandler],
    description: str = "",
    *,
    raw_endpoints: dict[str, RawEndpointHandler] | None = None,
    concurrency: int = 1,
) -> Served:
    """Start a micro service; each endpoint `x.y` answers on subject `<name>.x.y` (queue group shared).

    With `concurrency` > 1 each endpoint handles up to that many requests at once (nats-py otherwise
    runs one subscription's callbacks one after another). A request only leaves nats-py's queue when
    a slot is free, so the subscription's pending limits still bound what waits.
    """
    service = await add_service(nc, ServiceConfig(name=name, version=version, description=description))
    group = service.add_group(name=name)
    handlers: dict[str, RawEndpointHandler] = {
        **{endpoint: _ignore_headers(handler) for endpoint, handler in endpoints.items()},
        **(raw_endpoints or {}),
    }
    tasks: set[asyncio.Task[None]] = set()
    for endpoint, handler in handlers.items():
        slots = asyncio.Semaphore(concurrency) if concurrency > 1 else None
        # Endpoint names allow no dots (nats micro); the subject keeps them: `chats.list` -> `chats_list`.
        await group.add_endpoint(
            name=endpoint.replace(".", "_"), subject=endpoint, handler=_wrap(handler, slots, tasks)
        )
    return Served(service, tasks)


def _ignore_headers(handler: EndpointHandler) -> RawEndpointHandler:
    async def handle(data: bytes, headers: Mapping[str, str]) -> bytes:
        return await handler(data)

    return handle


def _header_safe(text: str) -> str:
    """Text that can travel in a NATS header (one line, bounded)."""
    return " ".join(text.split())[:500]


def _wrap(
    handler: RawEndpointHandler, slots: asyncio.Semaphore | None, tasks: set[asyncio.Task[None]]
) -> Callable[[Request], Awaitable[None]]:
    async def handle(request: Request) -> None:
        if slots is None:
            await answer(request)
            return
        await slots.acquire()  # the next request waits in nats-py's queue, not in ours
        task = asyncio.create_task(answer(request))
        tasks.add(task)
        task.add_done_callback(finished)

    def finished(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        slots.release()  # type: ignore[union-attr]  # only tasks of a slotted endpoint get here

    async def answer(request: Request) -> None:
        try:
            body = await handler(request.data, request.headers or {})
        except ServiceError as exc:
            await request.respond_error(exc.code, _header_safe(exc.message))
            return
        except msgspec.ValidationError as exc:
            await request.respond_error("bad_request", _header_safe(str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - a service must answer, not die
            log.exception("endpoint failed")
            await request.respond_error("internal", _header_safe(f"{type(exc).__name__}: {exc}"))
            return
        await request.respond(body)

    return handle


async def call(nc: Client, subject: str, body: Any, answer_type: type[T], timeout: float = 10.0) -> T:
    """Request a micro service endpoint and decode its answer; errors raise ServiceError."""
    return await call_raw(nc, subject, msgspec.json.encode(body), answer_type, timeout=timeout)


async def call_raw(
    nc: Client,
    subject: str,
    data: bytes,
    answer_type: type[T],
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> T:
    """Request an endpoint with raw bytes (and headers), decode its JSON answer; errors raise ServiceError."""
    try:
        reply = await nc.request(subject, data, timeout=timeout, headers=dict(headers) if headers else None)
    except NoRespondersError as exc:
        raise ServiceError("unavailable", f"no service answers {subject}") from exc
    except NatsTimeoutError as exc:
        raise ServiceError("timeout", f"{subject} did not answer within {timeout}s") from exc
    headers = reply.headers or {}
    if "Nats-Service-Error-Code" in headers:
        raise ServiceError(headers["Nats-Service-Error-Code"], headers.get("Nats-Service-Error", ""))
    return msgspec.json.decode(reply.data, type=answer_type)


async def serve_consumers(
    nc: Client,
    js: JetStreamContext,
    name: str,
    version: str,
    description: str,
    endpoints: Mapping[str, EndpointHandler],
    consumers: Sequence[ConsumerSpec],
    handler: Handler,
    *,
    capacity: int,
    stop: asyncio.Event,
) -> None:
    """A micro service answering `endpoints` while it pulls `consumers` into `handler`, at most `capacity`
    messages of each at once, until `stop`: the shape of the services that react to the log."""
    service = await serve(nc, name, version, dict(endpoints), description=description)
    try:
        await asyncio.gather(
            *(pull_loop(js, spec, handler, capacity=capacity, stop=stop) for spec in consumers)
        )
    finally:
        with contextlib.suppress(BusError):
            await service.stop()
