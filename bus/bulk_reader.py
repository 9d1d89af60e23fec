"""A lean ordered reader for bulk replay: raw frames from its own connection straight into a buffer.

nats-py spends ~12 µs of Python on each JetStream message (header parsing, a Msg object,
a queue hop, metadata parsing); replaying a stream needs only sequence, subject and data.
BulkReader opens a dedicated connection whose frames skip that path (~3 µs each), drives an
ordered push consumer itself (flow control, heartbeats, gap detection), and fails loudly
on a gap instead of resetting: a replay that sees an error simply starts again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus.buffer import MessageBuffer
from bus.connection import Bus
from bus.errors import BusError

_STATUS_AT = len(b"NATS/1.0")
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


_READ_SIZE = 1 << 20


def _read_big(nc: Client) -> None:
    """Read the dedicated connection in 1 MiB chunks (nats-py reads 32 KiB): a tenth of the loop turns."""
    transport: Any = nc._transport
    reader = getattr(transport, "_io_reader", None)
    if reader is None or not hasattr(reader, "_limit"):
        return  # another transport (websocket): keep nats-py's reads
    reader._limit = 4 * _READ_SIZE
    read = transport.read

    def read_big(_size: int) -> Any:
        return read(_READ_SIZE)

    transport.read = read_big


class _FrameParser:
    """Parses MSG/HMSG frames straight into the reader; hands every other protocol line to nats-py.

    Data frames go the fast way, where the work per frame is in C: the chunk is split into
    lines once (JSON bodies hold no raw newline), a frame is its control line, header lines up
    to the blank one, and one body line; control lines and ack subjects are split in bulk, and
    every body's length is checked against its frame's, so a frame the fast way cannot read
    exactly (a status frame, a body with a newline, another reply form) goes the general way.
    """

    def __init__(self, fallback: Any, reader: BulkReader) -> None:
        self.fallback = fallback
        self.reader = reader
        self.rest = b""

    def reset(self) -> None:
        """Forget partial input (nats-py calls this on reconnect)."""
        self.rest = b""
        self.fallback.reset()

    async def parse(self, data: bytes = b"") -> None:
        """Consume complete frames from the buffered input."""
        buf = self.rest + data if self.rest else bytes(data)
        while buf:
            used = self._data_frames(buf)
            if used:
                buf = buf[used:]
            used = await self._one_frame(buf)
            if not used:
                break
            buf = buf[used:]
        self.rest = buf

    def _data_frames(self, buf: bytes) -> int:
        """Deliver the data frames at the start of buf; returns the bytes they took (0: none)."""
        lines = buf.split(b"\n")
        last = len(lines) - 1  # lines[last] has no newline yet
        index = lines.index
        controls: list[bytes] = []
        bodies: list[bytes] = []
        i = 0
        try:
            while i < last:
                control = lines[i]
                if not control.startswith(b"HMSG ") or b" $JS.ACK." not in control:
                    break
                blank = index(b"\r", i + 1, last)
                if blank + 1 >= last:
                    break  # the body has not fully arrived
                controls.append(control)
                bodies.append(lines[blank + 1])
                i = blank + 2
        except ValueError:  # no end of headers yet
            pass
        count = len(controls)
        if not count:
            return 0
        parts = b" ".join(controls).split(b" ")  # HMSG subject sid reply header-bytes total-bytes
        tokens = b".".join(parts[3::6]).split(b".")  # $JS ACK stream consumer delivered sseq dseq ts pending
        if len(parts) != 6 * count or len(tokens) != 9 * count or tokens[1::9].count(b"ACK") != count:
            return 0
        header_lens, totals = list(map(int, parts[4::6])), list(map(int, parts[5::6]))
        # Each body line ends in \r: one byte longer than the body the frame announces.
        if list(map(len, bodies)) != [t - h + 1 for t, h in zip(totals, header_lens, strict=True)]:
            return 0
        used = sum(map(len, lines[:i])) + i
        if used != sum(map(len, controls)) + 3 * count + sum(totals):
            return 0
        self.reader._deliver(
            _Frames(
                seqs=tokens[5::9],
                subjects=parts[1::6],
                bodies=list(map(_WITHOUT_CR, bodies)),
                pendings=tokens[8::9],
                last_dseq=tokens[9 * count - 3],
            )
        )
        return used

    async def _one_frame(self, buf: bytes) -> int:
        """Handle the frame or protocol line at the start of buf; returns the bytes it took (0: partial)."""
        end = buf.find(b"\r\n")
        if end < 0:
            return 0
        kind = buf[:4]
        if kind != b"HMSG" and kind[:3] != b"MSG":
            await self.fallback.parse(buf[: end + 2])
            return end + 2
        parts = buf[:end].split()
        total = int(parts[-1])
        body = end + 2
        if body + total + 2 > len(buf):
            return 0
        header_len = int(parts[-2]) if kind == b"HMSG" else 0
        reply = parts[3] if len(parts) == (6 if header_len else 5) else b""
        if header_len and buf[body + _STATUS_AT : body + _STATUS_AT + 1] == b" ":
            await self.reader._on_status(reply, buf[body : body + header_len])
        else:
            self.reader._on_data(parts[1], reply, buf[body + header_len : body + total])
        return body + total + 2


_WITHOUT_CR = itemgetter(slice(None, -1))


class _Frames(NamedTuple):
    """Data frames parsed from one chunk, their numbers still as bytes."""

    seqs: list[bytes]
    subjects: list[bytes]
    bodies: list[bytes]
    pendings: list[bytes]
    last_dseq: bytes


class BulkReader(MessageBuffer[BulkMsg]):
    """Messages of a stream from `start_seq` on, in order, buffered; same take/wait shape as Follower."""

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
        self._nc._ps = _FrameParser(self._nc._ps, self)  # type: ignore[assignment]
        _read_big(self._nc)
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
        if len(self.filter_subjects) == 1:
            config.filter_subject = self.filter_subjects[0]
        else:
            config.filter_subjects = self.filter_subjects
        info = await self.nbus.js.add_consumer(self.stream, config=config)
        self._consumer = info.name
        self.initial_pending = (info.num_pending or 0) + len(self.buffer)

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
        self.push(BulkMsg(self.stream, int(sseq), subject.decode(), data, int(pending)))

    def _deliver(self, frames: _Frames) -> None:
        """Buffer the data frames of a chunk, in order; a gap in delivery sequences fails the reader.

        Delivery sequences rise by one per message, so the last one tells whether any was skipped.
        """
        count = len(frames.seqs)
        expected = self._next_dseq + count - 1
        if int(frames.last_dseq) != expected:
            self._fail(f"{self.stream}: expected deliveries up to {expected}, got {int(frames.last_dseq)}")
            return
        self._next_dseq += count
        self.buffer.extend(
            map(
                _new_msg,
                zip(
                    repeat(self.stream, count),
                    map(int, frames.seqs),
                    map(bytes.decode, frames.subjects),
                    frames.bodies,
                    map(int, frames.pendings),
                    strict=True,
                ),
            )
        )
        self.signal.set()

    async def wait_batch(self, size: int, timeout: float) -> bool:
        """Wait until `size` messages are buffered, or fewer with none pending behind them; False when
        nothing arrived in `timeout`. Bigger batches spread a consumer's per-batch costs thinner."""
        if not await self.wait(timeout):
            return False
        while len(self.buffer) < size and self.buffer[-1].pending > 0 and self.error is None:
            self.signal.clear()
            await self._before_wait()
            try:
                await asyncio.wait_for(self.signal.wait(), timeout)
            except TimeoutError:
                break
        self._check()
        return True

    async def _on_status(self, reply: bytes, headers: bytes) -> None:
        code = headers[_STATUS_AT + 1 : _STATUS_AT + 4]
        if code != b"100":
            self._fail(f"{self.stream}: consumer status {headers[_STATUS_AT:].strip()!r}")
            return
        if reply:  # flow control: answer once the buffer has room, so memory stays bounded
            if len(self.buffer) < self.high_water:
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
        if self._held_flow_control and len(self.buffer) < self.high_water:
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
