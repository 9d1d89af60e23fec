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

import msgspec

import bus
import schemas
from bus import Appended, JetStream
from schemas.api_bots import BotBody, BotScope
from schemas.bot import BotCreated, BotDeleted, BotEvent, BotSpec, BotUpdated, Visibility
from schemas.ids import new_id
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

    def apply(self, seq: int, event: BotUpdated | BotDeleted) -> None:
        """Fold in one change of this bot, stored at `seq`."""
        if isinstance(event, BotUpdated):
            self.spec, self.visibility, self.shared_with = (
                event.spec,
                event.visibility,
                list(event.shared_with),
            )
            self.updated_at = event.at
        else:
            self.deleted = True
        self.last_seq = seq


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
            case BotUpdated() | BotDeleted() if event.bot_id in bots:
                bots[event.bot_id].apply(seq, event)
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


async def append_bot_change(
    js: JetStream, bot: Bot, event: BotUpdated | BotDeleted, *, at_seq: int | None = None
) -> Appended:
    """Append a change of `bot` only while its last event is the one it was read at, or `at_seq`
    (the version a client saw: If-Match); bus.ConcurrencyConflict otherwise: read it again, decide again."""
    expected = bot.last_seq if at_seq is None else at_seq
    return await bus.append_event(
        js, event, expected_subject_seq=expected, expected_subject=one_bot(bot.bot_id)
    )


def in_scope(bot: Bot, scope: BotScope, user_id: str, *, admin: bool = False) -> bool:
    """Whether a bot belongs in a list: `mine` (owned), `store` (public), `usable` (what this user may
    use: owned, shared with them, public; an admin's list is theirs too) or `all` (admins: every bot)."""
    if bot.deleted:
        return False
    match scope:
        case "mine":
            return bot.owner_id == user_id
        case "store":
            return bot.visibility == "public"
        case "usable":
            return bot.usable_by(user_id)
        case "all":
            return admin
    return False


def created_event(owner_id: str, spec: BotSpec, visibility: Visibility, shared_with: list[str]) -> BotCreated:
    """A new bot of `owner_id` (a fresh bot id): the event that creates it."""
    return BotCreated(
        event_id=new_id("e"),
        bot_id=new_id("b"),
        at=schemas.now(),
        owner_id=owner_id,
        spec=spec,
        visibility=visibility,
        shared_with=shared_with,
    )


async def create_bots(js: JetStream, events: list[BotCreated]) -> list[Bot]:
    """Append new bots in this order (one round trip; a retry stores none twice); the bots as created."""
    appended = await bus.append_events(js, list(events))
    return list(fold_bots(zip((a.seq for a in appended), events, strict=True)).values())


def updated_event(
    bot: Bot, spec: BotSpec, visibility: Visibility, shared_with: list[str], by: str
) -> BotUpdated:
    """The whole new definition of `bot`, changed by `by`."""
    return BotUpdated(
        event_id=new_id("e"),
        bot_id=bot.bot_id,
        at=schemas.now(),
        spec=spec,
        visibility=visibility,
        shared_with=shared_with,
        by=by,
    )


def deleted_event(bot: Bot, by: str) -> BotDeleted:
    """`bot` deleted by `by`."""
    return BotDeleted(event_id=new_id("e"), bot_id=bot.bot_id, at=schemas.now(), by=by)


def bot_body(bot: Bot, user_id: str, *, admin: bool = False) -> BotBody:
    """The API's view of a bot for this caller: whom it is shared with is for its owner and admins only."""
    return BotBody(
        bot_id=bot.bot_id,
        owner_id=bot.owner_id,
        owner_name=bot.owner_id,  # a user's id is the name they log in with
        mine=bot.owner_id == user_id,
        visibility=bot.visibility,
        shared_with=list(bot.shared_with) if bot.editable_by(user_id, admin=admin) else [],
        created_at=bot.created_at,
        updated_at=bot.updated_at,
        version=bot.last_seq,
        **msgspec.structs.asdict(bot.spec),
    )
