"""Import chats: chatbus's own lossless JSON (keeping ids or not) and ChatGPT's `conversations.json`.

Imported reply requests are marked `imported`, so no worker generates them again; their replies
come with them as `reply.completed` events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

import bus
import schemas
from schemas.chat import (
    BranchSelected,
    ChatCreated,
    MessagePosted,
    ReplyCompleted,
    ReplyRequested,
)
from schemas.ids import new_id
from schemas.streams import CHAT
from schemas.subjects import chat_event

# Fields holding ids that a re-import with fresh ids must rename consistently.
_ID_FIELDS = ("chat_id", "message_id", "reply_id", "parent_id", "edit_of", "node_id")
# Fields naming the acting user, set to the importing user when one is given.
_USER_FIELDS = ("owner_id", "requested_by", "by", "user_id")


class ImportError_(ValueError):  # noqa: N801 - not the builtin ImportError
    """The file is not something this importer reads; the message says what was wrong."""


@dataclass
class ImportReport:
    """What an import did."""

    chats: list[str] = field(default_factory=list)  # the (new) chat ids
    skipped: list[str] = field(default_factory=list)  # chats that exist already (keeping ids)
    events: int = 0


def _renamed(value: Any, ids: dict[str, str], user: str | None, key: str = "") -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in _ID_FIELDS and isinstance(v, str):
                out[k] = ids.setdefault(v, new_id(v[:1] or "x"))
            elif k == "context" and isinstance(v, list):
                out[k] = [ids.setdefault(x, new_id(x[:1] or "x")) for x in v]
            elif k == "event_id":
                out[k] = new_id("e")
            elif user is not None and k in _USER_FIELDS:
                out[k] = user
            elif user is not None and k == "author_id" and value.get("role", "user") == "user":
                out[k] = user
            else:
                out[k] = _renamed(v, ids, user, k)
        return out
    return value


async def import_chatbus(
    nbus: bus.Bus, document: dict[str, Any], *, keep_ids: bool, user: str | None = None
) -> ImportReport:
    """Append the events of an export made by `chatbus admin export chats` (format chatbus.chats)."""
    if document.get("format") != "chatbus.chats":
        raise ImportError_("not a chatbus chats export (format chatbus.chats)")
    report = ImportReport()
    for chat in document.get("chats", []):
        raw_events = chat.get("events", [])
        if keep_ids:
            chat_id = chat["chat_id"]
            if await bus.last_msg(nbus.js, CHAT.name, chat_event(chat_id, "created")) is not None:
                report.skipped.append(chat_id)
                continue
        else:
            ids: dict[str, str] = {}
            raw_events = [_renamed(e, ids, user) for e in raw_events]
        events = [msgspec.convert(e, type=schemas.Event) for e in raw_events]
        for event in events:
            if isinstance(event, ReplyRequested):
                event = msgspec.structs.replace(event, imported=True)
            await bus.append_event(nbus.js, event)
            report.events += 1
        created = next((e for e in events if isinstance(e, ChatCreated)), None)
        if created is not None:
            report.chats.append(created.chat_id)
    return report


# ---------------------------------------------------------------- ChatGPT conversations.json


def _time(value: Any) -> datetime:
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return schemas.now()


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or {}
    parts = content.get("parts") or []
    if not parts and isinstance(content.get("text"), str):
        return str(content["text"])
    return "\n".join(p for p in parts if isinstance(p, str))


def _path_nodes(mapping: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of the conversation tree, parents before children, siblings in order."""
    roots = [k for k, v in mapping.items() if not v.get("parent") or v.get("parent") not in mapping]
    stack = list(reversed(roots))
    while stack:
        node_id = stack.pop()
        node = mapping.get(node_id)
        if node is None:
            continue
        yield node_id, node
        stack.extend(reversed([c for c in node.get("children", []) if c in mapping]))


def chatgpt_events(conversation: dict[str, Any], owner: str) -> list[schemas.Event]:
    """One ChatGPT conversation as chatbus events (branches kept; the current node selected)."""
    mapping = conversation.get("mapping")
    if not isinstance(mapping, dict):
        raise ImportError_("a conversation has no `mapping`: not a ChatGPT conversations.json")
    chat_id = new_id("c")
    created_at = _time(conversation.get("create_time"))
    system = ""
    events: list[schemas.Event] = []
    ours: dict[str, str] = {}  # ChatGPT node id -> our message/reply id
    last_user: dict[str, str] = {}  # ChatGPT node id -> the user message it answers / follows
    model = "chatgpt"
    completions: dict[str, int] = {}  # our reply id -> index of its reply.completed in events
    for node_id, node in _path_nodes(mapping):
        message = node.get("message") or {}
        role = (message.get("author") or {}).get("role")
        parent = node.get("parent")
        anchor = ours.get(parent) if parent else None
        text = _text(message) if message else ""
        at = _time(message.get("create_time") or conversation.get("create_time"))
        to_user = message.get("recipient") in (None, "all")  # else a tool call (code, browsing)
        if role == "system" and not events and text:
            system = text
        if role == "user":
            message_id = new_id("m")
            events.append(
                MessagePosted(
                    event_id=new_id("e"),
                    chat_id=chat_id,
                    at=at,
                    message_id=message_id,
                    author_id=owner,
                    content=text or "(an attachment that was not imported)",
                    parent_id=anchor,
                )  # fmt: skip
            )
            ours[node_id] = message_id
            last_user[node_id] = message_id
        elif role == "assistant" and text and to_user and anchor in completions:
            # The same answer, continued after a tool call: one reply, as the user saw it.
            index = completions[anchor]
            done = events[index]
            assert isinstance(done, ReplyCompleted)
            events[index] = msgspec.structs.replace(done, text=f"{done.text}\n\n{text}")
            ours[node_id] = anchor
        elif role == "assistant" and text and to_user and parent is not None and last_user.get(parent):
            message_id = last_user[parent]
            model = str((message.get("metadata") or {}).get("model_slug") or "chatgpt")
            model = (
                "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "-" for c in model)[:64]
                or "chatgpt"
            )
            reply_id = new_id("r")
            events.append(
                ReplyRequested(
                    event_id=new_id("e"),
                    chat_id=chat_id,
                    at=at,
                    reply_id=reply_id,
                    message_id=message_id,
                    model=model,
                    requested_by=owner,
                    imported=True,
                )  # fmt: skip
            )
            completions[reply_id] = len(events)
            events.append(
                ReplyCompleted(
                    event_id=new_id("e"),
                    chat_id=chat_id,
                    at=at,
                    reply_id=reply_id,
                    attempt=1,
                    worker_id="import",
                    model=model,
                    text=text,
                    prompt_tokens=0,
                    completion_tokens=0,
                    finish_reason="stop",
                )  # fmt: skip
            )
            ours[node_id] = reply_id
        else:
            ours[node_id] = anchor or ""  # system, tool calls and results: children hang on what came before
        if role != "user" and parent in last_user:
            last_user[node_id] = last_user[parent]
    current = ours.get(conversation.get("current_node") or "")
    if current:
        events.append(
            BranchSelected(event_id=new_id("e"), chat_id=chat_id, at=schemas.now(), node_id=current, by=owner)
        )
    title = str(conversation.get("title") or "Imported chat")[:200] or "Imported chat"
    head = ChatCreated(
        event_id=new_id("e"), chat_id=chat_id, at=created_at, owner_id=owner, title=title, model=model,
        system_prompt=system,
    )  # fmt: skip
    return [head, *events]


async def import_chatgpt(nbus: bus.Bus, conversations: Any, owner: str) -> ImportReport:
    """Import a ChatGPT export (`conversations.json`: a list of conversations) as `owner`'s chats."""
    if not isinstance(conversations, list):
        raise ImportError_("conversations.json holds a list of conversations")
    report = ImportReport()
    for conversation in conversations:
        events = chatgpt_events(conversation, owner)
        for event in events:
            await bus.append_event(nbus.js, event)
            report.events += 1
        report.chats.append(events[0].chat_id)  # type: ignore[union-attr]
    return report
