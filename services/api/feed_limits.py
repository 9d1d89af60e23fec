"""Limits on live feeds: how many one user or key may hold open, and how much one may buffer.

A feed reads its chat from NATS as fast as NATS delivers, and writes to its client only as fast as
the client reads. What lies between (received, not yet written) is counted against a budget; a feed
over its budget stops buffering and is dropped, and its client resumes from the last sequence it got.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Sequence

from aiohttp import web

import bus
from bus import JetStream, StoredMsg
from identity.accounts import Principal

# The WebSocket close code of a feed dropped because its client did not keep up (4000-4999 are the
# application's own codes; 1008 already means "access revoked").
SLOW_READER_CLOSE = 4008
# How long a dropped feed's last words (buffered frames, then the close frame or SSE end event) may
# take to reach a client that does not read, before the connection is cut.
DROP_GRACE_SECONDS = 5.0

SLOW_READER_REASON = b"slow reader: reconnect with after_chat_seq/after_token_seq of the last frames you got"
SLOW_READER_SSE = (
    b"event: end\n"
    b'data: {"reason":"slow_reader","message":"the feed buffered more than the server allows for a client '
    b'that does not read; reconnect with Last-Event-ID set to the last id you got"}\n\n'
)


class FeedCounts:
    """The feeds open on this API process, per user and per API key, each under its cap."""

    def __init__(self, per_user: int, per_key: int) -> None:
        self.per_user = per_user
        self.per_key = per_key
        self.users: Counter[str] = Counter()
        self.keys: Counter[str] = Counter()

    @staticmethod
    def _key(principal: Principal) -> str | None:
        return None if principal.key_id in ("session", "proxy") else principal.key_id

    def claim(self, principal: Principal) -> str | None:
        """Count one more feed of `principal`; None when within the caps, else why not (nothing counted)."""
        key = self._key(principal)
        if self.users[principal.user_id] >= self.per_user:
            return f"user {principal.user_id} already has {self.per_user} live feeds open; close one first"
        if key is not None and self.keys[key] >= self.per_key:
            return f"this API key already has {self.per_key} live feeds open; close one first"
        self.users[principal.user_id] += 1
        if key is not None:
            self.keys[key] += 1
        return None

    def release(self, principal: Principal) -> None:
        """Count one feed of `principal` fewer."""
        key = self._key(principal)
        self.users[principal.user_id] -= 1
        if self.users[principal.user_id] <= 0:
            del self.users[principal.user_id]
        if key is not None:
            self.keys[key] -= 1
            if self.keys[key] <= 0:
                del self.keys[key]


class FeedBudget:
    """Bytes a feed has received and not yet written to its client, and whether it went over `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.exceeded = asyncio.Event()

    def take(self, size: int) -> bool:
        """Count `size` more bytes; False (and nothing counted) once the budget is exceeded.

        One message is always taken when nothing is held, however big: a feed must be able to move on.
        """
        if self.exceeded.is_set():
            return False
        if self.used and self.used + size > self.limit:
            self.exceeded.set()
            return False
        self.used += size
        self.peak = max(self.peak, self.used)
        return True

    async def until_exceeded(self) -> None:
        """Return once the budget is exceeded."""
        await self.exceeded.wait()

    def give_back(self, msgs: Sequence[StoredMsg]) -> None:
        """The client's transport took these messages."""
        self.used -= sum(len(msg.data) for msg in msgs)


class BoundedFollower(bus.Follower):
    """A Follower that stops buffering once its feed's budget is exceeded (the feed is then dropped)."""

    def __init__(
        self, js: JetStream, stream: str, filter_subjects: Sequence[str], start_seq: int, budget: FeedBudget
    ) -> None:
        super().__init__(js, stream, filter_subjects, start_seq)
        self.budget = budget

    def push(self, item: StoredMsg) -> None:
        """Buffer the message while the budget allows; past it, drop it (the client will ask again)."""
        if self.budget.take(len(item.data)):
            super().push(item)


async def within_grace(request: web.Request, last_words: Awaitable[object]) -> None:
    """Let the last words reach a client that may not read; after DROP_GRACE_SECONDS cut the connection."""
    transport = request.transport
    try:
        async with asyncio.timeout(DROP_GRACE_SECONDS):
            await last_words
    except TimeoutError:
        if transport is not None:
            transport.abort()
