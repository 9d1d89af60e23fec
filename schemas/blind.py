"""What the voter of an arena battle may read of it before the vote: the one rule, used by every route,
feed and export the voter can reach (docs/arena.md).

A battle's events keep the truth (the drawn aliases, the workers that answered) in the log, where the
reveal and admins read it. Until the chat's `chat.arena.voted`, its owner reads each event through
`blind_event` (and each read-model row through `blind_chat` / `blind_reply`): the models are the labels
"A" and "B", the workers are "", and an error text names no alias. Other readers (an admin reading
someone else's battle) read the truth. Whether the vote happened is read from the log, never from the
lagging read model: a reader that has not seen the vote yet stays blind.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from schemas.chat import (
    ArenaVoted,
    ChatCreated,
    ChatEvent,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyStarted,
)
from schemas.queries import ChatPage, ChatRow, MessagesAnswer, ReplyRow

LABELS: tuple[str, str] = ("A", "B")
HIDDEN_WORKER = ""


class Blind(msgspec.Struct, frozen=True):
    """What to hide: each drawn alias and its label (side A's alias first)."""

    labels: dict[str, str]

    def label(self, alias: str) -> str:
        """The label of a drawn alias; any other alias shows as "" (a battle asks only its two)."""
        return self.labels.get(alias, "")

    def scrub(self, text: str) -> str:
        """`text` with each drawn alias replaced by its label (longest first, so one alias that contains
        the other cannot leave a piece behind)."""
        for alias in sorted(self.labels, key=len, reverse=True):
            text = text.replace(alias, f"model {self.labels[alias]}")
        return text


def blind_for(created: ChatCreated | None, revealed: bool, reader_id: str) -> Blind | None:
    """What `reader_id` must not see of this chat, or None when they may read it all: a battle is blind
    to its owner (the voter) until the vote."""
    if created is None or not created.arena or revealed or reader_id != created.owner_id:
        return None
    return Blind(labels=dict(zip(created.compare, LABELS, strict=False)))


# A failed answer's error text may name the model, its worker, or figures that tell the models apart (a
# context window's size, a cap): the voter reads only that it failed.
BLIND_ERROR = "this side's answer failed: start a new battle"


def _blind_error(error: str) -> str:
    return BLIND_ERROR if error else ""


def blind_event(event: ChatEvent, blind: Blind) -> ChatEvent:
    """The event as the voter may read it: labels for aliases, no worker ids."""
    match event:
        case ChatCreated():
            return msgspec.structs.replace(event, model="", compare=list(blind.labels.values()))
        case ReplyRequested():
            return msgspec.structs.replace(event, model=blind.label(event.model))
        case ReplyStarted() | ReplyCompleted():
            return msgspec.structs.replace(event, model=blind.label(event.model), worker_id=HIDDEN_WORKER)
        case ReplyFailed():
            return msgspec.structs.replace(event, worker_id=HIDDEN_WORKER, error=_blind_error(event.error))
        case _:
            return event


Row = TypeVar("Row", bound=ChatRow)


def blind_chat(row: Row, blind: Blind) -> Row:
    """A chat row (ChatRow, ChatDetail) as the voter may read it: no model, the labels for `compare`."""
    return msgspec.structs.replace(row, model="", compare=list(blind.labels.values()))


def blind_reply(row: ReplyRow, blind: Blind) -> ReplyRow:
    """A reply row as the voter may read it: its label for the model (and for the speaker's name, which
    is the model's alias when no bot spoke it), no worker id, no error text but that it failed."""
    label = blind.label(row.model)
    return msgspec.structs.replace(
        row,
        model=label,
        worker_id=HIDDEN_WORKER,
        speaker_name=blind.scrub(row.speaker_name) if row.speaker else label,
        error=_blind_error(row.error),
    )


def blind_messages(answer: MessagesAnswer, blind: Blind) -> MessagesAnswer:
    """A page of messages and replies as the voter may read it (the messages are the voter's own)."""
    return msgspec.structs.replace(answer, replies=[blind_reply(row, blind) for row in answer.replies])


def blind_page(page: ChatPage, blinds: dict[str, Blind]) -> ChatPage:
    """A page of chats with each chat of `blinds` (chat id -> what to hide of it) blinded."""
    rows = [blind_chat(row, blinds[row.chat_id]) if row.chat_id in blinds else row for row in page.items]
    return msgspec.structs.replace(page, items=rows)


class BlindFeed:
    """A live feed's view of a chat, event after event: blind (`blind`, None for the truth) until the
    vote goes by; the vote itself, which names both models, and every event after it are the truth."""

    def __init__(self, blind: Blind | None) -> None:
        self.blind = blind

    def see(self, event: ChatEvent) -> ChatEvent:
        """The event as this feed's reader may read it (the next one)."""
        if isinstance(event, ArenaVoted):
            self.blind = None
        return event if self.blind is None else blind_event(event, self.blind)
