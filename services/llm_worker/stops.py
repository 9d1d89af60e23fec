"""Stop texts: cut a streamed reply before the first stop text, never letting any of it out."""

from __future__ import annotations

from collections.abc import Iterable


class StopMatcher:
    """Watches text as it streams and releases only text that cannot be part of a stop text.

    The reply ends where a stop text first completes (as generation would stop there), and just before
    it; on a tie the longer one wins, cutting earlier. Where the text is split into pieces never changes
    the result. The tail that could still become a stop text is held back until it cannot.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        self.stopped = False
        self._held = ""

    def push(self, text: str) -> str:
        """Add text; return what is now safe to send (all "" once stopped)."""
        if self.stopped or not text:
            return ""
        buffer = self._held + text
        cut = self._first_stop(buffer)
        if cut is not None:
            self.stopped, self._held = True, ""
            return buffer[:cut]
        keep = self._open_tail(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The reply ended without a stop text: release the held tail."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _first_stop(self, buffer: str) -> int | None:
        """Start of the stop text that completes first in buffer (earliest end, then longest), or None."""
        best: tuple[int, int] | None = None
        for stop in self.stops:
            start = buffer.find(stop)
            if start >= 0:
                candidate = (start + len(stop), start)
                best = candidate if best is None else min(best, candidate)
        return None if best is None else best[1]

    def _open_tail(self, buffer: str) -> int:
        """Length of the longest end of buffer that is the start of some stop text."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
