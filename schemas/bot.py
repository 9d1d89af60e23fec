"""Bots (personas): a model alias with a personality, on subjects `bot.<bot_id>.>` in stream BOTS.

A bot is a preset of who speaks in a chat: its name, the model alias that answers for it, its system
prompt (the personality), sampling parameters, how many earlier turns it sees and how long it waits
before it speaks. Its owner keeps it private, shares it with named users, or lists it in the bot
store (public). A chat keeps a copy of the bot as it was when it joined (`chat.participant.joined`),
so a replay, an audit and an export show exactly what each model was told, whatever later edits say.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.sampling import SamplingParams

Visibility = Literal["private", "shared", "public"]

MAX_BOT_PROMPT_CHARS = 32_000
MAX_HISTORY_TURNS = 1000
MAX_DELAY_SECONDS = 600.0

# A name others can @mention: no "@", no line break, no leading or trailing blank.
BotName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\s@](?:[^@\r\n]*[^\s@])?$")]
ModelAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


class BotSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a bot is: who speaks, with which model and personality, seeing how much, after how long."""

    name: BotName
    model: ModelAlias
    system_prompt: Annotated[str, msgspec.Meta(max_length=MAX_BOT_PROMPT_CHARS)] = ""
    params: SamplingParams = SamplingParams()
    # How many earlier turns of the conversation it sees (0: all that fit the model's window).
    history: Annotated[int, msgspec.Meta(ge=0, le=MAX_HISTORY_TURNS)] = 0
    # How long it waits before it speaks, in seconds (its turn starts no sooner).
    delay_s: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_DELAY_SECONDS)] = 0.0
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class BotEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of bot events: every event names its bot, its own id and when it happened."""

    event_id: str
    bot_id: str
    at: datetime


class BotCreated(BotEvent, frozen=True, kw_only=True, tag="bot.created"):
    """A user made a bot. Subject `bot.<bot_id>.created`."""

    owner_id: str
    spec: BotSpec
    visibility: Visibility = "private"
    shared_with: list[str] = []  # user ids who may use it (visibility "shared")


class BotUpdated(BotEvent, frozen=True, kw_only=True, tag="bot.updated"):
    """The owner (or an admin) changed the bot: the whole new definition. Subject `bot.<bot_id>.updated`."""

    spec: BotSpec
    visibility: Visibility = "private"
    shared_with: list[str] = []
    by: str


class BotDeleted(BotEvent, frozen=True, kw_only=True, tag="bot.deleted"):
    """The bot was deleted: gone from the store; chats it joined keep their copy.

    Subject `bot.<bot_id>.deleted`.
    """

    by: str


BotEventUnion = BotCreated | BotUpdated | BotDeleted
