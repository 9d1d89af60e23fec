"""The arena leaderboard: a Bradley-Terry fit of the counted votes, read from the log (any signed-in user)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from aiohttp import web

import schemas
from logtools.arena_votes import UnknownAnchor, VoteFilter, leaderboard_body, read_votes, votes_version
from logtools.leaderboard import LeaderboardError
from schemas.api_leaderboard import (
    DEFAULT_ROUNDS,
    MAX_ROUNDS,
    MIN_ROUNDS,
    LeaderboardBody,
)
from schemas.arena_decide import MAX_CATEGORY
from services.api.errors import ApiError, json_response
from services.api.inputs import query_int, query_str
from services.api.keys import BUS, LEADERBOARDS
from services.api.leaderboard_cache import LeaderboardsBusy

SEED = 0  # the bootstrap's seed: the same votes and filters give the same leaderboard


def _time(request: web.Request, name: str) -> datetime | None:
    raw = query_str(request, name, 64)
    if raw is None:
        return None
    try:
        return schemas.parse_time(raw)
    except ValueError:
        example = "e.g. 2026-11-01 or 2026-11-01T12:00Z"
        raise ApiError(400, "bad_parameter", f"{name} must be an ISO date or time ({example})") from None


def _flag(request: web.Request, name: str) -> bool:
    raw = (request.query.get(name) or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(400, "bad_parameter", f"{name} must be true or false")
    return raw in ("true", "1")


async def leaderboard(request: web.Request) -> web.StreamResponse:
    """The models by rating with 95% intervals, from the votes the filters take (docs/leaderboard.md)."""
    since, until = _time(request, "since"), _time(request, "until")
    if since is not None and until is not None and until <= since:
        raise ApiError(400, "bad_parameter", "until must be after since")
    flt = VoteFilter(since=since, until=until, category=query_str(request, "category", MAX_CATEGORY))
    length_control = _flag(request, "length_control")
    anchor = query_str(request, "anchor", 128)
    rounds = query_int(request, "rounds", DEFAULT_ROUNDS, MIN_ROUNDS, MAX_ROUNDS)
    js = request.app[BUS].js
    key = (flt, length_control, anchor, rounds, await votes_version(js))

    async def compute() -> LeaderboardBody:
        votes = await read_votes(js, flt)
        try:  # the fit takes up to seconds: never on the event loop
            return await asyncio.to_thread(
                leaderboard_body,
                votes,
                flt,
                length_control=length_control,
                anchor=anchor,
                rounds=rounds,
                seed=SEED,
            )
        except UnknownAnchor as exc:
            raise ApiError(400, "unknown_anchor", str(exc)) from None
        except LeaderboardError as exc:
            message = f"no leaderboard can be made of these votes: {exc}"
            raise ApiError(409, "no_leaderboard", message) from None

    try:
        return json_response(await request.app[LEADERBOARDS].get(key, compute()))
    except LeaderboardsBusy as exc:
        raise ApiError(503, "busy", f"{exc}: ask again in a few seconds", {"Retry-After": "5"}) from None
