"""Arena settings subjects: `arena.pool.set` and `arena.voter.<user_id>.excluded`, in stream ARENA."""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from schemas.subjects.roots import ANY, ARENA_ROOT, join

ArenaKind = Literal["set", "excluded"]
ARENA_KINDS: frozenset[str] = frozenset(get_args(ArenaKind))
_POOL = "pool"
_VOTER = "voter"


def arena_pool() -> str:
    """Subject of the arena's pool setting (the last message holds)."""
    return join(ARENA_ROOT, _POOL, "set")


def voter_excluded(user_id: str) -> str:
    """Subject of a voter's exclusion; `voter_excluded(ANY)` is every voter's."""
    return join(ARENA_ROOT, _VOTER, user_id, "excluded")


def one_voter(user_id: str) -> str:
    """Every arena subject naming a user (what erasing the user purges)."""
    return join(ARENA_ROOT, _VOTER, user_id, ANY)


class ArenaSubject(msgspec.Struct, frozen=True):
    """An arena settings subject, parsed (`user_id` "" for the pool)."""

    kind: ArenaKind
    user_id: str = ""


def parse_arena_subject(subject: str) -> ArenaSubject | None:
    """The parts of a subject in ARENA, or None."""
    parts = subject.split(".")
    if parts == [ARENA_ROOT, _POOL, "set"]:
        return ArenaSubject("set")
    if len(parts) == 4 and parts[0] == ARENA_ROOT and parts[1] == _VOTER and parts[3] == "excluded":
        return ArenaSubject("excluded", parts[2])
    return None
