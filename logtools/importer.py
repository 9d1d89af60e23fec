"""Import chats: chatbus's own lossless JSON (keeping chat ids or not) and ChatGPT's `conversations.json`.

An import runs with the NATS rights of the services and appends events as they are written, so the
file is checked as an attacker's would be: it may hold only the events of the chats it creates
(`IMPORTABLE`: no identity, image or token events, no tombstone, nothing for another chat), every
chat is owned by the importing user and every acting user becomes that user, message, reply and
event ids are fresh (with `keep_ids` the chat id is kept, and refused when the log has it already),
and a message may show only images the importing user uploaded (what the API lets a user attach).
Everything is checked before anything is appended; a refusal names the place in the file.

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
    ChatDeleted,
    ChatEvent,
    ChatEventUnion,
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
from schemas.ids import is_valid_id, new_id
from schemas.image import is_sha256
from schemas.streams import CHAT, IMAGE
from schemas.subjects import image_stored, one_chat

# The events an import may append: a chat's own history. Not its tombstone (chat.erased), and
# nothing of IDENTITY (a role, a key, a password), IMAGE or TOKENS.
IMPORTABLE: tuple[type[ChatEvent], ...] = (
    ChatCreated,
    ChatRenamed,
    ChatDeleted,
    ChatRestored,
    MessagePosted,
    BranchSelected,
    ReplyRequested,
    ReplyStarted,
    ReplyCompleted,
    ReplyFailed,
    ReplyCancelled,
    FeedbackGiven,
)
_IMPORTABLE_TAGS = {str(t.__struct_config__.tag): t for t in IMPORTABLE}
# Fields holding ids that an import renames consistently within a chat (the chat id too, unless kept).
_ID_FIELDS = ("chat_id", "message_id", "reply_id", "parent_id", "edit_of", "node_id")
# Fields naming the acting user: always the importing user.
_USER_FIELDS = ("owner_id", "requested_by", "by", "user_id")
# A ChatGPT conversation deeper than this is refused (real ones are a few hundred nodes deep).
MAX_DEPTH = 10_000


class ImportError_(ValueError):  # noqa: N801 - not the builtin ImportError
    """The file is not something this importer reads or may append; the message says where and why."""


@dataclass
class ImportReport:
    """What an import did."""

    chats: list[str] = field(default_factory=list)  # the (new) chat ids
    events: int = 0


def _renamed(value: Any, ids: dict[str, str], user: str) -> Any:
    """A raw event with fresh ids (consistently, through `ids`) and the importing user as every actor."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in _ID_FIELDS and isinstance(v, str):
                out[k] = ids.setdefault(v, new_id(v[:1] or "x"))
            elif k == "context" and isinstance(v, list):
                out[k] = [ids.setdefault(x, new_id(x[:1] or "x")) if isinstance(x, str) else x for x in v]
            elif k == "event_id":
                out[k] = new_id("e")
            elif k in _USER_FIELDS:
                out[k] = user
            elif k == "author_id" and value.get("role", "user") == "user":
                out[k] = user
            else:
                out[k] = _renamed(v, ids, user)
        return out
    return value


def _event(raw: Any, at: str) -> ChatEventUnion:
    """One raw event of the file, if it is one an import may append."""
    if not isinstance(raw, dict):
        raise ImportError_(f"{at}: not an event (a JSON object with a `type`)")
    tag = raw.get("type")
    if tag not in _IMPORTABLE_TAGS:
        raise ImportError_(
            f"{at}: a {tag!r} event may not be imported: an import holds only its chats' own events"
            f" ({', '.join(sorted(_IMPORTABLE_TAGS))})"
        )
    try:
        return msgspec.convert(raw, type=ChatEventUnion)
    except msgspec.ValidationError as exc:
        raise ImportError_(f"{at}: not a valid {tag} event: {exc}") from exc


def _images(event: ChatEvent) -> list[str]:
    match event:
        case MessagePosted():
            return event.images
        case ReplyCompleted():
            return [*event.images_seen, *event.images_ignored]
    return []


def _check_ids(event: ChatEvent, at: str) -> None:
    """Every id that goes into a subject or a key is token-safe (with fresh ids, only a kept chat id or a
    model alias can be wrong)."""
    fields = msgspec.structs.asdict(event)
    named = [fields[k] for k in _ID_FIELDS if isinstance(fields.get(k), str)]
    if isinstance(event, ReplyRequested):
        named.append(event.model)
    for value in named:
        if not is_valid_id(value):
            raise ImportError_(f"{at}: {value!r} is not an id ([A-Za-z0-9_-], at most 64 characters)")


async def _chat_events(
    nbus: bus.Bus, chat: Any, where: str, *, keep_ids: bool, user: str, seen: set[str]
) -> list[ChatEventUnion]:
    """The events of one chat of the file, checked and made the importing user's, ready to append."""
    raw_events = chat.get("events") if isinstance(chat, dict) else None
    if not isinstance(raw_events, list) or not raw_events:
        raise ImportError_(f"{where}: a chat is an object with a list of `events`")
    events = [_event(raw, f"{where}.events[{j}]") for j, raw in enumerate(raw_events)]
    created = events[0]
    if not isinstance(created, ChatCreated):
        raise ImportError_(f"{where}.events[0]: a chat's first event is its chat.created")
    for j, event in enumerate(events):
        at = f"{where}.events[{j}]"
        if event.chat_id != created.chat_id:
            raise ImportError_(
                f"{at}: an event of chat {event.chat_id!r}, not of {created.chat_id!r} it creates"
            )
        if j and isinstance(event, ChatCreated):
            raise ImportError_(f"{at}: a second chat.created for chat {created.chat_id!r}")
    chat_id = created.chat_id
    ids: dict[str, str] = {}
    if keep_ids:
        at = f"{where}.events[0]"
        if not is_valid_id(chat_id):
            raise ImportError_(f"{at}: {chat_id!r} is not a chat id ([A-Za-z0-9_-], at most 64 characters)")
        if created.owner_id != user:
            raise ImportError_(
                f"{at}: chat {chat_id} belongs to {created.owner_id!r}, not {user!r}: import it as its"
                " owner, or without --keep-ids to make a copy"
            )
        if chat_id in seen or await bus.last_msg(nbus.js, CHAT.name, one_chat(chat_id)) is not None:
            raise ImportError_(f"{at}: chat {chat_id} exists in the log already: import without --keep-ids")
        seen.add(chat_id)
        ids[chat_id] = chat_id  # kept; message and reply ids are fresh even so (see below)
    # Message and reply ids are always fresh: the read model keys them across chats, and nothing short
    # of reading the whole log could prove a kept one unused by someone else's chat.
    out: list[ChatEventUnion] = []
    for j, raw in enumerate(raw_events):
        at = f"{where}.events[{j}]"
        event = _event(_renamed(raw, ids, user), at)
        _check_ids(event, at)
        for sha256 in _images(event):
            if not is_sha256(sha256):
                raise ImportError_(f"{at}: {sha256!r} is not an image hash (64 lowercase hex digits)")
            if await bus.last_msg(nbus.js, IMAGE.name, image_stored(sha256, user)) is None:
                raise ImportError_(
                    f"{at}: image {sha256} was not uploaded by {user}: an import may show only images"
                    " its user may attach"
                )
        if isinstance(event, ReplyRequested):
            event = msgspec.structs.replace(event, imported=True)
        out.append(event)
    return out


async def _append(nbus: bus.Bus, chats: list[list[ChatEventUnion]]) -> ImportReport:
    """Append checked chats; each chat.created only where its chat id is not taken (fenced on 0)."""
    report = ImportReport()
    for events in chats:
        head, *rest = events
        try:
            await bus.append_event(nbus.js, head, expected_subject_seq=0)
        except bus.ConcurrencyConflict as exc:
            raise ImportError_(
                f"chat {head.chat_id} was created by someone else during the import; imported before it:"
                f" {', '.join(report.chats) or 'nothing'}"
            ) from exc
        for event in rest:
            await bus.append_event(nbus.js, event)
        report.chats.append(head.chat_id)
        report.events += len(events)
    return report


async def import_chatbus(
    nbus: bus.Bus, document: dict[str, Any], *, keep_ids: bool, user: str
) -> ImportReport:
    """Append the chats of an export made by `chatbus admin export chats` (format chatbus.chats) as
    `user`'s; everything is checked first and nothing is appended when anything is refused."""
    if not isinstance(document, dict) or document.get("format") != "chatbus.chats":
        raise ImportError_("not a chatbus chats export (format chatbus.chats)")
    chats = document.get("chats", [])
    if not isinstance(chats, list):
        raise ImportError_("chats: a list of chats expected")
    seen: set[str] = set()
    checked = [
        await _chat_events(nbus, chat, f"chats[{i}]", keep_ids=keep_ids, user=user, seen=seen)
        for i, chat in enumerate(chats)
    ]
    return await _append(nbus, checked)


# ---------------------------------------------------------------- ChatGPT conversations.json


def _time(value: Any) -> datetime:
    if isinstance(value, (int, float)) and value > 0:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):  # beyond what a datetime holds
            pass
    return schemas.now()


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or {}
    parts = content.get("parts") or []
    if not parts and isinstance(content.get("text"), str):
        return str(content["text"])
    return "\n".join(p for p in parts if isinstance(p, str))


def _path_nodes(mapping: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of the conversation tree, parents before children, siblings in order.

    A node reached twice (one that lists itself or an ancestor as a child, or has two parents), a
    node no root leads to (parents in a ring), or a tree deeper than MAX_DEPTH is refused.
    """
    if not all(isinstance(v, dict) for v in mapping.values()):
        raise ImportError_(f"{where}.mapping: each node is an object")
    roots = [k for k, v in mapping.items() if not v.get("parent") or v.get("parent") not in mapping]
    stack = [(root, 1) for root in reversed(roots)]
    seen: set[str] = set()
    while stack:
        node_id, depth = stack.pop()
        if node_id in seen:
            raise ImportError_(f"{where}.mapping[{node_id!r}]: reached twice: the tree has a cycle")
        if depth > MAX_DEPTH:
            raise ImportError_(f"{where}.mapping[{node_id!r}]: deeper than {MAX_DEPTH} nodes")
        seen.add(node_id)
        node = mapping[node_id]
        yield node_id, node
        children = node.get("children") or []
        if not isinstance(children, list):
            raise ImportError_(f"{where}.mapping[{node_id!r}].children: a list expected")
        stack.extend((c, depth + 1) for c in reversed(children) if isinstance(c, str) and c in mapping)
    if len(seen) < len(mapping):
        ring = sorted(set(mapping) - seen)[:3]
        raise ImportError_(f"{where}.mapping: nodes {ring} hang on no root: their parents form a cycle")


def chatgpt_events(conversation: Any, owner: str, where: str = "conversation") -> list[ChatEventUnion]:
    """One ChatGPT conversation as chatbus events (branches kept; the current node selected)."""
    mapping = conversation.get("mapping") if isinstance(conversation, dict) else None
    if not isinstance(mapping, dict):
        raise ImportError_(f"{where}: a conversation has no `mapping`: not a ChatGPT conversations.json")
    chat_id = new_id("c")
    created_at = _time(conversation.get("create_time"))
    system = ""
    events: list[ChatEventUnion] = []
    ours: dict[str, str] = {}  # ChatGPT node id -> our message/reply id
    last_user: dict[str, str] = {}  # ChatGPT node id -> the user message it answers / follows
    model = "chatgpt"
    completions: dict[str, int] = {}  # our reply id -> index of its reply.completed in events
    for node_id, node in _path_nodes(mapping, where):
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
    """Import a ChatGPT export (`conversations.json`: a list of conversations) as `owner`'s chats;
    every conversation is converted first, and nothing is appended when one is refused."""
    if not isinstance(conversations, list):
        raise ImportError_("conversations.json holds a list of conversations")
    chats = [chatgpt_events(conversation, owner, f"[{i}]") for i, conversation in enumerate(conversations)]
    return await _append(nbus, chats)
