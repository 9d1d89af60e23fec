"""What the voter of an arena battle may read of it before the vote: the one rule, used by every route,
feed and export the voter can reach (docs/arena.md).

A battle's events keep the truth (the drawn aliases, the workers that answered) in the log, where the
reveal and admins read it. Until the chat's `chat.arena.voted`, its owner reads each event through
`blind_event`: the models are the labels "A" and "B", the workers are "", and an error text names no
alias. Other readers (an admin reading someone else's battle) read the truth.
"""

from __future__ import annotations

import msgspec

from schemas.chat import (
    ChatCreated,
    ChatEvent,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyStarted,
)

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
            return msgspec.structs.replace(event, worker_id=HIDDEN_WORKER, error=blind.scrub(event.error))
        case _:
            return event
