"""The in-order buffers the stream readers fill from their callbacks and callers drain."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Buffered:
    """Something a callback fills and a caller drains; `wait` wakes when there is something to take."""

    def __init__(self) -> None:
        self.signal = asyncio.Event()

    def __len__(self) -> int:
        """Messages buffered now (a subclass says how it counts them)."""
        raise NotImplementedError

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until something is buffered; False on timeout."""
        await self._before_wait()
        self._check()
        if len(self):
            return True
        try:
            await asyncio.wait_for(self.signal.wait(), timeout)
        except TimeoutError:
            return False
        self._check()
        return True

    def _check(self) -> None:
        """Raise when the reader lost its place (a subclass hook)."""

    async def _before_wait(self) -> None:
        """Work to do before waiting (a subclass hook)."""


class MessageBuffer(Buffered, Generic[T]):
    """Messages received and not yet taken, as a list."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer: list[T] = []

    def __len__(self) -> int:
        return len(self.buffer)

    def push(self, item: T) -> None:
        """Called by the receiving callback."""
        self.buffer.append(item)
        self.signal.set()

    def take(self, limit: int | None = None) -> list[T]:
        """Take what is buffered now (at most `limit`)."""
        self._check()
        if limit is None or len(self.buffer) <= limit:
            taken, self.buffer = self.buffer, []
        else:
            taken, self.buffer = self.buffer[:limit], self.buffer[limit:]
        if not self.buffer:
            self.signal.clear()
        return taken
