"""A small cache of computed leaderboards, so that a page reload does not refit the same votes."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

from schemas.api_leaderboard import LeaderboardBody

CACHED_LEADERBOARDS = 32


class LeaderboardCache:
    """The last few leaderboards by key (filters and the votes' version); a request for a key being
    computed waits for that computation instead of starting another. Failures are not kept."""

    def __init__(self, size: int = CACHED_LEADERBOARDS) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, asyncio.Future[LeaderboardBody]] = OrderedDict()

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[LeaderboardBody]]) -> LeaderboardBody:
        """The leaderboard of `key`, computed by `compute` unless kept or under way."""
        future = self._entries.get(key)
        if future is not None:
            self._entries.move_to_end(key)
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self._entries[key] = future
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        try:
            body = await compute()
        except BaseException as exc:
            self._entries.pop(key, None)
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        future.set_result(body)
        return body
