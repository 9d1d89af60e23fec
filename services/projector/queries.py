"""Read-model queries: plain functions of a DuckDB cursor and a query struct, returning answer structs."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import msgspec

from schemas.queries import (
    ChatAnswer,
    ChatPage,
    ChatRow,
    GetChat,
    ListChats,
    ListMessages,
    MessageRow,
    MessagesAnswer,
    ReplyRow,
)
from services.projector.errors import ProjectorError
from services.projector.tables import CHATS, MESSAGES, REPLIES, Table

MAX_PAGE = 200
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


class BadQuery(ProjectorError):
    """A query the read model cannot answer as asked (e.g. a cursor it did not issue)."""


class _Cursor(msgspec.Struct, array_like=True):
    """Where a page of chats ended: the last chat's updated_at (µs since epoch) and id."""

    updated_us: int
    chat_id: str


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _row(table: Table, values: tuple[Any, ...], times: tuple[str, ...]) -> dict[str, Any]:
    row = table.row(values)
    for name in times:
        row[name] = _utc(row[name])
    return row


def _chat(values: tuple[Any, ...]) -> ChatRow:
    return ChatRow(**_row(CHATS, values, ("created_at", "updated_at")))


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
    """A user's chats, most recently updated first, `limit` (at most 200) per page."""
    limit = max(1, min(query.limit, MAX_PAGE))
    sql = f"SELECT {', '.join(CHATS.names)} FROM chats WHERE owner_id = ?"
    params: list[Any] = [query.user_id]
    if not query.include_deleted:
        sql += " AND NOT deleted"
    if query.cursor:
        updated_at, chat_id = decode_cursor(query.cursor)
        sql += " AND (updated_at < ? OR (updated_at = ? AND chat_id < ?))"
        params += [updated_at, updated_at, chat_id]
    sql += " ORDER BY updated_at DESC, chat_id DESC LIMIT ?"
    params.append(limit + 1)
    fetched = cur.execute(sql, params).fetchall()
    items = [_chat(values) for values in fetched[:limit]]
    next_cursor = None
    if len(fetched) > limit:
        last = fetched[limit - 1]
        next_cursor = encode_cursor(last[CHATS.names.index("updated_at")], last[0])
    return ChatPage(items=items, next_cursor=next_cursor)


def get_chat(cur: duckdb.DuckDBPyConnection, query: GetChat) -> ChatAnswer:
    """One chat, deleted or not; None when unknown."""
    sql = f"SELECT {', '.join(CHATS.names)} FROM chats WHERE chat_id = ?"
    fetched = cur.execute(sql, [query.chat_id]).fetchone()
    return ChatAnswer(chat=None if fetched is None else _chat(fetched))


def list_messages(cur: duckdb.DuckDBPyConnection, query: ListMessages) -> MessagesAnswer:
    """A chat's messages and replies, each in stream order."""
    messages = cur.execute(
        f"SELECT {', '.join(MESSAGES.names)} FROM messages WHERE chat_id = ? ORDER BY seq", [query.chat_id]
    ).fetchall()
    replies = cur.execute(
        f"SELECT {', '.join(REPLIES.names)} FROM replies WHERE chat_id = ? ORDER BY seq", [query.chat_id]
    ).fetchall()
    return MessagesAnswer(
        messages=[MessageRow(**_row(MESSAGES, values, ("created_at",))) for values in messages],
        replies=[ReplyRow(**_row(REPLIES, values, ("requested_at", "completed_at"))) for values in replies],
    )
