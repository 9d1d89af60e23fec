"""The REST API's arena leaderboard body (`GET /v1/arena/leaderboard`); docs/leaderboard.md tells how
the numbers are computed and which votes count."""

from __future__ import annotations

from datetime import datetime

import msgspec

MIN_ROUNDS = 10
MAX_ROUNDS = 1000
DEFAULT_ROUNDS = 1000


class LeaderboardRow(msgspec.Struct, frozen=True, kw_only=True):
    """One model: its rating (Elo scale), 95% interval, rank, and its counted votes."""

    model: str
    rating: float
    lower: float
    upper: float
    rank: int  # 1 + the models whose lower bound is above this one's upper bound
    battles: int  # counted votes it was in
    wins: int
    losses: int
    ties: int  # both-bad votes included


class LeaderboardBody(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/arena/leaderboard: the models by rating, best first, and what the fit was asked."""

    models: list[LeaderboardRow]
    votes: int  # counted
    excluded_votes: int  # the filters took them, but their voters are excluded
    anchor: str | None  # the model at 1000 (None: no votes)
    rounds: int
    length_control: bool
    length_coef: float | None  # rating points per root-mean-square token difference (None without)
    since: datetime | None
    until: datetime | None
    category: str | None
