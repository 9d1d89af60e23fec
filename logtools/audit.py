"""A chat's audit trail read from the log: every event of it as when / who / what (API and CLI share it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

import bus
import schemas
from bus import JetStream
from schemas.audit import AuditEntry
from schemas.chat import (
    BranchSelected,
    ChatCreated,
    ChatDeleted,
    ChatErased,
    ChatEvent,
    ChatRenamed,
    ChatRestored,
    FeedbackGiven,
    MessagePosted,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyStarted,
)
from schemas.streams import CHAT
from schemas.subjects import one_chat

_PREVIEW = 80


async def read_audit(js: JetStream, chat_id: str) -> list[AuditEntry]:
    """The audit lines of every event the log holds for the chat, in order (none: no such chat)."""
    msgs = await bus.read_all(js, CHAT.name, [one_chat(chat_id)])
    return audit_entries((m.seq, m.data) for m in msgs)


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def _describe(event: ChatEvent) -> tuple[str, str, str, dict[str, Any]]:
    """(who, what, model, params) of an event."""
    match event:
        case ChatCreated():
            return event.owner_id, f"created {event.title!r}", event.model, {}
        case ChatRenamed():
            return event.by, f"renamed to {event.title!r}", "", {}
        case ChatDeleted():
            return event.by, "deleted", "", {}
        case ChatRestored():
            return event.by, "restored", "", {}
        case ChatErased():
            return event.by, "erased", "", {}
        case MessagePosted():
            where = f" (edit of {event.edit_of})" if event.edit_of else ""
            images = f" +{len(event.images)} image(s)" if event.images else ""
            return (
                event.author_id,
                f"message {event.message_id}{where}: {_preview(event.content)}{images}",
                "",
                {},
            )
        case ReplyRequested():
            params = msgspec.structs.asdict(event.params)
            what = f"reply {event.reply_id} requested for {event.message_id} (context {len(event.context)})"
            return event.requested_by, what, event.model, params
        case ReplyStarted():
            return event.worker_id, f"reply {event.reply_id} attempt {event.attempt} started", event.model, {}
        case ReplyCompleted():
            what = (
                f"reply {event.reply_id} {event.finish_reason}: {event.completion_tokens} tokens "
                f"({event.prompt_tokens} prompt): {_preview(event.text)}"
            )
            return event.worker_id, what, event.model, {}
        case ReplyFailed():
            return event.worker_id, f"reply {event.reply_id} failed: {_preview(event.error)}", "", {}
        case ReplyCancelled():
            return event.by, f"reply {event.reply_id} cancel asked", "", {}
        case BranchSelected():
            return event.by, f"branch to {event.node_id} selected", "", {}
        case FeedbackGiven():
            rating = event.rating or "withdrawn"
            note = f": {_preview(event.comment)}" if event.comment else ""
            return event.user_id, f"rated {event.reply_id} {rating}{note}", "", {}
    return "", type(event).__name__, "", {}


def audit_entries(stored: Iterable[tuple[int, bytes]]) -> list[AuditEntry]:
    """The audit lines of a chat's stored messages (seq, data), in order; unreadable ones skipped."""
    entries = []
    for seq, data in stored:
        try:
            event = schemas.decode_event(data)
        except msgspec.DecodeError:
            continue
        if isinstance(event, ChatEvent):
            entries.append(audit_entry(seq, event))
    return entries


def audit_entry(seq: int, event: ChatEvent) -> AuditEntry:
    """The audit line of one event."""
    who, what, model, params = _describe(event)
    fields = msgspec.to_builtins(event)
    return AuditEntry(
        seq=seq,
        at=event.at,
        type=str(fields.get("type", "")),
        who=who,
        what=what,
        model=model,
        params=params,
        event=fields,
    )
