"""How far the log has got: the CHAT stream's last sequence, learnt cheaply."""

from __future__ import annotations

import bus
from bus import JetStream
from schemas.streams import CHAT


class LogEnd:
    """The CHAT stream's last sequence as last seen: a `min_seq` beyond it is a read that can never be served.

    A sequence only grows, so the value seen is a lower bound that needs no expiry: a read asking at
    or below it costs nothing, and only a read asking beyond it looks again (one stream-info request,
    ~0.3 ms here) — a client that has just written, or one asking the impossible (then 400).
    """

    def __init__(self, js: JetStream) -> None:
        self.js = js
        self.seen = 0

    async def reaches(self, seq: int) -> bool:
        """True when the log has assigned `seq` already."""
        if seq > self.seen:
            self.seen = max(self.seen, await bus.last_seq(self.js, CHAT.name))
        return seq <= self.seen
