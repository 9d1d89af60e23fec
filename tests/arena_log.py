"""Arena battles written into the log for tests: the events a battle and its vote append (until the
battle routes make them, tests append them through the bus, as those routes do)."""

from __future__ import annotations

from datetime import datetime

import numpy as np

import bus
import schemas
from bus import Bus
from schemas.chat import ArenaVoted, ChatCreated, MessagePosted, ReplyCompleted, ReplyRequested, Vote
from schemas.ids import new_id


def voted(
    chat_id: str,
    voter: str,
    model_a: str,
    model_b: str,
    vote: Vote,
    *,
    at: datetime | None = None,
    category: str = "",
    tokens: tuple[int, int] = (10, 10),
    replies: tuple[str, str] = ("", ""),
) -> ArenaVoted:
    """`chat.<chat_id>.arena.voted`."""
    return ArenaVoted(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=at or schemas.now(),
        voter_id=voter,
        vote=vote,
        model_a=model_a,
        model_b=model_b,
        replies_a=[replies[0]] if replies[0] else [],
        replies_b=[replies[1]] if replies[1] else [],
        tokens_a=tokens[0],
        tokens_b=tokens[1],
        category=category,
    )


def created(chat_id: str, voter: str, model_a: str, model_b: str, category: str = "") -> ChatCreated:
    """A battle's `chat.created`: blind (model ""), the two models drawn in `compare`."""
    return ChatCreated(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=schemas.now(),
        owner_id=voter,
        title="battle",
        origin="arena",
        compare=[model_a, model_b],
        arena=True,
        category=category,
    )


def whole_battle(
    voter: str, model_a: str, model_b: str, vote: Vote, prompt: str, answers: tuple[str, str]
) -> list[schemas.Event]:
    """A battle with one prompt, both sides' completed answers, and its vote."""
    chat_id, message_id = new_id("c"), new_id("m")
    replies = (new_id("r"), new_id("r"))
    now = schemas.now()
    events: list[schemas.Event] = [
        created(chat_id, voter, model_a, model_b),
        MessagePosted(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=now,
            message_id=message_id,
            author_id=voter,
            content=prompt,
        ),
    ]
    for reply_id, model in zip(replies, (model_a, model_b), strict=True):
        events.append(
            ReplyRequested(
                event_id=new_id("e"),
                chat_id=chat_id,
                at=now,
                reply_id=reply_id,
                message_id=message_id,
                model=model,
                context=[message_id],
                requested_by=voter,
            )  # fmt: skip
        )
    for reply_id, model, text in zip(replies, (model_a, model_b), answers, strict=True):
        events.append(
            ReplyCompleted(
                event_id=new_id("e"),
                chat_id=chat_id,
                at=now,
                reply_id=reply_id,
                attempt=1,
                worker_id="w1",
                model=model,
                text=text,
                prompt_tokens=5,
                completion_tokens=len(text.split()),
                finish_reason="stop",
            )  # fmt: skip
        )
    events.append(voted(chat_id, voter, model_a, model_b, vote, replies=replies))
    return events


def strength_votes(
    strength: dict[str, float], n: int, seed: int, voters: tuple[str, ...] = ("ann",)
) -> list[tuple[str, str, str, Vote]]:
    """(voter, model_a, model_b, vote) drawn from known base-10 strengths, 10% ties and 5% both bad."""
    rng = np.random.default_rng(seed)
    names = list(strength)
    out: list[tuple[str, str, str, Vote]] = []
    for k in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        p = 1.0 / (1.0 + 10.0 ** (strength[names[b]] - strength[names[a]]))
        u = rng.random()
        vote: Vote = "tie" if u < 0.1 else "both_bad" if u < 0.15 else ("A" if rng.random() < p else "B")
        out.append((voters[k % len(voters)], names[a], names[b], vote))
    return out


async def append_votes(
    nbus: Bus,
    votes: list[tuple[str, str, str, Vote]],
    *,
    at: datetime | None = None,
    category: str = "",
) -> list[str]:
    """A battle (its creation) and its vote for each (voter, model_a, model_b, vote); the chat ids."""
    events: list[schemas.Event] = []
    chats = []
    for voter, a, b, vote in votes:
        chat_id = new_id("c")
        chats.append(chat_id)
        events += [
            created(chat_id, voter, a, b, category),
            voted(chat_id, voter, a, b, vote, at=at, category=category),
        ]
    for start in range(0, len(events), 500):
        await bus.append_events(nbus.js, events[start : start + 500])
    return chats
