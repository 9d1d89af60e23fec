"""Rows the read model keeps that no query returns whole (chats, messages and replies are in
schemas/queries.py, since queries return them). Each table takes its columns, in this order, from one
of these structs; the first field is the table's key. Times are naive UTC in the file."""

from __future__ import annotations

from datetime import datetime

import msgspec

from schemas.queries import Seq


class UserRow(msgspec.Struct, frozen=True, kw_only=True):
    """An account (never its password hash)."""

    user_id: str
    role: str
    display_name: str
    created_at: datetime
    training_consent: bool | None  # None: the operator's default applies


class ApiKeyRow(msgspec.Struct, frozen=True, kw_only=True):
    """An API key (never its hash: the read model does not authenticate)."""

    key_id: str
    user_id: str
    label: str
    issued_at: datetime
    revoked_at: datetime | None


class SelectionRow(msgspec.Struct, frozen=True, kw_only=True):
    """One branch.selected event (the tree is rebuilt from nodes and selections in seq order)."""

    event_id: str
    chat_id: str
    node_id: str
    seq: Seq


class FeedbackRow(msgspec.Struct, frozen=True, kw_only=True):
    """A user's current rating of a reply, keyed `<reply_id>:<user_id>` (queries return `Rating`, a part)."""

    feedback_id: str
    chat_id: str
    reply_id: str
    user_id: str
    rating: str | None
    comment: str
    tags: list[str]
    given_at: datetime
    seq: Seq


class ParticipantRow(msgspec.Struct, frozen=True, kw_only=True):
    """A bot in a chat: the name and model it joined with, whether it is muted or has left
    (queries return `ParticipantInfo`, a part)."""

    participant_id: str
    chat_id: str
    bot_id: str
    name: str
    model: str
    muted: bool
    has_left: bool  # `left` is a reserved word in SQL
    seq: Seq  # of its joining: participants are listed in the order they joined


class FloorRow(msgspec.Struct, frozen=True, kw_only=True):
    """A chat's turn policy and where the moderator left it (queries return `FloorInfo`, a part)."""

    chat_id: str
    policy: str
    rounds: int
    max_bot_turns: int
    delay_s: float
    paused: bool
    stopped: bool  # stopped, and nobody posted or was named to speak since
    seq: Seq  # of its last change


class ChoiceRow(msgspec.Struct, frozen=True, kw_only=True):
    """A side-by-side choice: the reply chosen for a message over the others (a later one replaces it)."""

    message_id: str
    chat_id: str
    reply_id: str
    rejected: list[str]
    seq: Seq


class BattleRow(msgspec.Struct, frozen=True, kw_only=True):
    """An arena battle: its two models (side A, side B), its current category, and its vote ("" until
    `chat.arena.voted`; the first vote holds). What the draw counts pairs from and the vote cap counts."""

    chat_id: str
    owner_id: str
    model_a: str
    model_b: str
    category: str
    created_at: datetime
    vote: str
    voted_at: datetime | None


class JobRow(msgspec.Struct, frozen=True, kw_only=True):
    """A job (a reply requested with `job`, schemas/job.py): whose, of which session and batch, its status
    as its reply's events leave it (schemas/job_status.py; `expired` by deadline is derived when read)."""

    reply_id: str
    job_id: str
    owner_id: str
    session_id: str
    chat_id: str
    model: str
    status: str
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime | None
    batch_id: str
    custom_id: str
    line: int = 0  # a batch line's index in its input
    code: str = ""  # a failed job's code (reply.failed)
    cancel_at: datetime | None = None  # when a cancel was first asked


class ErasedChatRow(msgspec.Struct, frozen=True, kw_only=True):
    """A chat erased at `seq`: any later event of it (a straggler) is ignored, live and in replay."""

    chat_id: str
    seq: Seq


class CheckpointRow(msgspec.Struct, frozen=True, kw_only=True):
    """The last sequence of a stream applied to the read model."""

    stream: str
    last_seq: Seq
