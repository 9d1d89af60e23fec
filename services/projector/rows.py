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


class ErasedChatRow(msgspec.Struct, frozen=True, kw_only=True):
    """A chat erased at `seq`: any later event of it (a straggler) is ignored, live and in replay."""

    chat_id: str
    seq: Seq


class CheckpointRow(msgspec.Struct, frozen=True, kw_only=True):
    """The last sequence of a stream applied to the read model."""

    stream: str
    last_seq: Seq
