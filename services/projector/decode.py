"""Messages of a projected stream as (seq, event): one decoder call per batch, bad events skipped."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import msgspec

import schemas
from bus import BulkBatch, BulkMsg, StoredMsg

log = logging.getLogger(__name__)

Sequenced = tuple[int, schemas.Event]
Delivered = StoredMsg | BulkMsg


def decode_batch(msgs: Sequence[Delivered]) -> list[Sequenced]:
    """Decode messages to (seq, event); unknown or malformed events are skipped with a warning."""
    stream = msgs[0].stream if msgs else ""
    return _decode(stream, [m.seq for m in msgs], [m.data for m in msgs], lambda: [m.subject for m in msgs])


def decode_bulk(batch: BulkBatch) -> list[Sequenced]:
    """Decode a bulk reader's batch to (seq, event), as decode_batch does."""
    return _decode(
        batch.stream, batch.seqs, batch.data, lambda: [s.decode(errors="replace") for s in batch.subjects]
    )


def _decode(
    stream: str, seqs: list[int], bodies: list[bytes], subjects: Callable[[], list[str]]
) -> list[Sequenced]:
    """In one decoder call when every body is one event; else one by one (subjects only for warnings)."""
    try:
        return list(zip(seqs, schemas.decode_lines(b"\n".join(bodies), len(bodies)), strict=True))
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    decode = schemas.decode_event
    out: list[Sequenced] = []
    for seq, subject, data in zip(seqs, subjects(), bodies, strict=True):
        try:
            out.append((seq, decode(data)))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.warning("skipping %s seq %d on %s: %s", stream, seq, subject, exc)
    return out
