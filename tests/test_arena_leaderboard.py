"""The arena leaderboard end to end: votes appended to the real log, read back by the route and the CLI;
exclusions, filters, bad filters, the pool command."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

import bus
import schemas
from identity.accounts import add_user
from logtools.arena_votes import read_pool
from schemas.api_leaderboard import LeaderboardBody
from services.api.leaderboard_cache import LeaderboardCache
from services.cli.app import app
from tests.apihelp import Api, is_error
from tests.arena_log import append_votes, strength_votes, voted

STRENGTH = {"alpha": 0.9, "beta": 0.5, "gamma": 0.1, "delta": -0.3}  # base-10: 160 rating points apart
ORDER = ["alpha", "beta", "gamma", "delta"]
BOARD = "/v1/arena/leaderboard"
EMPTY = LeaderboardBody(
    models=[], votes=0, excluded_votes=0, anchor=None, rounds=10, length_control=False, length_coef=None,
    since=None, until=None, category=None,
)  # fmt: skip


def _cli(nats_url: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["admin", "arena", *args, "--nats", nats_url], env={"COLUMNS": "200"})


async def _board(api: Api, query: str = "", user: str = "bob") -> dict[str, Any]:
    status, body = await api.call("GET", f"{BOARD}?rounds=100{query}", user)
    assert status == 200, body
    return body


def _order(body: dict[str, Any]) -> list[str]:
    return [row["model"] for row in body["models"]]


async def test_votes_from_known_strengths_give_their_order_in_the_route_and_the_cli(
    api: Api, nats_url: str
) -> None:
    votes = strength_votes(STRENGTH, 600, seed=3, voters=("ann", "bob"))
    await append_votes(api.nbus, votes)
    body = await _board(api)
    assert _order(body) == ORDER and body["votes"] == 600 and body["excluded_votes"] == 0
    assert body["anchor"] == "alpha" and body["length_control"] is False and body["length_coef"] is None
    ties = sum(1 for *_, vote in votes if vote in ("tie", "both_bad"))
    for row in body["models"]:
        assert row["wins"] + row["losses"] + row["ties"] == row["battles"]
        assert row["lower"] <= row["rating"] <= row["upper"]
    assert sum(row["battles"] for row in body["models"]) == 2 * 600
    assert sum(row["ties"] for row in body["models"]) == 2 * ties  # both bad counts as a tie
    assert [row["rank"] for row in body["models"]] == [1, 2, 3, 4]
    result = await asyncio.to_thread(_cli, nats_url, "leaderboard", "--rounds", "100", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == body  # the same fit, the same seed: the same numbers
    table = await asyncio.to_thread(_cli, nats_url, "leaderboard", "--rounds", "100", "--anchor", "delta")
    assert table.exit_code == 0, table.output
    lines = [line for line in table.stdout.splitlines() if line.startswith("│")]  # the rows
    assert [next(m for m in ORDER if m in line) for line in lines] == ORDER
    assert "1000" in lines[-1]  # delta is the anchor
    styled = await _board(api, "&length_control=true")
    assert _order(styled) == ORDER and styled["length_coef"] == 0.0  # every answer the same length


async def test_one_vote_per_battle_and_a_new_vote_is_seen_at_once(api: Api) -> None:
    (chat_id,) = await append_votes(api.nbus, [("ann", "alpha", "beta", "A")])
    first = await _board(api)
    assert first["votes"] == 1 and _order(first) == ["alpha", "beta"]
    assert first["models"][0]["wins"] == 1 and first["models"][1]["losses"] == 1
    from schemas.chat import ArenaVoted

    second: ArenaVoted = voted(chat_id, "ann", "alpha", "beta", "B")  # a second vote in the battle

    await bus.append_event(api.nbus.js, second)
    assert (await _board(api))["votes"] == 1  # the first holds
    await append_votes(api.nbus, [("bob", "alpha", "beta", "B")])
    again = await _board(api)  # not the cached one: a vote landed since
    assert again["votes"] == 2 and {row["wins"] for row in again["models"]} == {1}


async def test_excluded_voters_leave_the_leaderboard_and_come_back(api: Api, nats_url: str) -> None:
    await append_votes(api.nbus, strength_votes(STRENGTH, 400, seed=5))  # ann's: honest
    spam = [("mallory", "delta", "alpha", "A")] * 300  # mallory's: delta always beats alpha
    await append_votes(api.nbus, spam)
    skewed = await _board(api)
    assert skewed["votes"] == 700 and _order(skewed)[0] != "alpha"
    result = await asyncio.to_thread(_cli, nats_url, "exclude", "mallory", "--reason", "spam")
    assert result.exit_code == 1 and "no user mallory" in result.output  # no such account
    await add_user(api.nbus.js, "mallory")
    result = await asyncio.to_thread(_cli, nats_url, "exclude", "mallory", "--reason", "spam")
    assert result.exit_code == 0, result.output
    honest = await _board(api)
    assert honest["votes"] == 400 and honest["excluded_votes"] == 300 and _order(honest) == ORDER
    listed = await asyncio.to_thread(_cli, nats_url, "votes", "--json")
    assert listed.exit_code == 0, listed.output
    counted = json.loads(listed.stdout)
    assert len(counted) == honest["votes"] and {v["voter_id"] for v in counted} == {"ann"}
    result = await asyncio.to_thread(_cli, nats_url, "include", "mallory")
    assert result.exit_code == 0, result.output
    back = await _board(api)
    assert back == skewed  # the same votes again: the same leaderboard


async def test_filters_change_what_counts(api: Api, nats_url: str) -> None:
    old = schemas.now() - timedelta(days=10)
    await append_votes(api.nbus, [("ann", "alpha", "beta", "A")] * 5, at=old)
    await append_votes(api.nbus, [("ann", "alpha", "beta", "B")] * 7)
    await append_votes(api.nbus, [("ann", "alpha", "gamma", "A")] * 3, category="code")
    everything = await _board(api)
    assert everything["votes"] == 15
    week = (schemas.now() - timedelta(days=7)).isoformat()
    recent = await _board(api, f"&since={week.replace('+', '%2B')}")
    assert recent["votes"] == 10 and recent["since"] is not None
    older = await _board(api, f"&until={week.replace('+', '%2B')}")
    assert older["votes"] == 5 and _order(older) == ["alpha", "beta"]
    code = await _board(api, "&category=code")
    assert code["votes"] == 3 and code["category"] == "code" and _order(code) == ["alpha", "gamma"]
    assert (await _board(api, "&category=poetry"))["models"] == []
    cli = await asyncio.to_thread(
        _cli, nats_url, "leaderboard", "--json", "--rounds", "10", "--category", "code"
    )
    assert cli.exit_code == 0, cli.output and json.loads(cli.stdout)["votes"] == 3
    cli = await asyncio.to_thread(_cli, nats_url, "votes", "--json", "--since", week)
    assert cli.exit_code == 0 and len(json.loads(cli.stdout)) == 10


async def test_bad_filters_are_400_with_json(api: Api, nats_url: str) -> None:
    await append_votes(api.nbus, [("ann", "alpha", "beta", "A"), ("ann", "beta", "alpha", "A")])
    for query, code in (
        ("since=yesterday", "bad_parameter"),
        ("until=2026-13-01", "bad_parameter"),
        ("since=2026-11-02&until=2026-11-01", "bad_parameter"),
        ("rounds=5", "bad_parameter"),
        ("rounds=1001", "bad_parameter"),
        ("since=0001-01-01T00:00:00%2B01:00", "bad_parameter"),  # no UTC time: before year 1
        ("until=9999-12-31T23:00:00-05:00", "bad_parameter"),
        ("rounds=many", "bad_parameter"),
        ("length_control=maybe", "bad_parameter"),
        ("anchor=nosuch", "unknown_anchor"),
        ("category=" + "x" * 65, "bad_parameter"),
    ):
        status, body = await api.call("GET", f"{BOARD}?{query}")
        assert status == 400 and is_error(body) and body["error"] == code, (query, body)
    assert (await api.call("GET", BOARD, None))[0] == 401
    assert (await _board(api, "&anchor=beta"))["anchor"] == "beta"
    result = await asyncio.to_thread(_cli, nats_url, "leaderboard", "--anchor", "nosuch")
    assert result.exit_code == 2 and "nosuch" in result.output
    result = await asyncio.to_thread(_cli, nats_url, "leaderboard", "--rounds", "5")
    assert result.exit_code == 2 and "--rounds" in result.output


async def test_no_votes_is_an_empty_leaderboard_and_unlinked_models_a_409(api: Api) -> None:
    empty = await _board(api)
    assert empty["models"] == [] and empty["votes"] == 0 and empty["anchor"] is None
    await append_votes(api.nbus, [("ann", "alpha", "beta", "A"), ("ann", "gamma", "delta", "A")])
    status, body = await api.call("GET", BOARD)
    assert status == 409 and is_error(body) and body["error"] == "no_leaderboard", body


async def test_the_pool_command_shows_and_sets_the_pool(api: Api, nats_url: str) -> None:
    shown = await asyncio.to_thread(_cli, nats_url, "pool")
    assert shown.exit_code == 0 and "no pool set" in shown.output
    result = await asyncio.to_thread(_cli, nats_url, "pool", "--include", "alpha,beta, gamma")
    assert result.exit_code == 0, result.output
    assert "include: alpha, beta, gamma" in result.stdout and "exclude: (none)" in result.stdout
    result = await asyncio.to_thread(_cli, nats_url, "pool", "--exclude", "gamma")
    assert "include: alpha, beta, gamma" in result.stdout and "exclude: gamma" in result.stdout
    pool = await read_pool(api.nbus.js)
    assert pool is not None and pool.include == ["alpha", "beta", "gamma"] and pool.exclude == ["gamma"]
    result = await asyncio.to_thread(_cli, nats_url, "pool", "--include", "")
    assert "include: (every model served)" in result.stdout
    bad = await asyncio.to_thread(_cli, nats_url, "pool", "--include", "a.b")
    assert bad.exit_code == 2 and "a.b" in bad.output


async def test_the_cache_shares_one_fit_keeps_results_and_forgets_failures() -> None:
    cache = LeaderboardCache(size=2)
    calls: list[str] = []

    async def fit(name: str, fail: bool = False) -> LeaderboardBody:
        calls.append(name)
        await asyncio.sleep(0.05)
        if fail:
            raise ValueError("no fit")
        return EMPTY

    first, second = await asyncio.gather(cache.get("k", fit("one")), cache.get("k", fit("two")))
    assert first is second is EMPTY and calls == ["one"]  # the second waited for the first's fit
    assert await cache.get("k", fit("three")) is EMPTY and calls == ["one"]  # a reload: kept
    with pytest.raises(ValueError):
        await cache.get("bad", fit("four", fail=True))
    await cache.get("bad", fit("five"))
    assert calls == ["one", "four", "five"]  # a failure is not kept
    await cache.get("other", fit("six"))  # a third key: the oldest ("k") goes
    await cache.get("k", fit("seven"))
    assert calls[-1] == "seven"
