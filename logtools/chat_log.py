"""A chat's state read from the log (never the read model, which may lag), and decisions appended to it."""

from __future__ import annotations

from collections.abc import Callable

import bus
from bus import Appended, JetStream
from schemas.chat import ChatEvent
from schemas.chat_decide import Decision
from schemas.chat_state import ChatState
from schemas.streams import CHAT
from schemas.subjects import one_chat

# How often a fenced decision is read and made again when the chat changed under it.
DECIDE_ATTEMPTS = 5


class ChatBusy(Exception):
    """A fenced decision lost the race every time: the chat keeps changing."""


async def read_chat_state(js: JetStream, chat_id: str) -> ChatState:
    """Fold every event of the chat the log holds now."""
    state = ChatState(chat_id)
    for msg in await bus.read_direct(js, CHAT.name, one_chat(chat_id)):
        event = bus.decode_one(msg.subject, msg.data, where=f"{CHAT.name} seq {msg.seq}")
        if event is None:  # a newer version's, or misfiled: its sequence still counts
            state.skip(msg.seq, msg.subject)
            continue
        if isinstance(event, ChatEvent):
            state.apply(msg.seq, event)
    return state


async def append_decision(js: JetStream, decision: Decision) -> list[Appended]:
    """Append the decision's events in order, the first under its fence (ConcurrencyConflict if it fails)."""
    fence = decision.fence
    first, *rest = decision.events
    appended = [
        await bus.append_event(
            js,
            first,
            expected_subject_seq=fence.seq if fence is not None else None,
            expected_subject=fence.subject if fence is not None else None,
        )
    ]
    for event in rest:
        appended.append(await bus.append_event(js, event))
    return appended


async def decide_and_append(
    js: JetStream, chat_id: str, decide: Callable[[ChatState], Decision], state: ChatState | None = None
) -> tuple[Decision, list[Appended]]:
    """Read the chat (unless `state` is given for the first try), decide, append; again while the fence
    finds the chat changed since (ChatBusy at last).

    Whatever `decide` raises (schemas.chat_decide.Refused) goes to the caller.
    """
    for _ in range(DECIDE_ATTEMPTS):
        if state is None:
            state = await read_chat_state(js, chat_id)
        decision = decide(state)
        state = None
        try:
            return decision, await append_decision(js, decision)
        except bus.ConcurrencyConflict:
            continue
    raise ChatBusy(f"chat {chat_id} kept changing while deciding")
