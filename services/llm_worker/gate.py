"""Batch lines ready before their slot frees: the worker's background gate around its engine.

An engine that runs in the caller's process refills a finished request's slot on its own thread, before
its next step. A worker refills through the bus: it acknowledges the line, fetches the next, reads its
chat and renders its prompt, and by then the engine has begun its next step without it. With short batch
lines (16 new tokens: 17 steps each) one step lost per line is about 6% of a batch's throughput.

So the batch lane takes more lines than may run (`batch_prefetch`, lanes.py), and this gate holds those
lines, read and rendered, until the engine has room: a background request is submitted while fewer than
`limit()` requests (of either kind) run in the engine, as the batch lane's rule was; the others wait here,
in arrival order. When a request ends, its final output (delivered on the engine's thread) submits the
next held line at once, in time for the engine's next step. A person's request passes straight through.

A held line cancelled (its job cancelled or expired, the worker stopping) gets its one final output,
"cancelled", from here; one the engine refuses when its turn comes (a prompt too long for the context)
ends with "error" and the engine's reason.

The gate counts the requests it handed the engine (every request goes through it) rather than asking the
engine, and never calls the engine while holding its own lock: the engine calls back into the gate (a
request's final output) while holding the engine's.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.llm_worker.engine import (
    ChatMessage,
    Engine,
    EngineOutput,
    GenerationParams,
    OutputCallback,
    Prompt,
)


@dataclass(frozen=True)
class _Held:
    request_id: str
    prompt: Prompt
    params: GenerationParams
    on_output: OutputCallback


class BackgroundGate:
    """An Engine: `engine`, with background requests beyond `limit()` busy ones held until one ends."""

    def __init__(self, engine: Engine, limit: Callable[[], int]) -> None:
        self.inner = engine
        self.limit = limit
        self.supports_images = engine.supports_images
        self.max_context = int(getattr(engine, "max_context", 0))
        self._held: collections.deque[_Held] = collections.deque()
        self._running = 0  # requests handed to the engine that have not had their final output
        self._background = 0  # of which background ones
        self._lock = threading.Lock()

    def start(self) -> None:
        self.inner.start()

    def stop(self) -> None:
        """Stop the engine; held lines end with "error" (engine stopped), as its own unfinished ones do."""
        with self._lock:  # first: the engine's own ending ones would hand it the held ones
            held, self._held = list(self._held), collections.deque()
        self.inner.stop()
        for line in held:
            line.on_output(_ended(line, "error", "engine stopped"))

    def alive(self) -> bool:
        return self.inner.alive()

    def build_prompt(self, messages: list[ChatMessage], images: Mapping[str, Any] | None = None) -> Prompt:
        return self.inner.build_prompt(messages, images)

    def held(self) -> int:
        """Background requests waiting here for room in the engine."""
        return len(self._held)

    def background_running(self) -> int:
        """Background requests in the engine now."""
        return self._background

    def active(self) -> int:
        """Requests not yet ended: in the engine, or held here."""
        return self._running + len(self._held)

    def submit(
        self,
        request_id: str,
        prompt: Prompt,
        params: GenerationParams,
        on_output: OutputCallback,
        *,
        background: bool = False,
    ) -> None:
        """As Engine.submit; a background request may wait here (then the engine's checks come later)."""
        line = _Held(request_id, prompt, params, on_output)
        with self._lock:
            if background and (self._held or self._running >= self.limit()):
                self._held.append(line)
                return
            self._running += 1
            self._background += background
        self._hand_over(line, background)

    def cancel(self, request_id: str) -> None:
        """As Engine.cancel: a held request ends here, "cancelled", before this returns."""
        with self._lock:
            line = next((h for h in self._held if h.request_id == request_id), None)
            if line is not None:
                self._held.remove(line)
        if line is not None:
            line.on_output(_ended(line, "cancelled", None))
        else:
            self.inner.cancel(request_id)

    def _hand_over(self, line: _Held, background: bool) -> None:
        """Submit to the engine (counted as running already); its final output makes room for the next."""

        def watched(output: EngineOutput) -> None:
            if output.finished:
                with self._lock:
                    self._running -= 1
                    self._background -= background
                self._admit()
            line.on_output(output)

        try:
            self.inner.submit(line.request_id, line.prompt, line.params, watched, background=background)
        except BaseException:
            with self._lock:
                self._running -= 1
                self._background -= background
            raise

    def _admit(self) -> None:
        """Submit held lines while the engine has room (on the thread where a request ended)."""
        while True:
            with self._lock:
                if not self._held or self._running >= self.limit():
                    return
                line = self._held.popleft()
                self._running += 1
                self._background += 1
            try:
                self._hand_over(line, background=True)
            except (ValueError, RuntimeError) as exc:  # its prompt does not fit; the engine is stopping
                line.on_output(_ended(line, "error", str(exc)))


def _ended(line: _Held, reason: str, error: str | None) -> EngineOutput:
    return EngineOutput(line.request_id, [], True, reason, error, len(line.prompt.input_ids), 0)
