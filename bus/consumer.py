"""Durable pull-consumer loops: fetch up to the free capacity, hand each message to a task; several
consumers (lanes) may share one pool of slots, each taking only below its own limit.

A lane's fetch is a long poll: while it waits, the other lanes may fill the pool. So the limit is checked
twice, before the fetch and again when its message arrives: a message that finds the pool at its lane's
limit is handed back at once (nak, no delay: another puller, or this one once a slot frees, takes it).
The pool never holds more than the highest limit, and a lower limit is never exceeded. A hand-back is a
delivery like any other (JetStream counts it): it happens only in that race."""

from __future__ import annotations

import asyncio
import contextlib
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


@dataclass(frozen=True)
class PullLane:
    """One consumer pulled into a shared pool of slots: it takes a message only while fewer than `limit`
    of the pool's slots are busy (a lower limit leaves the rest to the lanes with a higher one)."""

    spec: ConsumerSpec
    handler: Handler
    limit: int | Callable[[], int]  # or asked each time: a lane whose share changes (a batch yielding)
    # Fetch every free slot's message in one request: for a backlog (a batch's lines), where one request per
    # message would limit the rate; a lone message may then wait up to the fetch timeout (see _pull_lane).
    fetch_many: bool = False

    def slots(self) -> int:
        """Busy slots below which this lane takes a message now."""
        return self.limit() if callable(self.limit) else self.limit


class _Pool:
    """The slots lanes share: one task per message being handled (setting up, or busy)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()

    def may_take(self, lane: PullLane) -> bool:
        """Whether `lane` may ask for a message now, or start one it got: fewer than its limit of tasks
        run (checked again on arrival: the pool may have filled during the fetch's long poll)."""
        return len(self.tasks) < lane.slots()

    async def wait_change(self) -> None:
        """Until a handler ends or a fetch comes back (or a while passes, to look at `stop` again)."""
        self.changed.clear()  # no await since the caller looked: nothing is missed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), 0.5)

    def notify(self) -> None:
        """Wake the lanes waiting for a slot."""
        self.changed.set()


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
    await pull_lanes(js, [PullLane(spec, handler, capacity)], stop=stop, fetch_timeout=fetch_timeout)


async def pull_lanes(
    js: JetStreamContext,
    lanes: list[PullLane],
    *,
    stop: asyncio.Event,
    fetch_timeout: float = 1.0,
) -> None:
    """Pull every lane into one pool of slots until `stop`: each message's handler in its own task; a lane
    fetches only while fewer than its `limit` tasks run (see PullLane)."""
    pool = _Pool()
    try:
        await asyncio.gather(*(_pull_lane(js, lane, pool, stop, fetch_timeout) for lane in lanes))
    finally:
        for task in list(pool.tasks):
            task.cancel()


async def _pull_lane(
    js: JetStreamContext, lane: PullLane, pool: _Pool, stop: asyncio.Event, fetch_timeout: float
) -> None:
    spec = lane.spec
    await declare_consumer(js, spec)
    sub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)

    def ended(task: asyncio.Task[None]) -> None:
        pool.tasks.discard(task)
        pool.notify()

    try:
        while not stop.is_set():
            if not pool.may_take(lane):
                await pool.wait_change()
                continue
            try:
                # One at a time, unless the lane fetches many: nats-py's long poll for a batch of n holds
                # the first message back until n arrived or the timeout passed (up to `fetch_timeout` of
                # latency for a lone request); for one it returns at once, and the next fetch takes what
                # is waiting without a poll. A backlog comes back at once either way (no-wait first).
                free = lane.slots() - len(pool.tasks) if lane.fetch_many else 1
                msgs = await sub.fetch(batch=max(free, 1), timeout=fetch_timeout)
            except (TimeoutError, FetchTimeoutError, NatsTimeoutError):
                continue
            except ConnectionClosedError:
                return
            except Exception as exc:  # noqa: BLE001 - reconnecting, server restarting
                log.warning("fetch from %s failed: %s; retrying", spec.durable, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                if not pool.may_take(lane):  # the other lanes filled the pool during the poll
                    await _hand_back(msg, spec.durable)
                    continue
                meta = msg.metadata
                delivery = Delivery(msg=msg, stream_seq=meta.sequence.stream, attempt=meta.num_delivered)
                task = asyncio.create_task(lane.handler(delivery))
                pool.tasks.add(task)
                task.add_done_callback(ended)
    finally:
        await sub.unsubscribe()


async def _hand_back(msg: Msg, durable: str) -> None:
    """Return a message no slot is free for, to be delivered again at once (to whoever has room)."""
    try:
        await msg.nak()
    except (NatsError, ConnectionError) as exc:  # unanswered: it is redelivered after ack_wait
        log.warning("handing a message of %s back failed: %s", durable, exc)
