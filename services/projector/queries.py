"""Read-model queries: plain functions of a DuckDB cursor and a query struct, returning answer structs."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import duckdb
import msgspec

from schemas.queries import (
    MAX_PAGE_BYTES,
    MAX_PAGE_SIZE,
    ChatAnswer,
    ChatDetail,
    ChatPage,
    FloorInfo,
    GetChat,
    ListChats,
    ListMessages,
    MessageRow,
    MessagesAnswer,
    ParticipantInfo,
    PathNode,
    Rating,
    ReplyRow,
)
from schemas.tree import ChatTree
from services.projector.errors import ProjectorError
from services.projector.tables import CHATS, FEEDBACK, FLOORS, MESSAGES, PARTICIPANTS, REPLIES

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
        parsed = _decode(cursor, _Cursor)
        return _EPOCH + parsed.updated_us * _MICROSECOND, parsed.chat_id
    except (binascii.Error, ValueError, OverflowError, msgspec.DecodeError) as exc:
        raise BadQuery(f"not a chat cursor: {cursor!r}") from exc


class _SeqCursor(msgspec.Struct, array_like=True, tag="m"):
    """Where a page of a chat's messages ended: the last row's stream sequence."""

    seq: int


def encode_seq_cursor(seq: int) -> str:
    """An opaque cursor that resumes after the row at `seq`."""
    return base64.urlsafe_b64encode(msgspec.json.encode(_SeqCursor(seq=seq))).decode().rstrip("=")


def decode_seq_cursor(cursor: str) -> int:
    """The sequence a messages cursor resumes after; BadQuery when it is not one of ours."""
    try:
        return _decode(cursor, _SeqCursor).seq
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise BadQuery(f"not a messages cursor: {cursor!r}") from exc


def _decode(cursor: str, kind: type[Any]) -> Any:
    return msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), type=kind)


Row = tuple[Any, ...]


def newest_first_page(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    params: list[Any],
    *,
    order: tuple[str, str],
    cursor: str | None,
    limit: int,
    key: Callable[[Row], tuple[datetime, str]],
) -> tuple[list[Row], str | None]:
    """One page of `sql` (a SELECT ... WHERE ...) newest first by `order` (a time column, then an id column
    to break ties), resuming after `cursor`; `limit` clamped to 1..MAX_PAGE_SIZE. The rows and the cursor
    of the next page (`key`: a row's time and id), None on the last page."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    at_column, id_column = order
    params = list(params)
    if cursor:
        at, after_id = decode_cursor(cursor)
        sql += f" AND ({at_column} < ? OR ({at_column} = ? AND {id_column} < ?))"
        params += [at, at, after_id]
    sql += f" ORDER BY {at_column} DESC, {id_column} DESC LIMIT ?"
    params.append(limit + 1)
    fetched = cur.execute(sql, params).fetchall()
    rows = fetched[:limit]
    return rows, encode_cursor(*key(rows[-1])) if len(fetched) > limit else None


def list_chats(cur: duckdb.DuckDBPyConnection, query: ListChats) -> ChatPage:
    """A user's chats, most recently updated first, `limit` (at most MAX_PAGE_SIZE) per page."""
    sql = f"SELECT {CHATS.select()} FROM chats WHERE owner_id = ?"
    params: list[Any] = [query.user_id]
    if not query.include_deleted:
        sql += " AND NOT deleted"
    if query.origin is not None:
        sql += " AND origin = ?"
        params.append(query.origin)
    rows, next_cursor = newest_first_page(
        cur,
        sql,
        params,
        order=("updated_at", "chat_id"),
        cursor=query.cursor,
        limit=query.limit,
        key=_chat_key,
    )
    return ChatPage(items=[CHATS.read(values) for values in rows], next_cursor=next_cursor)


def _chat_key(values: Row) -> tuple[datetime, str]:
    chat = CHATS.read(values)
    return chat.updated_at, chat.chat_id


def get_chat(cur: duckdb.DuckDBPyConnection, query: GetChat) -> ChatAnswer:
    """One chat, deleted or not, with its bots and their floor; None when unknown."""
    sql = f"SELECT {CHATS.select()} FROM chats WHERE chat_id = ?"
    fetched = cur.execute(sql, [query.chat_id]).fetchone()
    if fetched is None:
        return ChatAnswer(chat=None)
    participants = cur.execute(
        f"SELECT {PARTICIPANTS.select(ParticipantInfo)} FROM participants WHERE chat_id = ? ORDER BY seq",
        [query.chat_id],
    ).fetchall()
    floor = cur.execute(
        f"SELECT {FLOORS.select(FloorInfo)} FROM floors WHERE chat_id = ?", [query.chat_id]
    ).fetchone()
    chat = ChatDetail(
        **msgspec.structs.asdict(CHATS.read(fetched)),
        participants=[PARTICIPANTS.read_part(ParticipantInfo, values) for values in participants],
        floor=None if floor is None else FLOORS.read_part(FloorInfo, floor),
    )
    return ChatAnswer(chat=chat)


def list_messages(cur: duckdb.DuckDBPyConnection, query: ListMessages) -> MessagesAnswer:
    """A page of a chat's messages and replies in stream order: `limit` rows (at most MAX_PAGE_SIZE) and
    MAX_PAGE_BYTES of them (one row at least), after the cursor's; with the active path's nodes among them.

    Its queries read one snapshot: a batch committed between them would put a node on the path whose row
    the page lacks."""
    cur.execute("BEGIN TRANSACTION")
    try:
        return _messages_page(cur, query)
    finally:
        cur.execute("ROLLBACK")  # nothing was written


def _messages_page(cur: duckdb.DuckDBPyConnection, query: ListMessages) -> MessagesAnswer:
    limit = max(1, min(query.limit, MAX_PAGE_SIZE))
    after = decode_seq_cursor(query.cursor) if query.cursor else 0
    page: list[MessageRow | ReplyRow] = [
        MESSAGES.read(values)
        for values in cur.execute(
            f"SELECT {MESSAGES.select()} FROM messages WHERE chat_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            [query.chat_id, after, limit + 1],
        ).fetchall()
    ]
    page += [
        REPLIES.read(values)
        for values in cur.execute(
            f"SELECT {REPLIES.select()} FROM replies WHERE chat_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            [query.chat_id, after, limit + 1],
        ).fetchall()
    ]
    page.sort(key=lambda row: row.seq)
    rows, more = _fill(page, limit)
    last = rows[-1].seq if more else 2**63 - 1
    tree = _tree(cur, query.chat_id)
    path = [
        PathNode(node_id=n, kind=tree.nodes[n].kind, siblings=tree.siblings(n))
        for n in tree.active_path()
        if after < tree.nodes[n].seq <= last
    ]
    messages = [row for row in rows if isinstance(row, MessageRow)]
    replies = _with_choices(cur, query.chat_id, [row for row in rows if isinstance(row, ReplyRow)])
    ratings = cur.execute(
        f"SELECT {FEEDBACK.select(Rating)} FROM feedback WHERE chat_id = ? AND user_id = ? ORDER BY seq",
        [query.chat_id, query.user_id],
    ).fetchall()
    in_page = {reply.reply_id for reply in replies}
    return MessagesAnswer(
        messages=messages,
        replies=replies,
        active_path=path,
        ratings=[
            r for r in (FEEDBACK.read_part(Rating, values) for values in ratings) if r.reply_id in in_page
        ],
        next_cursor=encode_seq_cursor(last) if more else None,
    )


def _with_choices(cur: duckdb.DuckDBPyConnection, chat_id: str, replies: list[ReplyRow]) -> list[ReplyRow]:
    """Replies with `chosen` set where their message's side-by-side choice names them."""
    chosen: dict[str, bool] = {}
    for reply_id, rejected in cur.execute(
        "SELECT reply_id, rejected FROM choices WHERE chat_id = ?", [chat_id]
    ).fetchall():
        chosen.update(dict.fromkeys(rejected, False))
        chosen[reply_id] = True
    if not chosen:
        return replies
    return [
        msgspec.structs.replace(r, chosen=chosen[r.reply_id]) if r.reply_id in chosen else r for r in replies
    ]


def _fill(rows: list[MessageRow | ReplyRow], limit: int) -> tuple[list[MessageRow | ReplyRow], bool]:
    """The first rows that fit a page (`limit` of them and MAX_PAGE_BYTES, one at least), and whether any
    are left."""
    taken: list[MessageRow | ReplyRow] = []
    size = 0
    for row in rows:
        size += len(msgspec.json.encode(row))
        if taken and (len(taken) == limit or size > MAX_PAGE_BYTES):
            return taken, True
        taken.append(row)
    return taken, False


def _tree(cur: duckdb.DuckDBPyConnection, chat_id: str) -> ChatTree:
    """The chat's tree (ids only, no text): its nodes and selections applied in stream order, as the log
    has them."""
    steps: list[tuple[int, int, tuple[Any, ...]]] = [
        (seq, 0, (message_id, parent_id, edit_of))
        for message_id, parent_id, edit_of, seq in cur.execute(
            "SELECT message_id, parent_id, edit_of, seq FROM messages WHERE chat_id = ?", [chat_id]
        ).fetchall()
    ]
    steps += [
        (seq, 1, (reply_id, message_id))
        for reply_id, message_id, seq in cur.execute(
            "SELECT reply_id, message_id, seq FROM replies WHERE chat_id = ?", [chat_id]
        ).fetchall()
    ]
    steps += [
        (seq, 2, (node_id,))
        for node_id, seq in cur.execute(
            "SELECT node_id, seq FROM branch_selections WHERE chat_id = ?", [chat_id]
        ).fetchall()
    ]
    tree = ChatTree()
    for seq, kind, item in sorted(steps, key=lambda step: step[:2]):
        if kind == 0:
            tree.add_message(item[0], seq, item[1], item[2])
        elif kind == 1:
            tree.add(item[0], "reply", item[1], seq)
        else:
            tree.select(item[0])
    return tree
