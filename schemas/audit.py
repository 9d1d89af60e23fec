"""A chat's audit trail as the API answers it: one entry per event (made by logtools/audit.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a chat: its CHAT sequence and subject, when, who did it, what, and its details."""

    seq: int
    at: datetime
    type: str
    who: str
    what: str
    model: str = ""
    params: dict[str, Any] = {}
    event: dict[str, Any] = {}  # the event itself, every field


class AuditTrail(msgspec.Struct, frozen=True, kw_only=True):
    """Answer of the audit route and command."""

    chat_id: str
    entries: list[AuditEntry]
