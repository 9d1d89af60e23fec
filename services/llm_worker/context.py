"""Build the conversation a reply request says the model sees, from the chat's events."""

from __future__ import annotations

from collections.abc import Iterable

import schemas
from schemas.chat import ChatCreated, MessagePosted, ReplyCompleted, ReplyRequested
from services.llm_worker.engine import ChatMessage


def context_subjects(chat_id: str) -> list[str]:
    """The subjects that hold what a prompt is built from."""
    return [f"chat.{chat_id}.created", f"chat.{chat_id}.message.posted", f"chat.{chat_id}.reply.*.completed"]


def build_messages(request: ReplyRequested, events: Iterable[schemas.Event]) -> list[ChatMessage]:
    """Chat messages for a request: the system prompt, then exactly `request.context` in order.

    A message with images lists their hashes under "images" (the engine decides whether it sees them).
    """
    system = ""
    turns: dict[str, ChatMessage] = {}
    for event in events:
        match event:
            case ChatCreated():
                system = event.system_prompt
            case MessagePosted():
                turn: ChatMessage = {"role": event.role, "content": event.content}
                if event.images:
                    turn["images"] = list(event.images)
                turns[event.message_id] = turn
            case ReplyCompleted() if event.finish_reason != "error":
                turns.setdefault(event.reply_id, {"role": "assistant", "content": event.text})
    messages: list[ChatMessage] = [{"role": "system", "content": system}] if system else []
    messages.extend(turns[item] for item in request.context if item in turns)
    return messages


def image_hashes(messages: list[ChatMessage]) -> list[str]:
    """The distinct images of the messages, in the order they appear."""
    return list(dict.fromkeys(sha for message in messages for sha in message.get("images", ())))
