"""A small cache of computed leaderboards, so that a page reload does not refit the same votes."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Coroutine, Hashable
from typing import Any

from schemas.api_leaderboard import LeaderboardBody

CACHED_LEADERBOARDS = 32
# Fits run one at a time (each takes up to a few seconds of CPU); past this many waiting, a request for a
# leaderboard neither kept nor under way is refused (LeaderboardsBusy), so that no one can queue CPU at will.
MAX_WAITING_FITS = 4

Compute = Coroutine[Any, Any, LeaderboardBody]


class LeaderboardsBusy(Exception):
    """Too many fits are waiting already: ask again in a moment."""


class LeaderboardCache:
    """The last few leaderboards by key (filters and the votes' version). A request for a key being
    computed waits for that computation instead of starting another; a computation goes on when the
    request that started it goes away. Failures are not kept."""

    def __init__(self, size: int = CACHED_LEADERBOARDS) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, asyncio.Task[LeaderboardBody]] = OrderedDict()
        self._fitting = asyncio.Semaphore(1)
        self._waiting = 0

    async def get(self, key: Hashable, compute: Compute) -> LeaderboardBody:
        """The leaderboard of `key`: kept, under way, or computed now by `compute`."""
        task = self._entries.get(key)
        if task is None:
            if self._waiting >= MAX_WAITING_FITS:
                compute.close()
                raise LeaderboardsBusy(f"{self._waiting} leaderboards are being fitted already")
            task = asyncio.ensure_future(self._one_at_a_time(compute))
            self._entries[key] = task
            task.add_done_callback(lambda done: self._forget_failure(key, done))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            compute.close()  # not needed: never awaited
            self._entries.move_to_end(key)
        return await asyncio.shield(task)

    async def _one_at_a_time(self, compute: Compute) -> LeaderboardBody:
        self._waiting += 1
        try:
            async with self._fitting:
                return await compute
        finally:
            self._waiting -= 1

    def _forget_failure(self, key: Hashable, task: asyncio.Task[LeaderboardBody]) -> None:
        if (task.cancelled() or task.exception() is not None) and self._entries.get(key) is task:
            del self._entries[key]
