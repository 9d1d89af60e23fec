"""The arena's counted votes, read from the log, and its settings (the pool, voter exclusions).

A vote is `chat.<chat_id>.arena.voted` in CHAT (one per battle: the first); whose votes count is the
latest `arena.voter.<user_id>.excluded` of each user in ARENA. Everything the leaderboard shows is
computed from these two, so it can be recomputed, audited and filtered at any time
(docs/leaderboard.md). The fit itself is logtools/leaderboard.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

import bus
import schemas
from bus import JetStream
from logtools.leaderboard import A_WINS, B_WINS, TIE, Leaderboard, LeaderboardError, fit_leaderboard
from schemas.api_leaderboard import LeaderboardBody, LeaderboardRow
from schemas.arena import PoolSet, VoterExcluded
from schemas.chat import ArenaVoted
from schemas.ids import new_id
from schemas.streams import ARENA, CHAT
from schemas.subjects import ANY, all_votes, arena_pool, chat_event, voter_excluded

# A vote's outcome for the fit; both bad is a tie, as LMArena's "tie (bothbad)".
OUTCOME = {"A": A_WINS, "B": B_WINS, "tie": TIE, "both_bad": TIE}


@dataclass(frozen=True)
class VoteFilter:
    """Which votes count: cast in [since, until), of this category (None: every one)."""

    since: datetime | None = None
    until: datetime | None = None
    category: str | None = None

    def takes(self, vote: ArenaVoted) -> bool:
        """Whether the filter takes this vote (excluded voters aside)."""
        if self.since is not None and vote.at < self.since:
            return False
        if self.until is not None and vote.at >= self.until:
            return False
        return self.category is None or vote.category == self.category


@dataclass
class Votes:
    """The votes a filter takes: `counted` (in log order, with their CHAT sequence) and how many were
    left out because their voter is excluded."""

    counted: list[tuple[int, ArenaVoted]] = field(default_factory=list)
    excluded: int = 0
    excluded_voters: frozenset[str] = frozenset()


async def read_exclusions(js: JetStream) -> dict[str, VoterExcluded]:
    """Each user's latest exclusion event (excluded or taken back in)."""
    latest: dict[str, VoterExcluded] = {}
    for msg in await bus.read_all(js, ARENA.name, [voter_excluded(ANY)]):
        event = bus.decode_one(msg.subject, msg.data, where=f"{ARENA.name} seq {msg.seq}")
        if isinstance(event, VoterExcluded):
            latest[event.user_id] = event
    return latest


async def excluded_voters(js: JetStream) -> frozenset[str]:
    """The users whose votes the leaderboard leaves out now."""
    return frozenset(user for user, event in (await read_exclusions(js)).items() if event.excluded)


async def read_votes(js: JetStream, flt: VoteFilter, excluded: frozenset[str] | None = None) -> Votes:
    """The votes of the log the filter takes, one per battle (its first), excluded voters' left out."""
    if excluded is None:
        excluded = await excluded_voters(js)
    out = Votes(excluded_voters=excluded)
    seen: set[str] = set()
    # A vote is stored just after it is cast: starting at `since` misses none the filter takes.
    for msg in await bus.read_all(js, CHAT.name, [all_votes()], start_time=flt.since, timeout=30.0):
        vote = bus.decode_one(msg.subject, msg.data, where=f"{CHAT.name} seq {msg.seq}")
        if not isinstance(vote, ArenaVoted) or vote.chat_id in seen:
            continue
        seen.add(vote.chat_id)
        if not flt.takes(vote):
            continue
        if vote.voter_id in excluded:
            out.excluded += 1
        else:
            out.counted.append((msg.seq, vote))
    return out


async def votes_version(js: JetStream) -> tuple[int, int, int]:
    """What the counted votes depend on: the last vote's, the last exclusion's and the last chat
    erasure's CHAT/ARENA sequences (an erasure purges votes). Equal versions, equal votes."""
    vote = await bus.last_msg(js, CHAT.name, all_votes())
    exclusion = await bus.last_msg(js, ARENA.name, voter_excluded(ANY))
    erasure = await bus.last_msg(js, CHAT.name, chat_event(ANY, "erased"))
    return (
        vote.seq if vote is not None else 0,
        exclusion.seq if exclusion is not None else 0,
        erasure.seq if erasure is not None else 0,
    )


@dataclass(frozen=True)
class Tally:
    """A model's counted votes: won, lost, tied (both-bad counts as a tie)."""

    wins: int = 0
    losses: int = 0
    ties: int = 0


def tally(votes: Sequence[ArenaVoted]) -> dict[str, Tally]:
    """Wins, losses and ties of each model in the votes."""
    counts: dict[str, list[int]] = {}
    for vote in votes:
        a, b = counts.setdefault(vote.model_a, [0, 0, 0]), counts.setdefault(vote.model_b, [0, 0, 0])
        if vote.vote == "A":
            a[0], b[1] = a[0] + 1, b[1] + 1
        elif vote.vote == "B":
            b[0], a[1] = b[0] + 1, a[1] + 1
        else:
            a[2], b[2] = a[2] + 1, b[2] + 1
    return {model: Tally(*c) for model, c in counts.items()}


def models_of(votes: Sequence[ArenaVoted]) -> list[str]:
    """The models in the votes, by name."""
    return sorted({vote.model_a for vote in votes} | {vote.model_b for vote in votes})


@dataclass(frozen=True)
class VoteArrays:
    """Votes as `fit_leaderboard` takes them: model names, and per vote the indices of A and B, the
    outcome (both bad as a tie) and A's completion tokens minus B's (the length covariate)."""

    names: list[str]
    a: npt.NDArray[np.int64]
    b: npt.NDArray[np.int64]
    outcome: npt.NDArray[np.int64]
    length_diff: npt.NDArray[np.float64]


def vote_arrays(votes: Sequence[ArenaVoted]) -> VoteArrays:
    """The arrays of these votes (models by name)."""
    names = models_of(votes)
    index = {name: k for k, name in enumerate(names)}
    n = len(votes)
    return VoteArrays(
        names=names,
        a=np.fromiter((index[v.model_a] for v in votes), np.int64, n),
        b=np.fromiter((index[v.model_b] for v in votes), np.int64, n),
        outcome=np.fromiter((OUTCOME[v.vote] for v in votes), np.int64, n),
        length_diff=np.fromiter((v.tokens_a - v.tokens_b for v in votes), np.float64, n),
    )


def fit_votes(
    votes: Sequence[ArenaVoted],
    *,
    length_control: bool = False,
    anchor: str | None = None,
    rounds: int = 1000,
    seed: int = 0,
) -> Leaderboard:
    """The leaderboard of these votes (anchor: the first model by name unless given). Raises
    logtools.leaderboard.LeaderboardError when no leaderboard can be made of them."""
    arrays = vote_arrays(votes)
    return fit_leaderboard(
        arrays.names,
        arrays.a,
        arrays.b,
        arrays.outcome,
        length_diff=arrays.length_diff if length_control else None,
        anchor=anchor,
        rounds=rounds,
        seed=seed,
    )


class UnknownAnchor(LeaderboardError):
    """The anchor asked for is not a model with counted votes."""


def leaderboard_body(
    votes: Votes,
    flt: VoteFilter,
    *,
    length_control: bool = False,
    anchor: str | None = None,
    rounds: int = 1000,
    seed: int = 0,
) -> LeaderboardBody:
    """The leaderboard of the counted votes as the API and the CLI show it (no votes: no rows).

    Raises UnknownAnchor, or LeaderboardError when the votes cannot be fitted (models never compared)."""
    counted = [vote for _, vote in votes.counted]
    if anchor is not None and anchor not in models_of(counted):
        raise UnknownAnchor(f"the anchor {anchor!r} is not a model with counted votes")
    board = None
    if counted:
        board = fit_votes(counted, length_control=length_control, anchor=anchor, rounds=rounds, seed=seed)
    totals = tally(counted)
    rows = [
        LeaderboardRow(
            model=row.model,
            rating=row.rating,
            lower=row.lower,
            upper=row.upper,
            rank=row.rank,
            battles=row.battles,
            wins=totals[row.model].wins,
            losses=totals[row.model].losses,
            ties=totals[row.model].ties,
        )
        for row in (board.rows if board is not None else ())
    ]
    return LeaderboardBody(
        models=rows,
        votes=len(counted),
        excluded_votes=votes.excluded,
        anchor=board.anchor if board is not None else None,
        rounds=rounds,
        length_control=length_control,
        length_coef=board.length_coef if board is not None else None,
        since=flt.since,
        until=flt.until,
        category=flt.category,
    )


# ---------------------------------------------------------------- settings (stream ARENA)


async def read_pool(js: JetStream) -> PoolSet | None:
    """The pool setting that holds (the last `arena.pool.set`), or None when none was ever set."""
    msg = await bus.last_msg(js, ARENA.name, arena_pool())
    if msg is None:
        return None
    event = bus.decode_one(msg.subject, msg.data, where=f"{ARENA.name} seq {msg.seq}")
    return event if isinstance(event, PoolSet) else None


async def set_pool(js: JetStream, include: list[str], exclude: list[str], by: str) -> bus.Appended:
    """Append the pool setting (it replaces the last one)."""
    event = PoolSet(event_id=new_id("e"), at=schemas.now(), by=by, include=include, exclude=exclude)
    return await bus.append_event(js, event)


async def set_excluded(js: JetStream, user_id: str, excluded: bool, reason: str, by: str) -> bus.Appended:
    """Leave a user's votes out of the leaderboard (excluded) or take them back in."""
    event = VoterExcluded(
        event_id=new_id("e"), at=schemas.now(), by=by, user_id=user_id, excluded=excluded, reason=reason
    )
    return await bus.append_event(js, event)


__all__ = [
    "Tally",
    "UnknownAnchor",
    "VoteFilter",
    "VoteArrays",
    "Votes",
    "excluded_voters",
    "fit_votes",
    "leaderboard_body",
    "models_of",
    "read_exclusions",
    "read_pool",
    "read_votes",
    "set_excluded",
    "set_pool",
    "tally",
    "vote_arrays",
    "votes_version",
]
