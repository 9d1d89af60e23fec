"""The one decoder of stored events: by the body's `type`, and only where the subject allows it.

Every reader (the API's chat state and live feed, the worker's context, the projector and replay,
exports) decodes here, so none trusts a body's `type` alone: an event is kept only when it belongs
on the subject it was read from (`schemas.subjects.belongs`: the subject names its type and ids).
Whoever may publish on a subject can write any body there; a misfiled body is skipped, logged and
counted, like one this version cannot read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

import schemas
from bus.bulk_reader import BulkBatch, BulkMsg
from bus.reader import StoredMsg
from schemas.subjects import belongs

log = logging.getLogger(__name__)

Sequenced = tuple[int, schemas.Event]
Delivered = StoredMsg | BulkMsg
_EXAMPLES = 5  # rejected messages named in a report; the rest are counted


@dataclass
class Rejected:
    """Messages a decoder skipped, for a report: unreadable ones (a newer version's, or garbage) and
    misfiled ones (an event on a subject it does not belong to); the first few are named."""

    unreadable: int = 0
    misfiled: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Every message skipped."""
        return self.unreadable + self.misfiled

    def count(self, *, misfiled: bool, what: str) -> None:
        """Count one skipped message (`what` names it and why)."""
        if misfiled:
            self.misfiled += 1
        else:
            self.unreadable += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(what)


def type_tag(event: schemas.Event) -> str:
    """The event's `type` tag, as its body spells it."""
    return str(type(event).__struct_config__.tag)


def decode_one(
    subject: str, data: bytes, rejected: Rejected | None = None, where: str = ""
) -> schemas.Event | None:
    """The event of one message read from `subject`, or None (logged, and counted in `rejected`) when the
    body is unreadable or its event does not belong on that subject. `where` names it in the log."""
    try:
        event = schemas.decode_event(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        _unreadable(rejected, f"{where} on {subject}".strip(), exc)
        return None
    if not belongs(subject, event):
        _misfiled(rejected, f"{where} on {subject}".strip(), event)
        return None
    return event


def decode_batch(msgs: Sequence[Delivered], rejected: Rejected | None = None) -> list[Sequenced]:
    """Decode messages to (seq, event); unreadable or misfiled ones are skipped with a warning."""
    stream = msgs[0].stream if msgs else ""
    return _decode(
        stream, [m.seq for m in msgs], [m.data for m in msgs], lambda: [m.subject for m in msgs], rejected
    )


def decode_bulk(batch: BulkBatch, rejected: Rejected | None = None) -> list[Sequenced]:
    """Decode a bulk reader's batch to (seq, event), as decode_batch does."""
    return _decode(
        batch.stream,
        batch.seqs,
        batch.data,
        lambda: [s.decode(errors="replace") for s in batch.subjects],
        rejected,
    )


def _decode(
    stream: str,
    seqs: list[int],
    bodies: list[bytes],
    subjects: Callable[[], list[str]],
    rejected: Rejected | None,
) -> list[Sequenced]:
    """In one decoder call when every body is one event; else one by one. Then each against its subject."""
    try:
        events = schemas.decode_lines(b"\n".join(bodies), len(bodies))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return [
            (seq, event)
            for seq, subject, data in zip(seqs, subjects(), bodies, strict=True)
            if (event := decode_one(subject, data, rejected, f"{stream} seq {seq}")) is not None
        ]
    out: list[Sequenced] = []
    for seq, subject, event in zip(seqs, subjects(), events, strict=True):
        if belongs(subject, event):
            out.append((seq, event))
        else:
            _misfiled(rejected, f"{stream} seq {seq} on {subject}", event)
    return out


def _unreadable(rejected: Rejected | None, where: str, exc: Exception) -> None:
    log.warning("skipping %s: cannot read it: %s", where, exc)
    if rejected is not None:
        rejected.count(misfiled=False, what=f"{where}: unreadable")


def _misfiled(rejected: Rejected | None, where: str, event: schemas.Event) -> None:
    log.warning("rejecting %s: a %s does not belong on that subject", where, type_tag(event))
    if rejected is not None:
        rejected.count(misfiled=True, what=f"{where}: a {type_tag(event)} does not belong there")
