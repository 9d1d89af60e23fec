"""Password hashing off the event loop: argon2 takes ~0.1 s of CPU and 64 MiB per call, so a few
threads do it (argon2 releases the GIL) and a bounded queue waits for them; beyond it, HashingBusy at
once. Forty bogus logins then cost forty quick refusals, not seconds of a stalled API.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class HashingBusy(Exception):
    """Every hashing thread is busy and the queue is full: ask again in a moment."""


class HashingPool:
    """`threads` threads hash and verify passwords; at most `queue` more calls wait for one."""

    def __init__(self, threads: int, queue: int) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="argon2")
        self._capacity = threads + queue
        self._taken = 0

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` on a hashing thread; HashingBusy when the pool and its queue are full."""
        if self._taken >= self._capacity:
            raise HashingBusy(f"{self._capacity} password checks are running or waiting")
        loop = asyncio.get_running_loop()
        self._taken += 1
        future = self._executor.submit(work, *args)
        # The slot is freed when the thread is done, not when the caller stops waiting: a cancelled
        # request must not let more work pile up behind the threads than the bound allows.
        future.add_done_callback(lambda _: self._free(loop))
        return await asyncio.wrap_future(future)

    def _free(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody counts any more
            loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self._taken -= 1

    def close(self) -> None:
        """Stop taking work; calls still waiting are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)
