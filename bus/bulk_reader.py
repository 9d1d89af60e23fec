"""A lean ordered reader for bulk replay: raw frames from its own connection straight into a buffer.

nats-py spends ~12 µs of Python on each JetStream message (header parsing, a Msg object,
a queue hop, metadata parsing); replaying a stream needs only sequence, subject and data.
BulkReader opens a dedicated connection whose frames skip that path (~1.3 µs each, in C but
for a few list operations per socket read), buffers them column by column, drives an ordered
push consumer itself (flow control, heartbeats, gap detection), and fails loudly on a gap
instead of resetting: a replay that sees an error simply starts again.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Sequence
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus.buffer import Buffered
from bus.bulk_frames import STATUS_AT, FrameParser, Frames, read_big_chunks
from bus.connection import Bus
from bus.errors import BusError

_STALLED = b"Nats-Consumer-Stalled:"
_LAST_CONSUMER = b"Nats-Last-Consumer:"


class BulkMsg(NamedTuple):
    """A message as the stream stored it (StoredMsg's fields, as a tuple: ~30x cheaper to make)."""

    stream: str
    seq: int
    subject: str
    data: bytes
    pending: int


_new_msg = partial(tuple.__new__, BulkMsg)  # a BulkMsg from a tuple, without NamedTuple's Python __new__


class BulkReaderError(BusError):
    """The bulk reader lost its place (a gap, a deleted consumer, a cut connection): read again."""


def _header(headers: bytes, name: bytes) -> bytes | None:
    start = headers.find(name)
    if start < 0:
        return None
    end = headers.find(b"\r\n", start)
    return headers[start + len(name) : end if end >= 0 else None].strip()


class BulkBatch(NamedTuple):
    """Consecutive messages of one stream, column by column: replay decodes a batch in one call."""

    stream: str
    seqs: list[int]
    subjects: list[bytes]
    data: list[bytes]
    pending: int  # messages left in the stream after the last of these

    def __len__(self) -> int:
        return len(self.seqs)

    def upto(self, last_seq: int) -> BulkBatch:
        """The messages of this batch up to last_seq."""
        if not self.seqs or self.seqs[-1] <= last_seq:
            return self
        n = bisect_right(self.seqs, last_seq)
        return BulkBatch(
            self.stream, self.seqs[:n], self.subjects[:n], self.data[:n], self.pending + len(self.seqs) - n
        )


class BulkReader(Buffered):
    """Messages of a stream from `start_seq` on, in order, buffered column by column.

    `take` hands them on as BulkMsgs (Follower's shape), `take_batch` as one BulkBatch.
    """

    def __init__(
        self,
        nbus: Bus,
        stream: str,
        filter_subjects: Sequence[str],
        start_seq: int = 1,
        high_water: int = 100_000,
    ) -> None:
        super().__init__()
        self.nbus = nbus
        self.stream = stream
        self.filter_subjects = list(filter_subjects)
        self.start_seq = max(start_seq, 1)
        self.high_water = high_water
        self.initial_pending = 0
        self.error: BulkReaderError | None = None
        self._nc: Client | None = None
        self._consumer: str | None = None
        self._next_dseq = 1
        self._held_flow_control: list[bytes] = []
        self._seqs: list[int] = []
        self._subjects: list[bytes] = []
        self._data: list[bytes] = []
        self._pendings: list[bytes] = []

    def __len__(self) -> int:
        return len(self._seqs)

    async def start(self) -> None:
        """Connect, subscribe an inbox and create the ephemeral consumer that pushes into it."""
        main = self.nbus.nc
        options: dict[str, Any] = {
            key: main.options[key]
            for key in ("user", "password", "token", "tls", "tls_hostname")
            if main.options.get(key)
        }

        async def on_closed() -> None:
            self._fail(f"{self.stream}: connection closed")

        async def on_error(exc: Exception) -> None:
            self._fail(f"{self.stream}: {exc}")

        self._nc = await nats.connect(
            servers=[uri.geturl() for uri in main.servers],
            name=f"bulk-reader-{self.stream}",
            allow_reconnect=False,
            pending_size=64 * 1024 * 1024,
            closed_cb=on_closed,
            error_cb=on_error,
            **options,
        )
        # The dedicated connection carries nothing but this consumer's frames: read them ourselves.
        self._nc._ps = FrameParser(self._nc._ps, self)  # type: ignore[assignment]
        read_big_chunks(self._nc)
        inbox = self._nc.new_inbox()
        await self._nc.subscribe(inbox)
        await self._nc.flush()
        config = ConsumerConfig(
            deliver_subject=inbox,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=2.0,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=30.0,
        )
        if self.start_seq > 1:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self.start_seq
        # No filter reads the whole stream, a little cheaper for the server than one that matches all.
        if len(self.filter_subjects) == 1:
            config.filter_subject = self.filter_subjects[0]
        elif self.filter_subjects:
            config.filter_subjects = self.filter_subjects
        info = await self.nbus.js.add_consumer(self.stream, config=config)
        self._consumer = info.name
        self.initial_pending = (info.num_pending or 0) + len(self)

    def _on_data(self, subject: bytes, reply: bytes, data: bytes) -> None:
        tokens = reply.split(b".")
        if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
            sseq, dseq, pending = tokens[5], tokens[6], tokens[8]
        else:  # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>...
            sseq, dseq, pending = tokens[7], tokens[8], tokens[10]
        if int(dseq) != self._next_dseq:
            self._fail(f"{self.stream}: expected delivery {self._next_dseq}, got {int(dseq)}")
            return
        self._next_dseq += 1
        self._seqs.append(int(sseq))
        self._subjects.append(subject)
        self._data.append(data)
        self._pendings.append(pending)
        self.signal.set()

    def _deliver(self, frames: Frames) -> None:
        """Buffer the data frames of a chunk, in order; a gap in delivery sequences fails the reader.

        Delivery sequences rise by one per message, so the last one tells whether any was skipped.
        """
        count = len(frames.seqs)
        expected = self._next_dseq + count - 1
        if int(frames.last_dseq) != expected:
            self._fail(f"{self.stream}: expected deliveries up to {expected}, got {int(frames.last_dseq)}")
            return
        self._next_dseq += count
        self._seqs.extend(frames.seqs)
        self._subjects.extend(frames.subjects)
        self._data.extend(frames.bodies)
        self._pendings.extend(frames.pendings)
        self.signal.set()

    def take(self, limit: int | None = None) -> list[BulkMsg]:
        """Take what is buffered now (at most `limit`), as BulkMsgs."""
        seqs, subjects, data, pendings = self._take_columns(limit)
        return list(
            map(
                _new_msg,
                zip(
                    repeat(self.stream, len(seqs)),
                    seqs,
                    map(bytes.decode, subjects),
                    data,
                    map(int, pendings),
                    strict=True,
                ),
            )
        )

    def take_batch(self, limit: int | None = None) -> BulkBatch:
        """Take what is buffered now (at most `limit`), as one BulkBatch."""
        seqs, subjects, data, pendings = self._take_columns(limit)
        return BulkBatch(self.stream, seqs, subjects, data, int(pendings[-1]) if pendings else 0)

    async def next_batch(self, size: int, timeout: float) -> BulkBatch | None:
        """The next batch of up to `size` messages (see wait_batch); None if nothing came in `timeout`."""
        if not await self.wait_batch(size, timeout):
            return None
        return self.take_batch(size)

    def _take_columns(self, limit: int | None) -> tuple[list[int], list[bytes], list[bytes], list[bytes]]:
        self._check()
        taken = (self._seqs, self._subjects, self._data, self._pendings)
        if limit is None or len(self) <= limit:
            self._seqs, self._subjects, self._data, self._pendings = [], [], [], []
        else:
            seqs, subjects, data, pendings = taken
            self._seqs, self._subjects, self._data, self._pendings = (
                seqs[limit:],
                subjects[limit:],
                data[limit:],
                pendings[limit:],
            )
            taken = (seqs[:limit], subjects[:limit], data[:limit], pendings[:limit])
        if not len(self):
            self.signal.clear()
        return taken

    async def wait_batch(self, size: int, timeout: float) -> bool:
        """Wait until `size` messages are buffered, or fewer with none pending behind them; False when
        nothing arrived in `timeout`. Bigger batches spread a consumer's per-batch costs thinner."""
        if not await self.wait(timeout):
            return False
        while len(self) < size and self._pendings[-1] != b"0" and self.error is None:
            self.signal.clear()
            await self._before_wait()
            try:
                await asyncio.wait_for(self.signal.wait(), timeout)
            except TimeoutError:
                break
        self._check()
        return True

    async def _on_status(self, reply: bytes, headers: bytes) -> None:
        code = headers[STATUS_AT + 1 : STATUS_AT + 4]
        if code != b"100":
            self._fail(f"{self.stream}: consumer status {headers[STATUS_AT:].strip()!r}")
            return
        if reply:  # flow control: answer once the buffer has room, so memory stays bounded
            if len(self) < self.high_water:
                await self._publish(reply)
            else:
                self._held_flow_control.append(reply)
            return
        last = _header(headers, _LAST_CONSUMER)
        if last is not None and int(last) != self._next_dseq - 1:
            self._fail(f"{self.stream}: heartbeat says delivered {int(last)}, got {self._next_dseq - 1}")
            return
        stalled = _header(headers, _STALLED)
        if stalled:
            await self._publish(stalled)

    async def _publish(self, subject: bytes) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.publish(subject.decode(), b"")

    def _fail(self, message: str) -> None:
        if self.error is None and self._nc is not None:
            self.error = BulkReaderError(message)
        self.signal.set()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    async def _before_wait(self) -> None:
        """Answer flow control held back while the buffer was full, now that it has room."""
        if self._held_flow_control and len(self) < self.high_water:
            held, self._held_flow_control = self._held_flow_control, []
            for reply in held:
                await self._publish(reply)

    async def stop(self) -> None:
        """Delete the consumer and close the dedicated connection."""
        if self._consumer is not None:
            try:
                await self.nbus.js.delete_consumer(self.stream, self._consumer)
            except Exception:  # noqa: BLE001 - it expires on its own (inactive_threshold)
                pass
            self._consumer = None
        if self._nc is not None:
            nc, self._nc = self._nc, None
            try:
                await nc.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
