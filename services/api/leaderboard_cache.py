"""A small cache of computed leaderboards, so that a page reload does not refit the same votes."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Coroutine, Hashable
from typing import Any

from schemas.api_leaderboard import LeaderboardBody

CACHED_LEADERBOARDS = 32

Compute = Coroutine[Any, Any, LeaderboardBody]


class LeaderboardCache:
    """The last few leaderboards by key (filters and the votes' version). A request for a key being
    computed waits for that computation instead of starting another; a computation goes on when the
    request that started it goes away. Failures are not kept."""

    def __init__(self, size: int = CACHED_LEADERBOARDS) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, asyncio.Task[LeaderboardBody]] = OrderedDict()

    async def get(self, key: Hashable, compute: Compute) -> LeaderboardBody:
        """The leaderboard of `key`: kept, under way, or computed now by `compute`."""
        task = self._entries.get(key)
        if task is None:
            task = asyncio.ensure_future(compute)
            self._entries[key] = task
            task.add_done_callback(lambda done: self._forget_failure(key, done))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            compute.close()  # not needed: never awaited
            self._entries.move_to_end(key)
        return await asyncio.shield(task)

    def _forget_failure(self, key: Hashable, task: asyncio.Task[LeaderboardBody]) -> None:
        if (task.cancelled() or task.exception() is not None) and self._entries.get(key) is task:
            del self._entries[key]
