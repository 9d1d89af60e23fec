"""The read model's tables, each derived from the struct of its rows: columns, SQL and Arrow types."""

from __future__ import annotations

import hashlib
from datetime import UTC
from operator import itemgetter
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec
import msgspec.inspect as mi
import pyarrow as pa

from schemas.queries import ChatRow, FloorInfo, MessageRow, ParticipantInfo, Rating, ReplyRow
from services.projector.rows import (
    ApiKeyRow,
    BattleRow,
    CheckpointRow,
    ChoiceRow,
    ErasedChatRow,
    FeedbackRow,
    FloorRow,
    JobRow,
    ParticipantRow,
    SelectionRow,
    UserRow,
)

Row = dict[str, Any]  # a row as the fold builds and changes it: its table's columns as keys
R = TypeVar("R", bound=msgspec.Struct)
P = TypeVar("P", bound=msgspec.Struct)


class Column(NamedTuple):
    """A column: its field's name, SQL and Arrow types, and whether it may be NULL."""

    name: str
    sql: str
    arrow: pa.DataType
    nullable: bool


def _column(field: mi.Field) -> Column:
    """The column of a row struct's field: `X | None` is nullable; an int is 32 bits unless it says 64."""
    kind, nullable = field.type, False
    if isinstance(kind, mi.UnionType) and any(isinstance(t, mi.NoneType) for t in kind.types):
        others = [t for t in kind.types if not isinstance(t, mi.NoneType)]
        if len(others) == 1:
            kind, nullable = others[0], True
    bits = 32
    if isinstance(kind, mi.Metadata):
        bits = (kind.extra or {}).get("bits", bits)
        kind = kind.type
    match kind:
        case mi.StrType():
            return Column(field.name, "VARCHAR", pa.string(), nullable)
        case mi.DateTimeType():
            return Column(field.name, "TIMESTAMP", pa.timestamp("us"), nullable)
        case mi.BoolType():
            return Column(field.name, "BOOLEAN", pa.bool_(), nullable)
        case mi.IntType() if bits == 64:
            return Column(field.name, "BIGINT", pa.int64(), nullable)
        case mi.IntType():
            return Column(field.name, "INTEGER", pa.int32(), nullable)
        case mi.FloatType():
            return Column(field.name, "DOUBLE", pa.float64(), nullable)
        case mi.ListType(item_type=mi.StrType()):
            return Column(field.name, "VARCHAR[]", pa.list_(pa.string()), nullable)
    raise TypeError(f"{field.name}: no column type for {field.type}")


def _fields(struct: type[msgspec.Struct]) -> tuple[mi.Field, ...]:
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    return info.fields


class Table(Generic[R]):
    """A table of the read model: one column per field of its row struct, in order; the first is its key.

    Times are naive UTC in the file. Small tables declare the key as PRIMARY KEY. Big append-mostly
    tables (messages, replies) get a UNIQUE index instead, built after a replay's bulk load:
    maintaining an index row by row during replay costs more than the rest of the insert. Keys never
    collide either way: the fold loads the rows it touches and skips repeated creates.
    """

    def __init__(
        self,
        name: str,
        row: type[R],
        *,
        indexes: tuple[str, ...] = (),
        primary_key: bool = True,
        parts: tuple[type[msgspec.Struct], ...] = (),
        computed: tuple[str, ...] = (),
    ) -> None:
        """`parts`: structs that queries read from some of its columns (same names and types);
        `computed`: fields of the row that are no column (queries fill them in from other tables)."""
        self.name = name
        self.row = row
        self.indexes = indexes
        self.primary_key = primary_key
        self.computed = computed
        fields = tuple(f for f in _fields(row) if f.name not in computed)
        self.columns = tuple(_column(f) for f in fields)
        self.names = tuple(column.name for column in self.columns)
        self.key = self.names[0]
        self.times = frozenset(column.name for column in self.columns if column.sql == "TIMESTAMP")
        unknown = [column for column in indexes if column not in self.names]
        if unknown:
            raise TypeError(f"{name}: indexes on unknown columns {unknown}")
        types = {f.name: f.type for f in fields}
        for part in parts:
            if any(types.get(f.name) != f.type for f in _fields(part)):
                raise TypeError(f"{part.__name__} is not made of columns of {name} ({row.__name__})")

    def create_table(self) -> str:
        """The CREATE TABLE statement."""
        cols = []
        for i, column in enumerate(self.columns):
            null = "" if column.nullable else " NOT NULL"
            pk = " PRIMARY KEY" if i == 0 and self.primary_key else ""
            cols.append(f"{column.name} {column.sql}{null}{pk}")
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
        arrays = [pa.array(list(map(itemgetter(c.name), rows)), type=c.arrow) for c in self.columns]
        return pa.Table.from_arrays(arrays, names=list(self.names))

    def select(self, part: type[msgspec.Struct] | None = None) -> str:
        """The column list of a SELECT that `read` (or `read_part`) converts."""
        return ", ".join(self.names if part is None else part.__struct_fields__)

    def read(self, values: tuple[Any, ...]) -> R:
        """A fetched row (every column, in order) as its struct; times as aware UTC."""
        return self.row(**self._aware(dict(zip(self.names, values, strict=True))))

    def read_part(self, part: type[P], values: tuple[Any, ...]) -> P:
        """A row fetched with `select(part)` as `part`; times as aware UTC."""
        return part(**self._aware(dict(zip(part.__struct_fields__, values, strict=True))))

    def _aware(self, row: Row) -> Row:
        """Naive UTC times (as stored) as aware ones (as the structs carry them)."""
        for name in self.times.intersection(row):
            if row[name] is not None:
                row[name] = row[name].replace(tzinfo=UTC)
        return row


USERS = Table("users", UserRow)
API_KEYS = Table("api_keys", ApiKeyRow)
CHATS = Table("chats", ChatRow, indexes=("owner_id",))
MESSAGES = Table("messages", MessageRow, indexes=("chat_id",), primary_key=False)
REPLIES = Table("replies", ReplyRow, indexes=("chat_id",), primary_key=False, computed=("chosen",))
SELECTIONS = Table("branch_selections", SelectionRow, indexes=("chat_id",))
FEEDBACK = Table("feedback", FeedbackRow, indexes=("chat_id",), parts=(Rating,))
PARTICIPANTS = Table("participants", ParticipantRow, indexes=("chat_id",), parts=(ParticipantInfo,))
FLOORS = Table("floors", FloorRow, parts=(FloorInfo,))
CHOICES = Table("choices", ChoiceRow, indexes=("chat_id",))
BATTLES = Table("battles", BattleRow, indexes=("owner_id",))
JOBS = Table("jobs", JobRow, indexes=("owner_id",))
ERASED_CHATS = Table("erased_chats", ErasedChatRow)
CHECKPOINTS = Table("checkpoints", CheckpointRow)

# Tables whose rows change after they are inserted: a batch loads the rows it touches first
# (and, for messages, only which ids exist).
# Chats with bots, side-by-side chats, arena battles.
PARTY: tuple[Table[Any], ...] = (PARTICIPANTS, FLOORS, CHOICES, BATTLES)
JOB_TABLES: tuple[Table[Any], ...] = (JOBS,)  # replies asked as jobs (services/projector/jobs.py)
MUTABLE: tuple[Table[Any], ...] = (USERS, API_KEYS, CHATS, REPLIES, SELECTIONS, FEEDBACK, *PARTY, *JOB_TABLES)
READ_MODEL: tuple[Table[Any], ...] = (
    USERS,
    API_KEYS,
    CHATS,
    MESSAGES,
    REPLIES,
    SELECTIONS,
    FEEDBACK,
    *PARTY,
    *JOB_TABLES,
)
# Tables with a chat_id column: an erased chat's rows are deleted from each.
BY_CHAT: tuple[Table[Any], ...] = (CHATS, MESSAGES, REPLIES, SELECTIONS, FEEDBACK, *PARTY, *JOB_TABLES)
ALL: tuple[Table[Any], ...] = (*READ_MODEL, ERASED_CHATS, CHECKPOINTS)


def schema_fingerprint() -> str:
    """A digest of every table's definition: a read model built under another one is rebuilt."""
    statements = [table.create_table() for table in ALL] + [
        s for table in ALL for s in table.create_indexes()
    ]
    return hashlib.sha256("\n".join(statements).encode()).hexdigest()[:16]
