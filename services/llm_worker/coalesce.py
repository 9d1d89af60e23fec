"""Gather a reply's tokens on the engine's thread and hand them on in chunks (a few tokens each)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from services.llm_worker.engine import EngineOutput
from services.llm_worker.settings import WorkerSettings


@dataclass(frozen=True)
class Chunk:
    """Tokens gathered since the previous chunk; `last` is the newest engine output (finished or not)."""

    token_ids: list[int]
    last: EngineOutput


class Coalescer:
    """Per reply: wakes the worker's event loop once per chunk instead of once per engine step.

    The loop shares the GIL with the engine's thread, so fewer, larger hand-overs leave more
    of each step to the engine. A chunk is due at `max_tokens` tokens, after `max_seconds`,
    or when the reply finishes. With many replies at once each one's tokens come slower and every
    chunk costs the same (an append to TOKENS, a frame to each watcher), so the wait grows with the
    replies the engine runs (`active`): `max_seconds` per `per_wait` replies, e.g. 80 ms up to 4
    replies, 320 ms at 16 (a reply then still updates ~3 times a second).
    """

    def __init__(
        self,
        max_tokens: int,
        max_seconds: float,
        hand_over: Callable[[Chunk], None],
        active: Callable[[], int] = lambda: 1,
        per_wait: int = 4,
        first_at_once: bool = True,
    ) -> None:
        self.max_tokens = max_tokens
        self.max_seconds = max_seconds
        self.hand_over = hand_over
        self.active = active
        self.per_wait = per_wait
        self.first_at_once = first_at_once
        self.first_token_at: float | None = None
        self._ids: list[int] = []
        self._last_hand_over = time.monotonic()

    def on_output(self, out: EngineOutput) -> None:
        """Engine callback (engine thread): gather, and hand over when a chunk is due."""
        now = time.monotonic()
        first = False
        if out.new_token_ids:
            if self.first_token_at is None:
                self.first_token_at, first = now, self.first_at_once  # out at once (TTFT)
            self._ids.extend(out.new_token_ids)
        wait = self.max_seconds * max(1.0, self.active() / self.per_wait)
        due = first or len(self._ids) >= self.max_tokens or now - self._last_hand_over >= wait
        if out.finished or (self._ids and due):
            chunk, self._ids, self._last_hand_over = Chunk(self._ids, out), [], now
            self.hand_over(chunk)


# A batch line's tokens: nobody streams them, so they go on in a few large chunks (one append each), which
# leaves the engine's thread more of the GIL and nats-server less to store (a 16-token line: 1 chunk, not 3).
BATCH_CHUNK_TOKENS = 64
BATCH_CHUNK_SECONDS = 1.0


def reply_coalescer(
    settings: WorkerSettings, batch: bool, hand_over: Callable[[Chunk], None], active: Callable[[], int]
) -> Coalescer:
    """The coalescer of a reply: the worker's chunk settings, or a batch line's large chunks."""
    if batch:
        return Coalescer(BATCH_CHUNK_TOKENS, BATCH_CHUNK_SECONDS, hand_over, active, first_at_once=False)
    return Coalescer(settings.coalesce_tokens, settings.coalesce_seconds, hand_over, active)
