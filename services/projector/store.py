"""The DuckDB read model: schema, loading the rows a batch touches, and writing a batch atomically.

A Store is used from one thread at a time (the projector's writer thread); readers take
their own cursor with `reader()`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from services.projector import tables
from services.projector.batch import Changes, Keys
from services.projector.tables import MESSAGES, MUTABLE, Row, Table

log = logging.getLogger(__name__)

# Below this many keys a lookup is an IN list (index point lookups); above it, a join with Arrow.
_IN_LIST_MAX = 64
# Up to this many rows a table's inserts or updates are parameterised statements: registering an Arrow
# table costs ~1 ms of CPU more per statement, paid by every live transaction of a chat's few events.
_PARAMS_MAX = 4


class Store:
    """One DuckDB read-model file and the last applied sequence of each stream."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.checkpoints: dict[str, int] = dict(
            con.execute("SELECT stream, last_seq FROM checkpoints").fetchall()
        )
        # Updated by the fold as it meets tombstones (before the batch is written), read by the next fold.
        self.dead_chats: set[str] = {
            row[0] for row in con.execute("SELECT chat_id FROM erased_chats").fetchall()
        }

    @classmethod
    def open(cls, path: Path, *, indexes: bool = True) -> Store:
        """Open (or create) the read model file with its tables (and indexes, unless bulk loading)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(path))
        _match_schema(con, path)
        for table in tables.ALL:
            con.execute(table.create_table())
        store = cls(con)
        if indexes:
            store.create_indexes()
        return store

    def create_indexes(self) -> None:
        """Create the unique keys and lookup indexes that do not exist yet."""
        for table in tables.ALL:
            for statement in table.create_indexes():
                self.con.execute(statement)

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A cursor for queries from another thread (sees each committed batch)."""
        return self.con.cursor()

    def close(self) -> None:
        """Close the file (checkpointing DuckDB's WAL)."""
        self.con.close()

    def checkpoint(self, stream: str) -> int:
        """The last applied sequence of `stream` (0 when none)."""
        return self.checkpoints.get(stream, 0)

    def load(self, keys: Keys, con: duckdb.DuckDBPyConnection | None = None) -> dict[str, dict[str, Row]]:
        """The stored rows of the touched keys, per mutable table (for messages: only the key)."""
        con = con or self.con
        loaded = {table.name: _load(con, table, keys.by_table[table.name], table.names) for table in MUTABLE}
        loaded[MESSAGES.name] = _load(con, MESSAGES, keys.by_table[MESSAGES.name], [MESSAGES.key])
        return loaded

    def write(self, batch: ArrowBatch) -> None:
        """Insert new rows, write back changed ones and move the checkpoint, in one transaction."""
        con = self.con
        con.begin()
        try:
            self.apply(batch)
            con.commit()
        except BaseException:
            con.rollback()
            raise
        self.checkpoints[batch.stream] = batch.last_seq

    def apply(self, batch: ArrowBatch) -> None:
        """Write a batch and its checkpoint inside the caller's transaction (replay keeps one open)."""
        con = self.con
        # Stored rows of what this batch erased go first; the fold already left out its own.
        _erase(con, batch.erased_chats, batch.erased_users, batch.last_seq)
        for table, inserts, updates in batch.tables:
            if inserts is not None:
                _insert(con, table, inserts)
            if updates is not None:
                _update(con, table, updates)
        if batch.stream in self.checkpoints:  # committed before: a plain update is half an upsert's cost
            con.execute(
                "UPDATE checkpoints SET last_seq = ? WHERE stream = ?", [batch.last_seq, batch.stream]
            )
        else:
            con.execute(
                "INSERT INTO checkpoints VALUES (?, ?)"
                " ON CONFLICT (stream) DO UPDATE SET last_seq = excluded.last_seq",
                [batch.stream, batch.last_seq],
            )


def _erase(con: duckdb.DuckDBPyConnection, chats: set[str], users: set[str], seq: int) -> None:
    """Delete the stored rows of erased chats and users; remember the chats (in the batch's transaction)."""
    for chat_id in sorted(chats):
        for table in tables.BY_CHAT:
            con.execute(f"DELETE FROM {table.name} WHERE chat_id = ?", [chat_id])
        con.execute("INSERT INTO erased_chats VALUES (?, ?) ON CONFLICT DO NOTHING", [chat_id, seq])
    for user_id in sorted(users):
        for table in (tables.USERS, tables.API_KEYS, tables.FEEDBACK):
            con.execute(f"DELETE FROM {table.name} WHERE user_id = ?", [user_id])


def _match_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """A read model built by a version with other tables is dropped, so it is rebuilt from the log."""
    con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    found = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    wanted = tables.schema_fingerprint()
    if found is not None and found[0] == wanted:
        return
    existing = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    stale = [table.name for table in tables.ALL if table.name in existing]
    if found is not None or stale:
        log.warning("%s was built for another schema: rebuilding it from the log", path)
    for name in stale:
        con.execute(f"DROP TABLE {name}")
    con.execute(
        "INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [wanted],
    )


@dataclass
class ArrowBatch:
    """A folded batch ready to write: per table, Arrow rows to insert and to write back."""

    stream: str
    last_seq: int
    tables: list[tuple[Table, pa.Table | None, pa.Table | None]]
    erased_chats: set[str] = field(default_factory=set)
    erased_users: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, changes: Changes, stream: str, last_seq: int) -> ArrowBatch:
        """Convert the fold's rows to Arrow (the slow part of a write that needs the GIL)."""
        tables: list[tuple[Table, pa.Table | None, pa.Table | None]] = []
        for table in MUTABLE:
            inserts, updates = changes.inserts[table.name], changes.updates[table.name]
            tables.append(
                (table, table.arrow(inserts) if inserts else None, table.arrow(updates) if updates else None)
            )
        tables.append((MESSAGES, MESSAGES.arrow(changes.messages) if changes.messages else None, None))
        return cls(
            stream=stream,
            last_seq=last_seq,
            tables=tables,
            erased_chats=changes.erased_chats,
            erased_users=changes.erased_users,
        )


def _load(
    con: duckdb.DuckDBPyConnection, table: Table, keys: set[str], names: Sequence[str]
) -> dict[str, Row]:
    if not keys:
        return {}
    select = f"SELECT {', '.join(names)} FROM {table.name} WHERE {table.key} IN"
    if len(keys) <= _IN_LIST_MAX:
        fetched = con.execute(f"{select} ({', '.join('?' * len(keys))})", list(keys)).fetchall()
    else:
        con.register("wanted_keys", pa.table({"k": pa.array(list(keys), pa.string())}))
        try:
            fetched = con.execute(f"{select} (SELECT k FROM wanted_keys)").fetchall()
        finally:
            con.unregister("wanted_keys")
    return {values[0]: dict(zip(names, values, strict=True)) for values in fetched}


def _insert(con: duckdb.DuckDBPyConnection, table: Table, rows: pa.Table) -> None:
    if rows.num_rows <= _PARAMS_MAX:
        marks = ", ".join("?" * len(table.names))
        values = [list(row.values()) for row in rows.to_pylist()]  # Arrow's naive UTC times, as stored
        con.executemany(f"INSERT INTO {table.name} VALUES ({marks})", values)
        return
    con.register("batch_rows", rows)
    try:
        con.execute(f"INSERT INTO {table.name} SELECT * FROM batch_rows")
    finally:
        con.unregister("batch_rows")


def _update(con: duckdb.DuckDBPyConnection, table: Table, rows: pa.Table) -> None:
    # Indexed columns never change (and DuckDB rewrites a row whose indexed column is set).
    changed = [name for name in table.names[1:] if name not in table.indexes]
    if rows.num_rows <= _PARAMS_MAX:
        assigned = ", ".join(f"{name} = ?" for name in changed)
        values = [[row[name] for name in changed] + [row[table.key]] for row in rows.to_pylist()]
        con.executemany(f"UPDATE {table.name} SET {assigned} WHERE {table.key} = ?", values)
        return
    assignments = ", ".join(f"{name} = b.{name}" for name in changed)
    con.register("batch_rows", rows)
    try:
        con.execute(
            f"UPDATE {table.name} SET {assignments} FROM batch_rows b"
            f" WHERE {table.name}.{table.key} = b.{table.key}"
        )
    finally:
        con.unregister("batch_rows")


def dump_read_model(db_path: Path) -> dict[str, list[tuple]]:
    """Every table but checkpoints, rows sorted: for comparing a live read model with a replayed one."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return {
            table.name: con.execute(f"SELECT * FROM {table.name} ORDER BY {table.key}").fetchall()
            for table in tables.READ_MODEL
        }
    finally:
        con.close()
