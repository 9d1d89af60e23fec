"""Read-model queries: plain functions of a DuckDB cursor and a query struct, returning answer structs."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Any

import duckdb
import msgspec

from schemas.queries import (
    MAX_PAGE_SIZE,
    ChatAnswer,
    ChatPage,
    GetChat,
    ListChats,
    ListMessages,
    MessageRow,
    MessagesAnswer,
    PathNode,
    Rating,
    ReplyRow,
)
from schemas.tree import ChatTree
from services.projector.errors import ProjectorError
from services.projector.tables import CHATS, FEEDBACK, MESSAGES, REPLIES

_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


class BadQuery(ProjectorError):
    """A query the read model cannot answer as asked (e.g. a cursor it did not issue)."""


class _Cursor(msgspec.Struct, array_like=True):
    """Where a page of chats ended: the last chat's updated_at (µs since epoch) and id."""

    updated_us: int
    chat_id: str


def encode_cursor(updated_at: datetime, chat_id: str) -> str:
    """An opaque cursor that resumes after this chat."""
    micros = (updated_at.replace(tzinfo=None) - _EPOCH) // _MICROSECOND
    raw = msgspec.json.encode(_Cursor(updated_us=micros, chat_id=chat_id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (updated_at, chat_id) a cursor resumes after; BadQuery when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parsed = msgspec.json.decode(raw, type=_Cursor)
        return _EPOCH + parsed.updated_us * _MICROSECOND, parsed.chat_id
    except (binascii.Error, ValueError, OverflowError, msgspec.DecodeError) as exc:
        raise BadQuery(f"not a chat cursor: {cursor!r}") from exc


def list_chats(cur: duckdb.DuckDBPyConnection, query: ListChats) -> ChatPage:
    """A user's chats, most recently updated first, `limit` (at most MAX_PAGE_SIZE) per page."""
    limit = max(1, min(query.limit, MAX_PAGE_SIZE))
    sql = f"SELECT {CHATS.select()} FROM chats WHERE owner_id = ?"
    params: list[Any] = [query.user_id]
    if not query.include_deleted:
        sql += " AND NOT deleted"
    if query.origin is not None:
        sql += " AND origin = ?"
        params.append(query.origin)
    if query.cursor:
        updated_at, chat_id = decode_cursor(query.cursor)
        sql += " AND (updated_at < ? OR (updated_at = ? AND chat_id < ?))"
        params += [updated_at, updated_at, chat_id]
    sql += " ORDER BY updated_at DESC, chat_id DESC LIMIT ?"
    params.append(limit + 1)
    fetched = cur.execute(sql, params).fetchall()
    items = [CHATS.read(values) for values in fetched[:limit]]
    next_cursor = None
    if len(fetched) > limit:
        next_cursor = encode_cursor(items[-1].updated_at, items[-1].chat_id)
    return ChatPage(items=items, next_cursor=next_cursor)


def get_chat(cur: duckdb.DuckDBPyConnection, query: GetChat) -> ChatAnswer:
    """One chat, deleted or not; None when unknown."""
    sql = f"SELECT {CHATS.select()} FROM chats WHERE chat_id = ?"
    fetched = cur.execute(sql, [query.chat_id]).fetchone()
    return ChatAnswer(chat=None if fetched is None else CHATS.read(fetched))


def list_messages(cur: duckdb.DuckDBPyConnection, query: ListMessages) -> MessagesAnswer:
    """A chat's messages and replies, each in stream order."""
    messages = cur.execute(
        f"SELECT {MESSAGES.select()} FROM messages WHERE chat_id = ? ORDER BY seq", [query.chat_id]
    ).fetchall()
    replies = cur.execute(
        f"SELECT {REPLIES.select()} FROM replies WHERE chat_id = ? ORDER BY seq", [query.chat_id]
    ).fetchall()
    message_rows = [MESSAGES.read(values) for values in messages]
    reply_rows = [REPLIES.read(values) for values in replies]
    selections = cur.execute(
        "SELECT node_id, seq FROM branch_selections WHERE chat_id = ? ORDER BY seq", [query.chat_id]
    ).fetchall()
    tree = _tree(message_rows, reply_rows, selections)
    path = [
        PathNode(node_id=n, kind=tree.nodes[n].kind, siblings=tree.siblings(n)) for n in tree.active_path()
    ]
    ratings = cur.execute(
        f"SELECT {FEEDBACK.select(Rating)} FROM feedback WHERE chat_id = ? AND user_id = ? ORDER BY seq",
        [query.chat_id, query.user_id],
    ).fetchall()
    return MessagesAnswer(
        messages=message_rows,
        replies=reply_rows,
        active_path=path,
        ratings=[FEEDBACK.read_part(Rating, values) for values in ratings],
    )


def _tree(messages: list[MessageRow], replies: list[ReplyRow], selections: list[tuple[str, int]]) -> ChatTree:
    """The chat's tree: its nodes and selections applied in stream order, as the log has them."""
    steps: list[tuple[int, int, Any]] = [(m.seq, 0, m) for m in messages]
    steps += [(r.seq, 1, r) for r in replies]
    steps += [(seq, 2, node_id) for node_id, seq in selections]
    tree = ChatTree()
    for seq, kind, item in sorted(steps, key=lambda step: step[:2]):
        if kind == 0:
            tree.add_message(item.message_id, seq, item.parent_id, item.edit_of)
        elif kind == 1:
            tree.add(item.reply_id, "reply", item.message_id, seq)
        else:
            tree.select(item)
    return tree
