"""Interactive first on the bus: a worker's two lanes, and its engine's health.

A worker pulls two durable consumers of its alias into one pool: the interactive lane (`worker-<alias>`:
people chatting, OpenAI calls, jobs) may take a message while fewer than `capacity` requests are its own or
batch lines in the engine; a batch line (`worker-<alias>-batch`) runs in the engine only while fewer than
`capacity - CHATBUS_BATCH_RESERVE` requests run there. A batch fills the idle slots, and a person arriving
finds one free. While people are chatting (one asked within `CHATBUS_BATCH_YIELD_SECONDS`), at most
`CHATBUS_BATCH_BUSY_SLOTS` batch lines run (default half the capacity): a person's first token waits for
the engine step under way, and a narrower batch makes that step shorter; with nobody asking, the batch
widens again to every slot but the reserve.

The batch lane takes up to half as many lines again as may run (`batch_prefetch`), fetched together: lines
being set up (their chat read, their prompt rendered), writing their end, or held ready in the worker's
gate (gate.py), which starts one in the engine's very next step after a line ends. Without them a slot
stayed empty for the trip over the bus, a step or more per line: with short lines (16 tokens) a tenth of a
batch's throughput.

A lane's fetch waits up to a second for a message (the batch lane's, fetching several, may hold the first
that long while it waits for more); one that arrives after the other lane filled the pool (a batch line
once people hold the free slots) is handed back at once (bus/consumer.py), so the engine never runs more
than `capacity` requests nor a batch line in a reserved slot. A worker of capacity 1 can reserve nothing: it
runs a batch line when idle, and a person arriving meanwhile waits for that line to end (or for another
worker). Batch lines are submitted to the engine as background work, which its scheduler pauses for a
person's prompt (priority.py).

A worker whose engine's generation thread died would fail every reply it took (and burn the attempts of
every job). It stops taking work instead: its replies go back to the queue (nak), and it exits non-zero,
so a supervisor (`chatbus up`, systemd, k8s) starts it again with a fresh engine. Each hand-back is a
delivery JetStream counts: a request that kills the engine every time it runs is given up after
`max_deliver` deliveries, and every request that was running beside it on each of those crashes lost an
attempt too (the engine cannot tell which request killed it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import bus
from bus.consumer import Handler
from schemas.streams import ConsumerSpec, batch_worker_consumer, worker_consumer
from services.llm_worker.engine import Engine
from services.llm_worker.gate import BackgroundGate
from services.llm_worker.settings import WorkerSettings

log = logging.getLogger(__name__)
ENGINE_CHECK_EVERY = 0.5  # seconds between looks at the engine's generation thread


class EngineDied(RuntimeError):
    """The engine's generation thread is gone: this worker can serve nothing more."""


def lane_specs(settings: WorkerSettings) -> tuple[ConsumerSpec, ConsumerSpec]:
    """The interactive and the batch consumer of the worker's alias."""
    alias, ack_wait, max_deliver = settings.alias, settings.ack_wait, settings.max_deliver
    return worker_consumer(alias, ack_wait, max_deliver), batch_worker_consumer(alias, ack_wait, max_deliver)


def batch_limit(settings: WorkerSettings) -> int:
    """Busy slots below which the batch lane takes a line: capacity minus the reserve, at least 1 (a worker
    of capacity 1 would otherwise never run a batch; it has no reserve: see the module's docstring)."""
    return max(settings.capacity - settings.batch_reserve, 1)


class BatchWidth:
    """How many batch lines the worker runs now: `batch_limit` with nobody asking, at most the busy
    width for `batch_yield_seconds` after a person's request (see the module's docstring)."""

    def __init__(self, settings: WorkerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.full = batch_limit(settings)
        busy = settings.batch_busy_slots or settings.capacity // 2
        self.busy = max(min(busy, self.full), 1)
        self.yield_seconds = settings.batch_yield_seconds
        self.clock = clock
        self.person_at: float | None = None

    def note_person(self) -> None:
        """A person's request (the interactive lane) came in now."""
        self.person_at = self.clock()

    def limit(self) -> int:
        asked = self.person_at
        if asked is not None and self.clock() - asked < self.yield_seconds:
            return self.busy
        return self.full


def batch_prefetch(settings: WorkerSettings) -> int:
    """Batch lines the lane takes beyond those that may run: being set up, writing their end, or held ready
    in the gate (gate.py). Half the slots the batch may use (bench/bench_batch.py: with it, all 32 stayed
    busy while a batch ran alone); none for a worker of capacity 2 or less (it would keep a line from its
    idle neighbours)."""
    return batch_limit(settings) // 2


def worker_lanes(
    settings: WorkerSettings, handler: Handler, width: BatchWidth, gate: BackgroundGate
) -> list[bus.PullLane]:
    """The two lanes, interactive first (see the module's docstring). The batch lane takes up to
    `batch_prefetch` lines more than `width` lets run; `gate` holds those, and they leave a person's slot
    free."""
    interactive, batch = lane_specs(settings)
    prefetch = batch_prefetch(settings)
    lines = 0  # batch lines this worker holds (setting up, in the engine, held, writing their end)

    async def person(delivery: bus.Delivery) -> None:
        width.note_person()
        await handler(delivery)

    async def line(delivery: bus.Delivery) -> None:
        nonlocal lines
        lines += 1
        try:
            await handler(delivery)
        finally:
            lines -= 1

    return [
        # A person's request counts the batch lines in the engine only: one free slot there is enough.
        bus.PullLane(interactive, person, lambda: settings.capacity + lines - gate.background_running()),
        bus.PullLane(batch, line, lambda: width.limit() + prefetch, fetch_many=True),
    ]


async def watch_engine(engine: Engine, stop: asyncio.Event, halt: asyncio.Event) -> None:
    """Set `halt` when `stop` is set or the engine's generation thread died (then log why)."""
    while not stop.is_set():
        if not engine.alive():
            log.error("the engine's generation thread died: handing the replies back and exiting")
            break
        try:
            await asyncio.wait_for(stop.wait(), ENGINE_CHECK_EVERY)
        except TimeoutError:
            pass
    halt.set()
