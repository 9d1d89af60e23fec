"""Follow one reply as it happens: its token deltas and its events, for a request that waits on it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import bus
import schemas
from schemas.chat import ReplyCompleted, ReplyFailed
from schemas.streams import CHAT
from schemas.subjects import one_reply, reply_tokens

log = logging.getLogger(__name__)
# After this long without a word from the reply, look in the log for its end (a message lost on a
# reconnect must not leave the caller waiting forever).
QUIET_CHECK_SECONDS = 5.0


class ReplyWatch:
    """Core subscriptions to a reply's TOKENS subject and its CHAT subjects, made before it is requested.

    The worker publishes a reply's deltas and then its end event on one connection, so they arrive
    here in that order; no consumer has to be created, which keeps a completion's fixed cost low.
    If the connection drops, a quiet spell makes the watch read the end event from the log instead.
    """

    def __init__(self, nbus: bus.Bus, chat_id: str, reply_id: str) -> None:
        self.nc = nbus.nc
        self.js = nbus.js
        self.chat_id = chat_id
        self.reply_id = reply_id
        self.queue: asyncio.Queue[schemas.Event] = asyncio.Queue()
        self._subs: list[Any] = []
        self._quiet = 0.0

    async def start(self) -> None:
        """Subscribe; the server has the interest before any later publish on this connection."""

        async def on_msg(msg: Any) -> None:
            event = bus.decode_one(msg.subject, msg.data)
            if event is not None:
                self.queue.put_nowait(event)

        for subject in (
            reply_tokens(self.chat_id, self.reply_id),
            one_reply(self.chat_id, self.reply_id),
        ):
            self._subs.append(await self.nc.subscribe(subject, cb=on_msg))

    async def next(self, timeout: float) -> schemas.Event:
        """The next event of the reply; TimeoutError when none came within `timeout` seconds."""
        try:
            event = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            self._quiet += timeout
            if self._quiet >= QUIET_CHECK_SECONDS:
                self._quiet = 0.0
                end = await self._end_from_log()
                if end is not None:
                    return end
            raise
        self._quiet = 0.0
        return event

    async def _end_from_log(self) -> schemas.Event | None:
        last = await bus.last_msg(self.js, CHAT.name, one_reply(self.chat_id, self.reply_id))
        if last is None:
            return None
        event = bus.decode_one(last.subject, last.data)
        return event if isinstance(event, ReplyCompleted | ReplyFailed) else None

    async def stop(self) -> None:
        """Unsubscribe."""
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - the connection may be closing; nothing to undo
                log.debug("unsubscribe failed: %s", exc)
        self._subs.clear()
