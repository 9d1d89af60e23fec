"""Build the conversation a reply request says the model sees, from the chat's events."""

from __future__ import annotations

from collections.abc import Iterable

import schemas
from schemas.chat import ChatCreated, MessagePosted, ReplyCompleted, ReplyRequested


def context_subjects(chat_id: str) -> list[str]:
    """The subjects that hold what a prompt is built from."""
    return [f"chat.{chat_id}.created", f"chat.{chat_id}.message.posted", f"chat.{chat_id}.reply.*.completed"]


def build_messages(request: ReplyRequested, events: Iterable[schemas.Event]) -> list[dict[str, str]]:
    """Chat-template messages for a request: the system prompt, then exactly `request.context` in order."""
    system = ""
    turns: dict[str, dict[str, str]] = {}
    for event in events:
        match event:
            case ChatCreated():
                system = event.system_prompt
            case MessagePosted():
                turns[event.message_id] = {"role": event.role, "content": event.content}
            case ReplyCompleted() if event.finish_reason != "error":
                turns.setdefault(event.reply_id, {"role": "assistant", "content": event.text})
    messages = [{"role": "system", "content": system}] if system else []
    messages.extend(turns[item] for item in request.context if item in turns)
    return messages
