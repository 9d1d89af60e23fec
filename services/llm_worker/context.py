"""Read what a reply request's model sees from the log, as chat-template messages.

Which messages those are is the chat state's rule (schemas/chat_state.py, `context_for`); the
worker reads only the subjects that rule needs (`schemas.subjects.context_subjects`), and this
module shapes their turns for the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import bus
from schemas.chat import ChatEvent, ReplyRequested
from schemas.chat_state import ChatState, Turn, context_for
from services.llm_worker.engine import ChatMessage

log = logging.getLogger(__name__)


def build_messages(request: ReplyRequested, stored: Iterable[bus.StoredMsg]) -> list[ChatMessage]:
    """Chat messages for a request: the system prompt, then exactly `request.context` in order.

    A message with images lists their hashes under "images" (the engine decides whether it sees them).
    """
    state = ChatState(request.chat_id)
    for msg in stored:
        event = bus.decode_one(msg.subject, msg.data, where=f"seq {msg.seq}")
        if event is None:  # unreadable or misfiled (logged): never part of a prompt
            continue
        if isinstance(event, ChatEvent):
            state.apply(msg.seq, event)
    return [_message(turn) for turn in context_for(state, request)]


def _message(turn: Turn) -> ChatMessage:
    message: ChatMessage = {"role": turn.role, "content": turn.content}
    if turn.images:
        message["images"] = list(turn.images)
    return message


def image_hashes(messages: list[ChatMessage]) -> list[str]:
    """The distinct images of the messages, in the order they appear."""
    return list(dict.fromkeys(sha for message in messages for sha in message.get("images", ())))
