"""Run the conductor: after every event of a chat with bots, give the next turn the floor allows.

It pulls every chat event from the durable consumer `conductor` (schemas/streams.py), folds it into its
cache of the chat (services/conductor/cache.py), asks the floor what happens next (schemas/floor.py)
and appends the reply request fenced on the chat's last sequence: if anything happened in the chat
since, the append fails, the chat is read again and decided again. An event is acknowledged only once
its turn is appended (or nothing is to be done), so a conductor killed mid-decision leaves the event
to be delivered again, and the fence keeps two conductors, or a restarted one, from doubling a turn.

One task per chat at a time (events of a chat are handled in delivery order); a turn that must wait
(the floor's or the bot's delay) is waited for apart, holding its event and telling the server it is
still in progress, so other chats go on meanwhile and any newer event of that chat decides again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

import bus
import schemas
from bus import Bus, Delivery
from logtools.chat_log import append_decision
from schemas.chat import ChatEvent
from schemas.chat_state import ChatState
from schemas.floor import Idle, Wait, next_turn
from schemas.streams import CONDUCTOR_CONSUMER, CONDUCTOR_SERVICE, ConsumerSpec
from schemas.subjects import ChatSubject, FeedbackSubject, ReplySubject, parse_chat_subject
from services.conductor.cache import NO_BOTS, ChatCache, NoBots

log = logging.getLogger(__name__)
VERSION = "0.1.0"
DECIDE_ATTEMPTS = 5  # fenced appends that find the chat changed, before the event is left for later
RETRY_AFTER = 1.0  # seconds before an event that could not be handled is delivered again
CAPACITY = 64  # events handled at once (of different chats; one chat's wait in line)


class ConductorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What `conductor.status` answers: the chats held, and the turns given since the process started."""

    chats: int  # chats with bots held in the cache
    quiet_chats: int  # chats without bots it knows of
    turns: int  # reply requests appended
    conflicts: int  # appends refused by the fence (the chat changed; decided again)
    reads: int  # whole chats read from the log
    gaps: int  # times the delivery sequence skipped (another conductor got events): the cache was dropped
    waiting: int  # chats whose next turn waits for its delay


@dataclass
class _ChatLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Conductor:
    """The conductor's state in one process: its cache, the chats being handled, the waits."""

    def __init__(self, nbus: Bus, clock: Callable[[], datetime] = schemas.now) -> None:
        self.js = nbus.js
        self.clock = clock
        self.cache = ChatCache(nbus.js)
        self.locks: dict[str, _ChatLock] = {}
        self.waits: dict[str, asyncio.Event] = {}  # chat -> wakes its waiting turn to decide again
        self.wait_tasks: set[asyncio.Task[None]] = set()
        self.last_delivery = 0  # the consumer's delivery sequence of the last event this process got
        self.turns = self.conflicts = self.gaps = 0

    async def handle(self, delivery: Delivery) -> None:
        """Handle one chat event; acknowledged once its consequence is in the log (or there is none)."""
        self._note_gap(delivery)  # before any await: tasks start in delivery order
        subject = parse_chat_subject(delivery.msg.subject)
        if subject is None:
            await delivery.ack()  # nothing a chat is made of
            return
        chat_id = subject.chat_id
        try:
            async with self._chat(chat_id):
                wait = await self._on_event(chat_id, delivery, subject)
                waiting = self.waits.get(chat_id)
                if wait is not None and waiting is None:
                    self._start_wait(chat_id, delivery, wait)
                elif waiting is not None:
                    waiting.set()  # the waiting turn decides again on this newer state
                    if wait is not None:
                        await delivery.ack()
        except Exception as exc:  # noqa: BLE001 - NATS away, a server restarting: try the event again later
            log.warning(
                "chat %s: event %d not handled (%r); again in %g s",
                chat_id,
                delivery.stream_seq,
                exc,
                RETRY_AFTER,
            )
            with contextlib.suppress(bus.BusError):
                await delivery.nak(delay=RETRY_AFTER)

    def _note_gap(self, delivery: Delivery) -> None:
        """Drop the cache when a delivery went elsewhere (another conductor): a state may lack its event."""
        sequence = delivery.msg.metadata.sequence.consumer
        if self.last_delivery and sequence != self.last_delivery + 1:
            self.gaps += 1
            self.cache.forget_all()
        self.last_delivery = sequence

    async def _on_event(
        self, chat_id: str, delivery: Delivery, subject: ChatSubject | ReplySubject | FeedbackSubject
    ) -> Wait | None:
        """Fold the event and decide; a Wait when the next turn is not due yet (the event is not acked)."""
        entry = self.cache.get(chat_id)
        joined = isinstance(subject, ChatSubject) and subject.kind == "participant.joined"
        if isinstance(entry, NoBots) and not joined:
            await delivery.ack()
            return None
        if not isinstance(entry, ChatState):
            if not joined and not await self.cache.has_bots(chat_id):
                self.cache.put(chat_id, NO_BOTS)
                await delivery.ack()
                return None
            await self.cache.read(chat_id)
        else:
            _fold(entry, delivery)
        return await self._decide(chat_id, delivery)

    async def _decide(self, chat_id: str, delivery: Delivery) -> Wait | None:
        """Give the next turn if one is due (fenced; read again and decide again on a conflict)."""
        for _ in range(DECIDE_ATTEMPTS):
            entry = self.cache.get(chat_id)
            state = entry if isinstance(entry, ChatState) else await self.cache.read(chat_id)
            turn = next_turn(state, self.clock())
            if isinstance(turn, Wait):
                return turn
            if isinstance(turn, Idle):
                await delivery.ack()
                return None
            try:
                appended = await append_decision(self.js, turn.decision)
            except bus.ConcurrencyConflict:
                self.conflicts += 1
                await self.cache.read(chat_id)
                continue
            # The fence held: nothing came between the state and this request, so the state stays whole.
            state.apply(appended[0].seq, turn.request)
            self.turns += 1
            name = state.participants[turn.speaker].name
            log.info("chat %s: turn %s to %s (seq %d)", chat_id, turn.request.reply_id, name, appended[0].seq)
            await delivery.ack()
            return None
        log.warning("chat %s kept changing while deciding; again in %g s", chat_id, RETRY_AFTER)
        await delivery.nak(delay=RETRY_AFTER)
        return None

    def _start_wait(self, chat_id: str, delivery: Delivery, wait: Wait) -> None:
        self.waits[chat_id] = asyncio.Event()
        task = asyncio.create_task(self._wait(chat_id, delivery, wait), name=f"conductor-wait-{chat_id}")
        self.wait_tasks.add(task)
        task.add_done_callback(self.wait_tasks.discard)

    async def _wait(self, chat_id: str, delivery: Delivery, wait: Wait | None) -> None:
        """Hold the event until the turn is due (or the chat changes), then decide again."""
        wake = self.waits[chat_id]
        progress_every = CONDUCTOR_CONSUMER.ack_wait / 3
        try:
            while wait is not None:
                left = (wait.until - self.clock()).total_seconds()
                if left > 0:
                    try:
                        await asyncio.wait_for(wake.wait(), min(left, progress_every))
                    except TimeoutError:
                        if left > progress_every:
                            await delivery.in_progress()
                            continue
                wake.clear()
                async with self._chat(chat_id):
                    wait = await self._decide(chat_id, delivery)
        except Exception as exc:  # noqa: BLE001 - as in handle: the event comes again
            log.warning("chat %s: waiting turn not given (%r); again in %g s", chat_id, exc, RETRY_AFTER)
            with contextlib.suppress(bus.BusError):
                await delivery.nak(delay=RETRY_AFTER)
        finally:
            self.waits.pop(chat_id, None)

    @contextlib.asynccontextmanager
    async def _chat(self, chat_id: str) -> AsyncIterator[None]:
        """Hold the chat: its events are handled one at a time, in the order they were delivered."""
        held = self.locks.setdefault(chat_id, _ChatLock())
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if held.users == 0:
                del self.locks[chat_id]

    def status(self) -> ConductorStatus:
        """Counts for `conductor.status`."""
        entries = self.cache.entries.values()
        with_bots = sum(isinstance(entry, ChatState) for entry in entries)
        return ConductorStatus(
            chats=with_bots,
            quiet_chats=len(self.cache.entries) - with_bots,
            turns=self.turns,
            conflicts=self.conflicts,
            reads=self.cache.reads,
            gaps=self.gaps,
            waiting=len(self.waits),
        )

    async def close(self) -> None:
        """Stop the waits (their events are not acked: they come again to whoever runs next)."""
        for task in list(self.wait_tasks):
            task.cancel()
        await asyncio.gather(*self.wait_tasks, return_exceptions=True)


def _fold(state: ChatState, delivery: Delivery) -> None:
    """Fold a delivered event into the chat's state, unless the state already holds it."""
    if delivery.stream_seq <= state.last_seq:
        return
    subject = delivery.msg.subject
    event = bus.decode_one(subject, delivery.data, where=f"CHAT seq {delivery.stream_seq}")
    if isinstance(event, ChatEvent):
        state.apply(delivery.stream_seq, event)
    else:  # a newer version's event: it still moves the fence
        state.skip(delivery.stream_seq, subject)


async def run_conductor(
    nbus: Bus, stop: asyncio.Event, *, capacity: int = CAPACITY, consumer: ConsumerSpec = CONDUCTOR_CONSUMER
) -> None:
    """Give turns in chats with bots until `stop` is set; `conductor.status` answers meanwhile."""
    conductor = Conductor(nbus)

    async def status(data: bytes) -> bytes:
        return msgspec.json.encode(conductor.status())

    service = await bus.serve(
        nbus.nc, CONDUCTOR_SERVICE, VERSION, {"status": status}, description="chatbus conductor: bots' turns"
    )
    log.info("conductor running (%d events at once)", capacity)
    try:
        await bus.pull_loop(nbus.js, consumer, conductor.handle, capacity=capacity, stop=stop)
    finally:
        await conductor.close()
        with contextlib.suppress(bus.BusError):  # the connection is gone: nothing more arrives
            await service.stop()
