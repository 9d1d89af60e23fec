"""The read model's arena battles: the `battles` table, folded from `chat.created` (arena), `chat.arena.voted`
and `chat.arena.tagged`, and the queries the API asks of it (how often each pair met, for the draw; a
voter's votes of the day, for the cap).

A part of the fold (services/projector/fold.py) like services/projector/party.py: the same pure functions
of events to rows, live and in replay. The leaderboard does not read this table: it reads the votes from
the log (docs/leaderboard.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import TYPE_CHECKING

import duckdb
import msgspec
from msgspec.structs import asdict

import schemas
from schemas.chat import ArenaTagged, ArenaVoted, ChatCreated
from schemas.queries import BattlePairs, PairCount, PairCounts, VoteCount, VotesSince
from services.projector.rows import BattleRow
from services.projector.tables import BATTLES

if TYPE_CHECKING:
    from services.projector.batch import Rows
    from services.projector.service import Projector


class ArenaFold:
    """Apply functions of the battle events (mixed into `Fold`)."""

    tables: dict[str, Rows]

    def battle_created(self, seq: int, e: ChatCreated) -> None:
        """A battle's row (called for every chat created; only battles have one)."""
        if not e.arena or len(e.compare) != 2:
            return
        row = BattleRow(
            chat_id=e.chat_id,
            owner_id=e.owner_id,
            model_a=e.compare[0],
            model_b=e.compare[1],
            category=e.category,
            created_at=e.at,
            vote="",
            voted_at=None,
        )
        self.tables[BATTLES.name].add(e.chat_id, asdict(row))

    def arena_voted(self, seq: int, e: ArenaVoted) -> None:
        """The battle's vote: the first one holds."""
        battle = self.tables[BATTLES.name].known.get(e.chat_id)
        if battle is not None and not battle["vote"]:
            battle.update(vote=e.vote, voted_at=e.at)

    def arena_tagged(self, seq: int, e: ArenaTagged) -> None:
        """The battle's category now (the vote keeps the one it was cast under)."""
        battle = self.tables[BATTLES.name].known.get(e.chat_id)
        if battle is not None:
            battle["category"] = e.category


def battle_pairs(cur: duckdb.DuckDBPyConnection, query: BattlePairs) -> PairCounts:
    """Battles per unordered pair of the given models (pairs that never met are left out)."""
    models = sorted(set(query.models))
    fetched = cur.execute(
        "SELECT least(model_a, model_b), greatest(model_a, model_b), count(*) FROM battles"
        " WHERE list_contains(?, model_a) AND list_contains(?, model_b) GROUP BY 1, 2 ORDER BY 1, 2",
        [models, models],
    ).fetchall()
    return PairCounts(pairs=[PairCount(model_a=a, model_b=b, battles=int(n)) for a, b, n in fetched])


def votes_since(cur: duckdb.DuckDBPyConnection, query: VotesSince) -> VoteCount:
    """How many battles the voter voted on since `since` (a voter votes only on their own battles)."""
    since = query.since.astimezone(UTC).replace(tzinfo=None)  # the file holds naive UTC
    fetched = cur.execute(
        "SELECT count(*) FROM battles WHERE owner_id = ? AND vote <> '' AND voted_at >= ?",
        [query.voter_id, since],
    ).fetchone()
    return VoteCount(votes=int(fetched[0]) if fetched is not None else 0)


def endpoints(projector: Projector) -> dict[str, Callable[[bytes], Awaitable[bytes]]]:
    """The micro service endpoints of the arena: arena.pairs, arena.votes."""

    async def pairs(data: bytes) -> bytes:
        query = msgspec.json.decode(data, type=BattlePairs)
        await projector.wait_for(query.min_seq)
        return schemas.encode(await projector.read(battle_pairs, query))

    async def votes(data: bytes) -> bytes:
        query = msgspec.json.decode(data, type=VotesSince)
        await projector.wait_for(query.min_seq)
        return schemas.encode(await projector.read(votes_since, query))

    return {"arena.pairs": pairs, "arena.votes": votes}
