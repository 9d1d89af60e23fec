"""Run the batch expander: each created batch's lines become jobs, a cancelled batch's open lines are
cancelled (docs/batches.md).

It pulls `batch.*.created` and `batch.*.cancelled` from the durable consumers `batches-created` and
`batches-cancelled` (schemas/streams.py). A created batch's checked lines (object store `batch_inputs`)
become, a window at a time, each line's chat (a fenced create: one chat a line), turns and reply request
(schemas/batch_decide.py: ids derived from the batch and the line, so a restarted expander makes the
same events and the log's dedup ids keep them once). A line whose chat exists already (made by an
expander that stopped mid-way) gets only what it misses. The expander reports progress between windows,
stops at the next window once the batch is cancelled, appends `batch.expanded` and then acknowledges.
A cancel waits until the batch is expanded, then appends `reply.cancelled` (dedup id) for each line not
yet ended: a worker skips a cancelled queued request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec

import bus
import schemas
from bus import Bus, Delivery, JetStream
from logtools.job_view import read_job
from schemas.batch import BatchCreated, BatchExpanded
from schemas.batch_decide import LineEvent, line_chat_id, line_events, line_reply_id
from schemas.batch_lines import PlanLine, decode_plan
from schemas.chat import ReplyCancelled
from schemas.streams import (
    BATCH_CONSUMERS,
    BATCH_INPUTS_OBJECTS,
    BATCHES,
    BATCHES_SERVICE,
    CHAT,
    ConsumerSpec,
)
from schemas.subjects import BatchSubject, batch_event, chat_event, one_chat, parse_batch_subject

log = logging.getLogger(__name__)
VERSION = "0.1.0"
RETRY_AFTER = 2.0  # seconds before a batch event that could not be handled (NATS away) comes again
WAIT_EXPANDED = 1.0  # seconds before a cancel looks again whether its batch's expansion has stopped
WINDOW = 128  # lines appended per round (their events pipelined), with a progress report between
CANCEL_WINDOW = 32  # lines whose state a cancel reads at once
CAPACITY = 4  # batch events handled at once


class BatchesStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What `batches.status` answers: work done since the process started."""

    expanded: int  # batches made jobs
    lines: int  # lines made jobs
    cancelled: int  # line jobs cancelled
    in_flight: int  # batch events being handled now


class Expander:
    """The batches service's state in one process."""

    def __init__(self, nbus: Bus, window: int = WINDOW) -> None:
        self.js: JetStream = nbus.js
        self.window = window
        self.expanded = self.lines = self.cancelled = self.in_flight = 0

    async def handle(self, delivery: Delivery) -> None:
        """Expand a created batch or cancel a cancelled one; acked once its effect is in the log."""
        subject = parse_batch_subject(delivery.msg.subject)
        if not isinstance(subject, BatchSubject) or subject.kind not in ("created", "cancelled"):
            await delivery.ack()
            return
        self.in_flight += 1
        try:
            created = await self._created(subject.batch_id)
            if created is None:
                await delivery.ack()  # erased
            elif subject.kind == "created":
                await self._expand(delivery, created)
            else:
                await self._cancel(delivery, created)
        except (bus.BusError, TimeoutError) as exc:  # NATS away: the event comes again, the log says where
            log.warning("batch %s: not handled (%r); again in %g s", subject.batch_id, exc, RETRY_AFTER)
            with contextlib.suppress(bus.BusError):
                await delivery.nak(delay=RETRY_AFTER)
        # A poison event (its data cannot be used): coming again would fail again, every ack wait, forever.
        except (ValueError, TypeError, KeyError, msgspec.MsgspecError):
            log.exception("batch %s: %s event not handled; dropped", subject.batch_id, subject.kind)
            with contextlib.suppress(bus.BusError):
                await delivery.term()
        finally:
            self.in_flight -= 1

    async def _created(self, batch_id: str) -> BatchCreated | None:
        msg = await bus.last_msg(self.js, BATCHES.name, batch_event(batch_id, "created"))
        event = None if msg is None else bus.decode_one(msg.subject, msg.data)
        return event if isinstance(event, BatchCreated) else None

    async def _has(self, batch_id: str, kind: str) -> bool:
        subject = batch_event(batch_id, kind)  # type: ignore[arg-type]
        return await bus.last_msg(self.js, BATCHES.name, subject) is not None

    async def _expand(self, delivery: Delivery, created: BatchCreated) -> None:
        """Make every line a job (those made already only completed), then `batch.expanded`; stop early
        once the batch is cancelled or its window has passed, or when its plan cannot be read."""
        batch_id = created.batch_id
        if await self._has(batch_id, "expanded"):
            await delivery.ack()
            return
        data = await bus.get_object(self.js, BATCH_INPUTS_OBJECTS.bucket, created.input_object or batch_id)
        try:
            if data is None:
                raise ValueError("its checked lines are missing from the object store")
            plan = decode_plan(data)
        except (ValueError, msgspec.MsgspecError) as exc:  # nothing to make: the batch fails, once
            log.error("batch %s: not expanded: %s", batch_id, exc)
            await self._expanded(delivery, created, 0, error=f"its lines could not be read: {exc}")
            return
        made, expired, error = 0, False, ""
        for start in range(0, len(plan), self.window):
            if not await self._has(batch_id, "created"):
                log.info("batch %s: erased mid-way; %d lines were made jobs", batch_id, made)
                await delivery.ack()
                return
            if await self._has(batch_id, "cancelled"):
                made = await self._made_before(created, plan, start)
                break
            if created.deadline_at is not None and schemas.now() >= created.deadline_at:
                made, expired = await self._made_before(created, plan, start), True
                break
            try:
                await self._append_lines(created, plan[start : start + self.window])
            except (bus.BusError, TimeoutError):
                raise
            except Exception as exc:  # a line the expander cannot make: the batch fails from this window on
                log.exception("batch %s: lines from %d on not made", batch_id, start)
                made, error = start, f"lines from {start + 1} on could not be made jobs: {exc!r}"
                break
            made = min(len(plan), start + self.window)
            self.lines += made - start
            await delivery.in_progress()
        await self._expanded(delivery, created, made, expired=expired, error=error)
        log.info("batch %s: %d of %d lines made jobs", batch_id, made, len(plan))

    async def _expanded(
        self, delivery: Delivery, created: BatchCreated, made: int, *, expired: bool = False, error: str = ""
    ) -> None:
        batch_id = created.batch_id
        done = BatchExpanded(
            event_id=f"{batch_id}.expanded",
            batch_id=batch_id,
            at=schemas.now(),
            lines=made,
            expired=expired,
            error=error[:1000],
        )
        await bus.append_event(self.js, done)
        self.expanded += 1
        await delivery.ack()

    async def _made_before(self, created: BatchCreated, plan: list[PlanLine], start: int) -> int:
        """How many lines an earlier expander of this batch made (a process that stopped mid-way): lines
        are made in order, so the chats that exist are a prefix. The last window it was making is
        completed (a chat without its request would never end), so exactly that many lines are jobs."""
        low, high = start, len(plan)  # the first line whose chat does not exist is in [low, high]
        while low < high:
            middle = (low + high) // 2
            if await bus.last_msg(
                self.js, CHAT.name, chat_event(line_chat_id(created.batch_id, middle), "created")
            ):
                low = middle + 1
            else:
                high = middle
        if low > start:
            await self._append_lines(created, plan[max(start, low - self.window) : low])
        return low

    async def _append_lines(self, created: BatchCreated, lines: list[PlanLine]) -> None:
        """Append a window of lines: each chat's fenced create, then the rest of them all in one pipeline."""
        at = schemas.now()
        rest: list[LineEvent] = []
        for line in lines:
            events = line_events(created, line, at)
            try:
                appended = await bus.append_event(self.js, events[0], expected_subject_seq=0)
                fresh = not appended.duplicate
            except bus.ConcurrencyConflict:
                fresh = False
            rest += events[1:] if fresh else await self._missing(events)
        if rest:
            await bus.append_events(self.js, list(rest), timeout=30.0)

    async def _missing(self, events: list[LineEvent]) -> list[LineEvent]:
        """Of a line's events, those its chat does not hold yet (its chat exists: made before a restart)."""
        held = {
            getattr(bus.decode_one(msg.subject, msg.data), "event_id", None)
            for msg in await bus.read_direct(self.js, CHAT.name, one_chat(events[0].chat_id))
        }
        return [event for event in events[1:] if event.event_id not in held]

    async def _cancel(self, delivery: Delivery, created: BatchCreated) -> None:
        """Once the batch's expansion has stopped, cancel each of its lines not yet ended."""
        batch_id = created.batch_id
        if not await self._has(batch_id, "expanded"):
            await delivery.nak(delay=WAIT_EXPANDED)  # the expander stops at its next window
            return
        for start in range(0, created.lines, CANCEL_WINDOW):
            indexes = range(start, min(created.lines, start + CANCEL_WINDOW))
            await asyncio.gather(*(self._cancel_line(batch_id, i, created.owner_id) for i in indexes))
            await delivery.in_progress()
        await delivery.ack()

    async def _cancel_line(self, batch_id: str, index: int, by: str) -> None:
        chat_id, reply_id = line_chat_id(batch_id, index), line_reply_id(batch_id, index)
        job = await read_job(self.js, chat_id, reply_id)
        if job.request is None or job.state.finished_at is not None or job.state.cancel_asked:
            return
        event = ReplyCancelled(
            event_id=f"{reply_id}.batchcancel", chat_id=chat_id, at=schemas.now(), reply_id=reply_id, by=by
        )
        await bus.append_event(self.js, event)
        self.cancelled += 1

    def status(self) -> BatchesStatus:
        """Counts for `batches.status`."""
        return BatchesStatus(
            expanded=self.expanded, lines=self.lines, cancelled=self.cancelled, in_flight=self.in_flight
        )


async def run_batches(
    nbus: Bus,
    stop: asyncio.Event,
    *,
    capacity: int = CAPACITY,
    consumers: tuple[ConsumerSpec, ...] = BATCH_CONSUMERS,
    window: int = WINDOW,
) -> None:
    """Expand created batches and cancel cancelled ones until `stop` is set; `batches.status` answers."""
    expander = Expander(nbus, window)

    async def status(data: bytes) -> bytes:
        return msgspec.json.encode(expander.status())

    log.info("batches running (%d batch events at once)", capacity)
    await bus.serve_consumers(
        nbus.nc,
        nbus.js,
        BATCHES_SERVICE,
        VERSION,
        "chatbus batches: lines to jobs",
        {"status": status},
        consumers,
        expander.handle,
        capacity=capacity,
        stop=stop,
    )
