"""Import ChatGPT's `conversations.json`: each conversation's active path becomes a chat of the importing
user, with the same checks as chatbus's own export (logtools/importer.py): everything is converted and
checked first, and nothing is appended when one conversation is refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec

import bus
import schemas
from logtools.importer import ImportError_, ImportReport, append_checked
from schemas.chat import (
    BranchSelected,
    ChatCreated,
    ChatEventUnion,
    MessagePosted,
    ReplyCompleted,
    ReplyRequested,
)
from schemas.ids import new_id

# A ChatGPT conversation deeper than this is refused (real ones are a few hundred nodes deep).
MAX_DEPTH = 10_000


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
    return await append_checked(nbus, chats)
