"""Bots read from the log (stream BOTS), who may use them, and their changes appended under a fence.

A bot's state is folded from its own subjects (`bot.<bot_id>.>`): created, then updates (each the
whole new definition), then perhaps deleted. Its owner may change and delete it; an admin may too.
Who may *use* it (add it to a chat, see it): its owner, the users it is shared with (visibility
"shared"), everyone (visibility "public", the bot store), and admins. For anyone else it does not
exist: the API answers 404, as for another user's chat.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import bus
from bus import Appended, JetStream
from schemas.bot import BotCreated, BotDeleted, BotEvent, BotSpec, BotUpdated, Visibility
from schemas.streams import BOTS
from schemas.subjects import ALL_BOTS, one_bot


@dataclass
class Bot:
    """One bot as its events say now."""

    bot_id: str
    owner_id: str
    spec: BotSpec
    visibility: Visibility
    shared_with: list[str]
    created_at: datetime
    updated_at: datetime
    deleted: bool = False
    last_seq: int = 0  # of the bot's last event: updates fence on it

    def usable_by(self, user_id: str, *, admin: bool = False) -> bool:
        """Whether this user may see and use the bot (a deleted bot: nobody)."""
        if self.deleted:
            return False
        return (
            admin
            or self.owner_id == user_id
            or self.visibility == "public"
            or (self.visibility == "shared" and user_id in self.shared_with)
        )

    def editable_by(self, user_id: str, *, admin: bool = False) -> bool:
        """Whether this user may change or delete the bot: its owner or an admin."""
        return not self.deleted and (admin or self.owner_id == user_id)


def fold_bots(events: Iterable[tuple[int, BotEvent]]) -> dict[str, Bot]:
    """Every bot of these (seq, event) pairs, in stream order (an update of an unknown bot is ignored)."""
    bots: dict[str, Bot] = {}
    for seq, event in events:
        match event:
            case BotCreated() if event.bot_id not in bots:
                bots[event.bot_id] = Bot(
                    event.bot_id,
                    event.owner_id,
                    event.spec,
                    event.visibility,
                    list(event.shared_with),
                    created_at=event.at,
                    updated_at=event.at,
                    last_seq=seq,
                )
            case BotUpdated() if event.bot_id in bots:
                bot = bots[event.bot_id]
                bot.spec, bot.visibility, bot.shared_with = (
                    event.spec,
                    event.visibility,
                    list(event.shared_with),
                )
                bot.updated_at, bot.last_seq = event.at, seq
            case BotDeleted() if event.bot_id in bots:
                bots[event.bot_id].deleted, bots[event.bot_id].last_seq = True, seq
    return bots


async def _read(js: JetStream, subject: str) -> dict[str, Bot]:
    pairs: list[tuple[int, BotEvent]] = []
    for msg in await bus.read_all(js, BOTS.name, [subject]):
        event = bus.decode_one(msg.subject, msg.data, where=f"{BOTS.name} seq {msg.seq}")
        if isinstance(event, BotEvent):
            pairs.append((msg.seq, event))
    return fold_bots(pairs)


async def read_bot(js: JetStream, bot_id: str) -> Bot | None:
    """The bot as the log holds it now (deleted ones too: check `usable_by`), or None."""
    return (await _read(js, one_bot(bot_id))).get(bot_id)


async def read_bots(js: JetStream) -> dict[str, Bot]:
    """Every bot in the log, deleted ones too (the whole stream: bots are few)."""
    return await _read(js, ALL_BOTS)


async def append_bot_change(js: JetStream, bot: Bot, event: BotUpdated | BotDeleted) -> Appended:
    """Append a change of `bot` only while its last event is the one it was read at
    (bus.ConcurrencyConflict otherwise: read it again and decide again)."""
    return await bus.append_event(
        js, event, expected_subject_seq=bot.last_seq, expected_subject=one_bot(bot.bot_id)
    )
