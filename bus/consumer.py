"""A durable pull-consumer loop: fetch up to the free capacity, hand each message to a task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, MsgAlreadyAckdError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import FetchTimeoutError

from bus.declare import declare_consumer
from bus.errors import BusError, BusUnavailable
from schemas.streams import ConsumerSpec

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """One delivered message; the handler must ack, nak or term it once its effect is durable."""

    msg: Msg
    stream_seq: int
    attempt: int

    @property
    def data(self) -> bytes:
        """The payload."""
        return self.msg.data

    async def ack(self) -> None:
        """Done: the effect is durable."""
        await _answered("ack", self.msg.ack_sync())

    async def nak(self, delay: float | None = None) -> None:
        """Not done: redeliver (after `delay` seconds)."""
        await _answered("nak", self.msg.nak(delay=delay))

    async def in_progress(self) -> None:
        """Still working: reset the ack timer so the message is not redelivered."""
        await _answered("in_progress", self.msg.in_progress())

    async def term(self) -> None:
        """Never redeliver (poison message)."""
        await _answered("term", self.msg.term())


async def _answered(what: str, op: Awaitable[object]) -> None:
    """An ack of any kind, its failures as bus errors (the ack may or may not have landed)."""
    try:
        await op
    except MsgAlreadyAckdError as exc:
        raise BusError(f"{what}: the message was already acknowledged") from exc
    except (NatsError, ConnectionError) as exc:
        raise BusUnavailable(f"{what} unanswered: {exc!r}") from exc


Handler = Callable[[Delivery], Coroutine[Any, Any, None]]


async def pull_loop(
    js: JetStreamContext,
    spec: ConsumerSpec,
    handler: Handler,
    *,
    capacity: int,
    stop: asyncio.Event,
    fetch_timeout: float = 1.0,
) -> None:
    """Run `handler` for each message in its own task, at most `capacity` at once, until `stop`."""
    await declare_consumer(js, spec)
    sub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
    tasks: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            free = capacity - len(tasks)  # counts handlers still setting up, not just busy ones
            if free <= 0:
                await asyncio.sleep(0.005)
                continue
            try:
                # One at a time: nats-py's long poll for a batch of n holds the first message back until
                # n arrived or the timeout passed (up to `fetch_timeout` of latency for a lone request);
                # for one it returns at once, and the next fetch takes what is waiting without a poll.
                msgs = await sub.fetch(batch=1, timeout=fetch_timeout)
            except (TimeoutError, FetchTimeoutError, NatsTimeoutError):
                continue
            except ConnectionClosedError:
                return
            except Exception as exc:  # noqa: BLE001 - reconnecting, server restarting
                log.warning("fetch from %s failed: %s; retrying", spec.durable, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                meta = msg.metadata
                delivery = Delivery(msg=msg, stream_seq=meta.sequence.stream, attempt=meta.num_delivered)
                task = asyncio.create_task(handler(delivery))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        await sub.unsubscribe()
        for task in list(tasks):
            task.cancel()
