"""The event catalogue and API bodies (subjects: schemas/subjects/). Imports msgspec and the stdlib only."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from schemas.arena import ArenaEventUnion
from schemas.batch import BatchEventUnion
from schemas.bot import BotEventUnion
from schemas.chat import ChatEventUnion
from schemas.identity import IdentityEventUnion
from schemas.image import ImageEventUnion
from schemas.tokens import TokenEventUnion

Event = (
    ChatEventUnion
    | IdentityEventUnion
    | ImageEventUnion
    | BotEventUnion
    | ArenaEventUnion
    | BatchEventUnion
    | TokenEventUnion
)
EVENT_TYPES: tuple[type, ...] = (
    *ChatEventUnion.__args__,
    *IdentityEventUnion.__args__,
    *ImageEventUnion.__args__,
    *BotEventUnion.__args__,
    *ArenaEventUnion.__args__,
    *BatchEventUnion.__args__,
    TokenEventUnion,
)

encoder = msgspec.json.Encoder()
decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


def encode(value: object) -> bytes:
    """Encode an event or body as JSON."""
    return encoder.encode(value)


def decode_event(data: bytes) -> Event:
    """Decode any event by its `type` tag."""
    return decoder.decode(data)


def decode_lines(lines: bytes, count: int) -> list[Event]:
    """Decode `count` events from bodies joined by newlines, in one call (replay decodes ~1M events/s).

    Raises msgspec.DecodeError or ValidationError unless each line holds exactly one event (a body
    with a raw newline of its own, or a blank one, would shift the rest); the caller then decodes
    the bodies one by one.
    """
    if lines.count(b"\n") != count - 1:
        raise msgspec.DecodeError("a body holds a raw newline")
    events = decoder.decode_lines(lines)
    if len(events) != count:
        raise msgspec.DecodeError("a body is blank")
    return events


def now() -> datetime:
    """The current time in UTC, as events carry it."""
    return datetime.now(UTC)


def parse_time(text: str) -> datetime:
    """An ISO date or time (UTC unless it says) as an aware UTC datetime; ValueError when it is not one,
    or lies so near year 1 or 9999 that it has no UTC time."""
    parsed = datetime.fromisoformat(text)
    try:
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range") from None
