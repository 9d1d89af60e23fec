"""Chats with several speakers for the audit and export tests, made of real events appended to the log.

No conductor or party routes are needed: each turn is appended as the conductor and the worker would
append it (a reply follows the active leaf, its context is the path, its request names the speaker).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import bus
import schemas
from bus import Bus
from schemas.bot import BotSpec
from schemas.chat import (
    BranchSelected,
    ChatCreated,
    ChatEvent,
    ChoiceMade,
    FeedbackGiven,
    Floor,
    FloorPaused,
    FloorResumed,
    FloorSet,
    MessagePosted,
    ParticipantJoined,
    ParticipantMuted,
    ReplyCompleted,
    ReplyRequested,
    SpeakerNamed,
)
from schemas.ids import new_id

ZEN_PROMPT = "You are calm."
HOT_PROMPT = "You are angry."
DEBATE = "A debate."


@dataclass
class Chat:
    """A chat being written to the log: its id, its owner, and the ids of what was said (by name)."""

    nbus: Bus
    owner: str
    chat_id: str = field(default_factory=lambda: new_id("c"))
    ids: dict[str, str] = field(default_factory=dict)

    def id(self, name: str) -> str:
        """The chat-unique id of the node, participant or event called `name` in the test."""
        if name not in self.ids:
            self.ids[name] = new_id(name)
        return self.ids[name]

    def base(self) -> dict[str, Any]:
        return {"event_id": new_id("e"), "chat_id": self.chat_id, "at": schemas.now()}

    async def append(self, *events: ChatEvent) -> None:
        for event in events:
            await bus.append_event(self.nbus.js, event)

    async def post(self, name: str, text: str, parent: str | None) -> None:
        await self.append(
            MessagePosted(
                **self.base(),
                message_id=self.id(name),
                author_id=self.owner,
                author_name=self.owner.capitalize(),
                content=text,
                parent_id=self.id(parent) if parent else None,
            )
        )

    async def turn(
        self, name: str, after: str, context: list[str], text: str, model: str, speaker: str = ""
    ) -> None:
        """A reply requested after the node `after` (by the conductor for a speaker) and completed."""
        rid = self.id(name)
        pid = self.id(speaker) if speaker else ""
        await self.append(
            ReplyRequested(
                **self.base(),
                reply_id=rid,
                message_id=self.id(after),
                model=model,
                context=[self.id(n) for n in context],
                requested_by="conductor" if speaker else self.owner,
                speaker=pid,
            ),
            ReplyCompleted(
                **self.base(),
                reply_id=rid,
                attempt=1,
                worker_id="w1",
                model=model,
                text=text,
                prompt_tokens=5,
                completion_tokens=2,
                finish_reason="stop",
                speaker=pid,
            ),
        )

    async def rate(self, name: str, rating: Any) -> None:
        rated = FeedbackGiven(**self.base(), reply_id=self.id(name), user_id=self.owner, rating=rating)
        await self.append(rated)


async def party_chat(nbus: Bus, owner: str) -> Chat:
    """Zen Sage (demo) and Hot Head (other, sees 1 turn) debate Ann's question with a moderator:

    m1 (Ann) → r1 (Zen) → r2 (Hot) → pause, resume, Zen named → r3 (Zen), regenerated as r3b;
    r3 rated up, r3b down, r3 selected again; Hot Head muted. Active path: m1, r1, r2, r3.
    """
    chat = Chat(nbus, owner)
    zen = BotSpec(name="Zen Sage", model="demo", system_prompt=ZEN_PROMPT)
    hot = BotSpec(name="Hot Head", model="other", system_prompt=HOT_PROMPT, history=1)
    await chat.append(
        ChatCreated(**chat.base(), owner_id=owner, title="party", model="demo", system_prompt=DEBATE),
        ParticipantJoined(**chat.base(), participant_id=chat.id("zen"), bot_id="bzen", bot=zen, by=owner),
        ParticipantJoined(**chat.base(), participant_id=chat.id("hot"), bot_id="bhot", bot=hot, by=owner),
        FloorSet(**chat.base(), floor=Floor(policy="round_robin", rounds=2), by=owner),
    )
    await chat.post("m1", "Tea or coffee?", None)
    await chat.turn("r1", "m1", ["m1"], "Tea, surely.", "demo", "zen")
    await chat.turn("r2", "r1", ["m1", "r1"], "Coffee!", "other", "hot")
    await chat.append(
        FloorPaused(**chat.base(), by=owner, cancel_running=True),
        FloorResumed(**chat.base(), by=owner),
        SpeakerNamed(**chat.base(), participant_id=chat.id("zen"), by=owner),
    )
    await chat.turn("r3", "r2", ["m1", "r1", "r2"], "Still tea.", "demo", "zen")
    await chat.turn("r3b", "r2", ["m1", "r1", "r2"], "Green tea.", "demo", "zen")
    await chat.rate("r3", "up")
    await chat.rate("r3b", "down")
    await chat.append(
        BranchSelected(**chat.base(), node_id=chat.id("r3"), by=owner),
        ParticipantMuted(**chat.base(), participant_id=chat.id("hot"), by=owner),
    )
    return chat


async def compare_chat(nbus: Bus, owner: str) -> Chat:
    """Three models answer one message side by side; the owner picks b, then changes their mind to a."""
    chat = Chat(nbus, owner)
    await chat.append(
        ChatCreated(
            **chat.base(), owner_id=owner, title="fruit", model="demo", system_prompt="Be brief.",
            compare=["demo", "other", "third"],
        )
    )  # fmt: skip
    await chat.post("m1", "Name a fruit.", None)
    for name, model, text in (("ra", "demo", "Apple"), ("rb", "other", "Banana"), ("rc", "third", "Cherry")):
        await chat.turn(name, "m1", ["m1"], text, model)
    for chosen, rejected in (("rb", ["ra", "rc"]), ("ra", ["rb", "rc"])):
        await chat.append(
            ChoiceMade(
                **chat.base(),
                message_id=chat.id("m1"),
                reply_id=chat.id(chosen),
                rejected=[chat.id(r) for r in rejected],
                by=owner,
            )
        )
    return chat
