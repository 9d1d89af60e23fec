"""Bot subjects: `bot.<bot_id>.<kind>` in stream BOTS."""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from schemas.subjects.roots import BOT_ROOT, REST, join

BotKind = Literal["created", "updated", "deleted"]
BOT_KINDS: frozenset[str] = frozenset(get_args(BotKind))


def bot_event(bot_id: str, kind: BotKind) -> str:
    """Subject of a bot event, e.g. `bot.<bot_id>.created`."""
    return join(BOT_ROOT, bot_id, kind)


def one_bot(bot_id: str) -> str:
    """Every event of one bot: `bot.<bot_id>.>` (updates fence on it)."""
    return join(BOT_ROOT, bot_id, REST)


class BotSubject(msgspec.Struct, frozen=True):
    """A bot event's subject, parsed."""

    bot_id: str
    kind: BotKind


def parse_bot_subject(subject: str) -> BotSubject | None:
    """The parts of a subject in BOTS, or None."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != BOT_ROOT or parts[2] not in BOT_KINDS:
        return None
    return BotSubject(parts[1], parts[2])  # type: ignore[arg-type]
