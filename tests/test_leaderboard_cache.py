"""The leaderboard cache fits one leaderboard at a time and refuses to queue more than a few: a user
cannot make the API spend CPU at will by asking for many distinct filters at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.api.leaderboard_cache import MAX_WAITING_FITS, LeaderboardCache, LeaderboardsBusy


async def test_fits_run_one_at_a_time_and_a_full_queue_is_refused() -> None:
    cache = LeaderboardCache()
    running, most = 0, 0
    release = asyncio.Event()

    async def fit(name: str) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return name

    asks = [asyncio.ensure_future(cache.get(f"key{n}", fit(f"board{n}"))) for n in range(MAX_WAITING_FITS)]
    await asyncio.sleep(0.05)
    with pytest.raises(LeaderboardsBusy):
        await cache.get("one more", fit("too many"))
    same = asyncio.ensure_future(cache.get("key0", fit("not computed twice")))  # under way: shared
    release.set()
    assert await asyncio.gather(*asks, same) == [*(f"board{n}" for n in range(MAX_WAITING_FITS)), "board0"]
    assert most == 1
    assert await cache.get("one more", fit("now there is room")) == "now there is room"
