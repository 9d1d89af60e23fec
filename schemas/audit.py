"""A chat's audit trail as the API answers it: one entry per event (made by logtools/audit.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class SeenTurn(msgspec.Struct, frozen=True, kw_only=True):
    """One turn a reply's model was given (schemas/seat.py): its role, text, images, and the message and
    reply ids it is made of (none for the system prompt; several when turns of one role were joined)."""

    role: str
    content: str
    images: list[str] = []
    ids: list[str] = []


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a chat: its CHAT sequence and subject, when, who did it, what, and its details.

    `speaker`: who said the message or reply the event is about (the author's name, the bot's name or
    the model's alias); `seen`, on a `reply.requested`: what the reply's model was given, from its seat.
    """

    seq: int
    at: datetime
    type: str
    who: str
    what: str
    model: str = ""
    params: dict[str, Any] = {}
    event: dict[str, Any] = {}  # the event itself, every field
    speaker: str = ""
    seen: list[SeenTurn] = []


class AuditTrail(msgspec.Struct, frozen=True, kw_only=True):
    """Answer of the audit route and command."""

    chat_id: str
    entries: list[AuditEntry]
