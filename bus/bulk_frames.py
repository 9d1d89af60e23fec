"""The bulk reader's wire side: its connection read in big chunks, and NATS frames parsed straight into it.

Data frames go the fast way, where the work per frame is in C (see FrameParser); every other protocol
line goes to nats-py's own parser.
"""

from __future__ import annotations

import re
from operator import getitem
from typing import TYPE_CHECKING, Any, NamedTuple

from nats.aio.client import Client

if TYPE_CHECKING:
    from bus.bulk_reader import BulkReader

STATUS_AT = len(b"NATS/1.0")  # where a status frame's code starts in its header block

_READ_SIZE = 1 << 20


def read_big_chunks(nc: Client) -> None:
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


# A data frame's control line: subject, stream sequence, delivery sequence, pending, header and total bytes.
_DATA_FRAME = re.compile(
    rb"(HMSG ([^ \r\n]+) [0-9]+ \$JS\.ACK\.[^. \r\n]+\.[^. \r\n]+\.[0-9]+\.([0-9]+)\.([0-9]+)\.[0-9]+"
    rb"\.([0-9]+) ([0-9]+) ([0-9]+)\r\n)"
)

_PER_FRAME = 8  # what _DATA_FRAME.split yields per frame: 7 groups, then the bytes up to the next frame


class FrameParser:
    """Parses MSG/HMSG frames straight into the reader; hands every other protocol line to nats-py.

    Data frames go the fast way, where the work per frame is in C: one regex split of the chunk
    at every data frame's control line, then bodies sliced by the lengths each line announces.
    A frame is taken only when exactly its header block, body and CRLF lie between its control
    line and the next, so anything else (a status frame, PING, a body the regex misread, another
    reply form) stops the fast way there and goes the general way.
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
        if not _DATA_FRAME.match(buf):
            return 0  # buf does not start with a data frame (checked first: a split reads all of buf)
        parts = _DATA_FRAME.split(buf)
        headers, totals = list(map(int, parts[6::_PER_FRAME])), list(map(int, parts[7::_PER_FRAME]))
        after = parts[8::_PER_FRAME]  # header block, body, CRLF: then the next frame (or whatever came)
        ends = [total + 2 for total in totals]
        sizes = list(map(len, after))
        count = len(after) - 1
        if sizes[:count] != ends[:count]:
            count = next(i for i, (size, end) in enumerate(zip(sizes, ends, strict=True)) if size != end)
        # The frame where the clean run stops counts when all of it is there.
        if sizes[count] >= ends[count] and after[count][ends[count] - 2 : ends[count]] == b"\r\n":
            count += 1
        if not count:
            return 0
        self.reader._deliver(
            Frames(
                seqs=list(map(int, parts[3 : _PER_FRAME * count : _PER_FRAME])),
                subjects=parts[2 : _PER_FRAME * count : _PER_FRAME],
                bodies=list(map(getitem, after[:count], map(slice, headers, totals))),
                pendings=parts[5 : _PER_FRAME * count : _PER_FRAME],
                last_dseq=parts[_PER_FRAME * (count - 1) + 4],
            )
        )
        return sum(map(len, parts[1 : _PER_FRAME * count : _PER_FRAME])) + sum(ends[:count])

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
        if header_len and buf[body + STATUS_AT : body + STATUS_AT + 1] == b" ":
            await self.reader._on_status(reply, buf[body : body + header_len])
        else:
            self.reader._on_data(parts[1], reply, buf[body + header_len : body + total])
        return body + total + 2


class Frames(NamedTuple):
    """Data frames parsed from one chunk (subjects and pendings still as bytes)."""

    seqs: list[int]
    subjects: list[bytes]
    bodies: list[bytes]
    pendings: list[bytes]
    last_dseq: bytes
