"""The arena's settings, on subjects `arena.>` in stream ARENA: which models battles draw from, and whose
votes the leaderboard leaves out. Battles and votes themselves are chat events (schemas/chat.py:
`ChatCreated.arena`, `chat.arena.voted`); docs/arena.md tells the whole design.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from schemas.bot import ModelAlias


class ArenaEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of arena settings events."""

    event_id: str
    at: datetime
    by: str  # the admin who changed it


class PoolSet(ArenaEvent, frozen=True, kw_only=True, tag="arena.pool.set"):
    """The models battles are drawn from: those served now, only `include` (when not empty), never
    `exclude`. The last one holds. Subject `arena.pool.set`."""

    include: list[ModelAlias] = []
    exclude: list[ModelAlias] = []


class VoterExcluded(ArenaEvent, frozen=True, kw_only=True, tag="arena.voter.excluded"):
    """An admin left a user's votes out of the leaderboard (`excluded` False takes them back in). The
    votes stay in the log; the leaderboard is recomputed without them. The user's last one holds.
    Subject `arena.voter.<user_id>.excluded`."""

    user_id: str
    excluded: bool = True
    reason: str = ""


ArenaEventUnion = PoolSet | VoterExcluded
