"""Ordered readers: replay a stream (or one chat's subjects) from a sequence, and follow it live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext as _JS

from bus.buffer import MessageBuffer
from bus.errors import BusUnavailable


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """A message as the stream stored it."""

    stream: str
    seq: int
    subject: str
    data: bytes
    pending: int
    time: datetime | None = None


def _stored(msg: Msg) -> StoredMsg:
    meta = msg.metadata
    return StoredMsg(
        stream=meta.stream,
        seq=meta.sequence.stream,
        subject=msg.subject,
        data=msg.data,
        pending=meta.num_pending,
        time=meta.timestamp,
    )


def _config(filter_subjects: Sequence[str], start_seq: int, start_time: datetime | None) -> ConsumerConfig:
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    if start_time is not None:  # the server finds the first message stored at or after it
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = start_time
    elif start_seq > 1:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_seq
    if len(filter_subjects) == 1:
        config.filter_subject = filter_subjects[0]
    else:
        config.filter_subjects = list(filter_subjects)
    return config


class Follower(MessageBuffer[StoredMsg]):
    """An ordered push consumer that buffers messages from `start_seq` (or those stored at or after
    `start_time`) on, gap-free and in order."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        filter_subjects: Sequence[str],
        start_seq: int = 1,
        start_time: datetime | None = None,
    ) -> None:
        super().__init__()
        self.js = js
        self.stream = stream
        self.filter_subjects = list(filter_subjects)
        self.start_seq = max(start_seq, 1)
        self.start_time = start_time
        self.initial_pending = 0
        self.last_seq = self.start_seq - 1
        self._sub: _JS.PushSubscription | None = None

    async def start(self) -> None:
        """Create the consumer; `initial_pending` says how many messages existed at that moment."""

        async def on_msg(msg: Msg) -> None:
            stored = _stored(msg)
            # nats-py recreates an ordered consumer from its last delivered sequence + 1, which is
            # 1 when nothing was delivered yet: never hand on anything at or before our position.
            if stored.seq <= self.last_seq:
                return
            self.last_seq = stored.seq
            self.push(stored)

        try:
            self._sub = await self.js.subscribe(
                self.filter_subjects[0],
                stream=self.stream,
                cb=on_msg,
                ordered_consumer=True,
                config=_config(self.filter_subjects, self.start_seq, self.start_time),
                idle_heartbeat=2.0,
                pending_msgs_limit=1_000_000,
                pending_bytes_limit=512 * 1024 * 1024,
            )
            info = await self._sub.consumer_info()
        except NatsError as exc:  # a JetStream API error's repr lacks the server's words: add them
            said = getattr(exc, "description", None)
            raise BusUnavailable(f"cannot read {self.stream}: {exc!r}{f' ({said})' if said else ''}") from exc
        # Delivered-so-far plus still-pending, both from the same server snapshot: counting the local
        # buffer instead races with deliveries that land after the snapshot (an overcount that never drains).
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        self.initial_pending = delivered + (info.num_pending or 0) + (info.num_ack_pending or 0)

    async def batches(self, max_batch: int = 5000, max_wait: float = 0.05) -> AsyncIterator[list[StoredMsg]]:
        """Yield batches forever: as soon as something arrives, after letting a batch fill briefly."""
        while True:
            await self.wait()
            if len(self.buffer) < max_batch:
                await asyncio.sleep(0)  # let already-received messages land
            yield self.take(max_batch)

    async def stop(self) -> None:
        """Delete the consumer and stop receiving."""
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass
            self._sub = None


async def read_all(
    js: JetStreamContext,
    stream: str,
    filter_subjects: Sequence[str],
    start_seq: int = 1,
    timeout: float = 10.0,
    start_time: datetime | None = None,
) -> list[StoredMsg]:
    """Every message on the filter subjects from start_seq (or stored at or after start_time) up to what
    the stream held when called."""
    follower = Follower(js, stream, filter_subjects, start_seq, start_time)
    await follower.start()
    try:
        out: list[StoredMsg] = []
        remaining = follower.initial_pending
        while len(out) < remaining:
            if not await follower.wait(timeout):
                raise TimeoutError(f"reading {stream} {filter_subjects}: got {len(out)} of {remaining}")
            out.extend(follower.take())
            if out and out[-1].pending == 0:
                break
        return out
    finally:
        await follower.stop()


async def last_msg(js: JetStreamContext, stream: str, subject: str) -> StoredMsg | None:
    """The last message on a subject (wildcards allowed), or None."""
    from nats.js.errors import NotFoundError

    try:
        raw = await js.get_last_msg(stream, subject, direct=True)
    except NotFoundError:
        return None
    except NatsError as exc:
        raise BusUnavailable(f"cannot read {stream} {subject}: {exc!r}") from exc
    return StoredMsg(
        stream=stream, seq=raw.seq or 0, subject=raw.subject or subject, data=raw.data or b"", pending=0
    )


async def msg_at(js: JetStreamContext, stream: str, seq: int) -> StoredMsg | None:
    """The message stored at `seq`, or None when there is none (deleted, purged, never)."""
    from nats.js.errors import NotFoundError

    try:
        raw = await js.get_msg(stream, seq, direct=True)
    except NotFoundError:
        return None
    except NatsError as exc:
        raise BusUnavailable(f"cannot read {stream} seq {seq}: {exc!r}") from exc
    return StoredMsg(stream=stream, seq=seq, subject=raw.subject or "", data=raw.data or b"", pending=0)


async def _first_from(js: JetStreamContext, stream: str, seq: int) -> tuple[int, datetime] | None:
    """The sequence and stored time of the first message at or after `seq`, or None."""
    from nats.js.errors import NotFoundError

    try:
        raw = await js.get_msg(stream, seq, subject=">", next=True)
    except NotFoundError:
        return None
    except NatsError as exc:
        raise BusUnavailable(f"cannot read {stream} at {seq}: {exc!r}") from exc
    if raw.seq is None or raw.time is None:
        return None
    return raw.seq, raw.time


async def last_seq(js: JetStreamContext, stream: str) -> int:
    """The last sequence `stream` has assigned (0 when it never held a message): one stream-info request."""
    try:
        return int((await js.stream_info(stream)).state.last_seq)
    except NatsError as exc:
        raise BusUnavailable(f"cannot read the state of {stream}: {exc!r}") from exc


async def seq_at_time(js: JetStreamContext, stream: str, when: datetime) -> int:
    """The last sequence of `stream` stored at or before `when` (0 when none): a binary search."""
    state = (await js.stream_info(stream)).state
    low, high = state.first_seq, state.last_seq  # invariant: the answer is in [low - 1, high]
    if state.messages == 0:
        return 0
    answer = 0
    while low <= high:
        middle = (low + high) // 2
        found = await _first_from(js, stream, middle)
        if found is None or found[0] > high:  # nothing stored in [middle, high]
            high = middle - 1
        elif found[1] <= when:
            answer = found[0]
            low = found[0] + 1
        else:
            high = middle - 1
    return answer


async def time_at(js: JetStreamContext, stream: str, seq: int) -> datetime | None:
    """When the message at `seq` was stored; for a purged one, just before the next one that exists.

    None when nothing at or after `seq` exists (then every message so far came before it).
    """
    from datetime import timedelta

    found = await _first_from(js, stream, seq)
    if found is None:
        return None
    stored_seq, stored_at = found
    return stored_at if stored_seq == seq else stored_at - timedelta(microseconds=1)
