"""The read model's tables: columns, SQL types and Arrow types, declared once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import pyarrow as pa

Row = dict[str, Any]

_TYPES: dict[str, tuple[str, pa.DataType]] = {
    "text": ("VARCHAR", pa.string()),
    "text?": ("VARCHAR", pa.string()),
    "time": ("TIMESTAMP", pa.timestamp("us")),
    "time?": ("TIMESTAMP", pa.timestamp("us")),
    "int": ("INTEGER", pa.int32()),
    "seq": ("BIGINT", pa.int64()),
    "float": ("DOUBLE", pa.float64()),
    "bool": ("BOOLEAN", pa.bool_()),
    "bool?": ("BOOLEAN", pa.bool_()),
    "list": ("VARCHAR[]", pa.list_(pa.string())),
}


@dataclass(frozen=True)
class Table:
    """A table of the read model; the first column is its key. Times are naive UTC.

    Small tables declare the key as PRIMARY KEY. Big append-mostly tables (messages, replies)
    get a UNIQUE index instead, built after a replay's bulk load: maintaining an index row by
    row during replay costs more than the rest of the insert. Keys never collide either way:
    the fold loads the rows it touches and skips repeated creates.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    indexes: tuple[str, ...] = ()
    primary_key: bool = True

    @property
    def key(self) -> str:
        """The key column."""
        return self.columns[0][0]

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return [name for name, _ in self.columns]

    def create_table(self) -> str:
        """The CREATE TABLE statement."""
        cols = []
        for i, (name, kind) in enumerate(self.columns):
            null = "" if kind.endswith("?") else " NOT NULL"
            pk = " PRIMARY KEY" if i == 0 and self.primary_key else ""
            cols.append(f"{name} {_TYPES[kind][0]}{null}{pk}")
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(cols)})"

    def create_indexes(self) -> list[str]:
        """CREATE INDEX statements: the unique key (when not a primary key) and lookup columns."""
        out = []
        if not self.primary_key:
            unique = f"{self.name}_{self.key}"
            out.append(f"CREATE UNIQUE INDEX IF NOT EXISTS {unique} ON {self.name} ({self.key})")
        for column in self.indexes:
            out.append(f"CREATE INDEX IF NOT EXISTS {self.name}_{column} ON {self.name} ({column})")
        return out

    def arrow(self, rows: list[Row]) -> pa.Table:
        """Rows (dicts) as an Arrow table with this table's column order and types."""
        # One C-level pass per column (map + itemgetter): replay converts ~500k rows a second.
        arrays = [
            pa.array(list(map(itemgetter(name), rows)), type=_TYPES[kind][1]) for name, kind in self.columns
        ]
        return pa.Table.from_arrays(arrays, names=self.names)

    def row(self, values: tuple[Any, ...]) -> Row:
        """A fetched tuple as a row dict."""
        return dict(zip(self.names, values, strict=True))


USERS = Table(
    "users",
    (
        ("user_id", "text"),
        ("role", "text"),
        ("display_name", "text"),
        ("created_at", "time"),
        ("training_consent", "bool?"),  # None: the operator's default applies
    ),
)
API_KEYS = Table(
    "api_keys",
    (
        ("key_id", "text"),
        ("user_id", "text"),
        ("label", "text"),
        ("issued_at", "time"),
        ("revoked_at", "time?"),
    ),
)
CHATS = Table(
    "chats",
    (
        ("chat_id", "text"),
        ("owner_id", "text"),
        ("title", "text"),
        ("model", "text"),
        ("system_prompt", "text"),
        ("created_at", "time"),
        ("updated_at", "time"),
        ("deleted", "bool"),
        ("message_count", "int"),
        ("origin", "text"),
    ),
    indexes=("owner_id",),
)
MESSAGES = Table(
    "messages",
    (
        ("message_id", "text"),
        ("chat_id", "text"),
        ("author_id", "text"),
        ("role", "text"),
        ("content", "text"),
        ("parent_id", "text?"),
        ("created_at", "time"),
        ("seq", "seq"),
        ("images", "list"),
        ("edit_of", "text?"),
    ),
    indexes=("chat_id",),
    primary_key=False,
)
REPLIES = Table(
    "replies",
    (
        ("reply_id", "text"),
        ("chat_id", "text"),
        ("message_id", "text"),
        ("model", "text"),
        ("status", "text"),
        ("attempt", "int"),
        ("worker_id", "text"),
        ("text", "text"),
        ("prompt_tokens", "int"),
        ("completion_tokens", "int"),
        ("finish_reason", "text"),
        ("error", "text"),
        ("queue_ms", "float"),
        ("first_token_ms", "float"),
        ("generation_ms", "float"),
        ("requested_at", "time"),
        ("completed_at", "time?"),
        ("seq", "seq"),
        ("images_seen", "list"),
        ("images_ignored", "list"),
    ),
    indexes=("chat_id",),
    primary_key=False,
)
# Each branch.selected event (the tree is rebuilt from nodes and selections in seq order).
SELECTIONS = Table(
    "branch_selections",
    (("event_id", "text"), ("chat_id", "text"), ("node_id", "text"), ("seq", "seq")),
    indexes=("chat_id",),
)
# A user's current rating of a reply: key `<reply_id>:<user_id>`.
FEEDBACK = Table(
    "feedback",
    (
        ("feedback_id", "text"),
        ("chat_id", "text"),
        ("reply_id", "text"),
        ("user_id", "text"),
        ("rating", "text?"),
        ("comment", "text"),
        ("tags", "list"),
        ("given_at", "time"),
        ("seq", "seq"),
    ),
    indexes=("chat_id",),
)
# Chats erased so far: any later event of one (a straggler) is ignored, in live folding and replay alike.
ERASED_CHATS = Table("erased_chats", (("chat_id", "text"), ("seq", "seq")))
CHECKPOINTS = Table("checkpoints", (("stream", "text"), ("last_seq", "seq")))

# Tables whose rows change after they are inserted: a batch loads the rows it touches first
# (and, for messages, only which ids exist).
MUTABLE: tuple[Table, ...] = (USERS, API_KEYS, CHATS, REPLIES, SELECTIONS, FEEDBACK)
READ_MODEL: tuple[Table, ...] = (USERS, API_KEYS, CHATS, MESSAGES, REPLIES, SELECTIONS, FEEDBACK)
# Tables with a chat_id column: an erased chat's rows are deleted from each.
BY_CHAT: tuple[Table, ...] = (CHATS, MESSAGES, REPLIES, SELECTIONS, FEEDBACK)
ALL: tuple[Table, ...] = (*READ_MODEL, ERASED_CHATS, CHECKPOINTS)


def schema_fingerprint() -> str:
    """A digest of every table's definition: a read model built under another one is rebuilt."""
    statements = [table.create_table() for table in ALL] + [
        s for table in ALL for s in table.create_indexes()
    ]
    return hashlib.sha256("\n".join(statements).encode()).hexdigest()[:16]
