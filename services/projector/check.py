"""Compare read models without copying them: per table a row count and an order-free hash of its rows,
and per chat a hash of every row that belongs to it (so a difference can be named)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from schemas.queries import Digest, TableDigest
from services.projector import tables
from services.projector.store import Store

MAX_CHATS = 200_000  # beyond this, only table digests travel (the answer must fit a NATS message)


def digest(con: duckdb.DuckDBPyConnection, checkpoints: dict[str, int], *, with_chats: bool = True) -> Digest:
    """The digest of the read model open on `con` (call it between batches: it must not move)."""
    table_digests = {}
    chats: dict[str, int] = {}
    for table in tables.READ_MODEL:
        columns = ", ".join(table.names)
        count, value = con.execute(
            f"SELECT count(*), coalesce(bit_xor(hash({columns})), 0) FROM {table.name}"
        ).fetchone() or (0, 0)
        table_digests[table.name] = TableDigest(rows=int(count), hash=int(value))
        if with_chats and table in tables.BY_CHAT:
            grouped = con.execute(
                f"SELECT chat_id, bit_xor(hash('{table.name}', {columns})) FROM {table.name} GROUP BY chat_id"
            ).fetchall()
            for chat_id, value in grouped:
                chats[chat_id] = chats.get(chat_id, 0) ^ int(value)
    if len(chats) > MAX_CHATS:
        chats = {}
    return Digest(checkpoints=dict(checkpoints), tables=table_digests, chats=chats)


def differences(live: Digest, rebuilt: Digest) -> list[str]:
    """What differs, one line each (empty: the same read model)."""
    lines = []
    for name, mine in live.tables.items():
        theirs = rebuilt.tables.get(name)
        if theirs is None:
            lines.append(f"table {name}: missing from the rebuild")
        elif mine != theirs:
            lines.append(f"table {name}: live {mine.rows} rows, rebuilt {theirs.rows} rows, contents differ")
    if live.chats or rebuilt.chats:
        for chat_id in sorted(live.chats.keys() | rebuilt.chats.keys()):
            if live.chats.get(chat_id) != rebuilt.chats.get(chat_id):
                where = (
                    "only live"
                    if chat_id not in rebuilt.chats
                    else "only rebuilt"
                    if chat_id not in live.chats
                    else "rows differ"
                )
                lines.append(f"chat {chat_id}: {where}")
    return lines


def file_digest(path: Path, *, with_chats: bool = True) -> Digest:
    """The digest of the read model in the DuckDB file at `path` (a replay's result), at its checkpoints."""
    store = Store.open(path)
    try:
        return digest(store.con, dict(store.checkpoints), with_chats=with_chats)
    finally:
        store.close()
