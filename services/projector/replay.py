"""Rebuild a fresh read model from the whole log, with progress, as fast as the machine allows."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import bus
from schemas.streams import PROJECTED_STREAMS
from services.projector.errors import ReadModelExists
from services.projector.projection import Prepared
from services.projector.service import SUBJECTS, Projector
from services.projector.store import Store
from services.projector.tables import READ_MODEL

REPLAY_BATCH = 50_000
READ_TIMEOUT = 30.0

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay did: events read, rows per table, last sequence per stream and speed."""

    events: int
    seconds: float
    rows: dict[str, int]
    checkpoints: dict[str, int]

    @property
    def events_per_s(self) -> float:
        """Events replayed per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def replay(
    nbus: bus.Bus,
    db_path: Path,
    *,
    on_progress: Progress | None = None,
    until: Mapping[str, int] | None = None,
) -> ReplaySummary:
    """Build a fresh read model at db_path from every projected stream up to its current last sequence,
    or up to `until[stream]` (inclusive) for the streams it names (a point in the past)."""
    if db_path.exists():
        raise ReadModelExists(f"{db_path} exists: replay builds a fresh read model")
    partial = db_path.with_name(db_path.name + ".partial")
    for leftover in (partial, partial.with_name(partial.name + ".wal")):
        leftover.unlink(missing_ok=True)
    states = {s: (await nbus.js.stream_info(s)).state for s in PROJECTED_STREAMS}
    last = {s: min(state.last_seq, (until or {}).get(s, state.last_seq)) for s, state in states.items()}
    total = sum(state.messages for state in states.values())
    started = time.perf_counter()
    projector = Projector(await asyncio.to_thread(Store.open, partial, indexes=False))
    done = 0
    stored_keys: dict[str, set[str]] = {table.name: set() for table in READ_MODEL}
    # Replay allocates millions of short-lived objects and few cycles: the cyclic GC would cost a third.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    # DuckDB takes the GIL back for every Arrow vector it scans; with the reader and the fold busy,
    # each take waits out the switch interval (5 ms by default), which made commits 5x slower.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, 0.0005))
    try:
        if on_progress is not None:
            on_progress(0, total)
        for stream, state in states.items():
            if state.messages == 0 or last[stream] < state.first_seq:
                continue

            def progress(n: int) -> None:
                nonlocal done
                done += n
                if on_progress is not None:
                    on_progress(done, total)

            await _replay_stream(nbus, projector, stream, last[stream], progress, stored_keys)
        await projector.run_in_writer(projector.store.create_indexes)
        rows = await projector.run_in_writer(lambda: _count_rows(projector.store))
        checkpoints = dict(projector.store.checkpoints)
    finally:
        sys.setswitchinterval(switch_interval)
        if gc_was_enabled:
            gc.enable()
        await asyncio.to_thread(projector.close)
    partial.rename(db_path)
    seconds = time.perf_counter() - started
    return ReplaySummary(events=done, seconds=seconds, rows=rows, checkpoints=checkpoints)


async def _replay_stream(
    nbus: bus.Bus,
    projector: Projector,
    stream: str,
    last_seq: int,
    progress: Callable[[int], None],
    stored_keys: dict[str, set[str]],
) -> None:
    """Apply one stream from its first message to last_seq; reading runs ahead while a batch is written."""
    follower = bus.BulkReader(nbus, stream, SUBJECTS[stream], 1)
    await follower.start()
    writing: asyncio.Task[int] | None = None
    try:
        previous: Prepared | None = None
        while True:
            if not await follower.wait(READ_TIMEOUT):
                raise TimeoutError(f"replaying {stream}: nothing arrived for {READ_TIMEOUT}s")
            batch = _until(follower.take(REPLAY_BATCH), last_seq)
            end = _at_end(batch, last_seq)
            prepared = projector.prepare_now(stream, batch, previous, stored_keys)
            if writing is not None:
                progress(await writing)
                writing = None
            if prepared is not None:
                writing = asyncio.create_task(projector.commit(prepared))
                previous = prepared
            if end:
                break
        if writing is not None:
            progress(await writing)
            writing = None
    finally:
        if writing is not None:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await follower.stop()


def _until(batch: list[bus.BulkMsg], last_seq: int) -> list[bus.BulkMsg]:
    """The messages of batch up to last_seq."""
    if batch and batch[-1].seq > last_seq:
        return [m for m in batch if m.seq <= last_seq]
    return batch


def _at_end(batch: list[bus.BulkMsg], last_seq: int) -> bool:
    """True when the batch reaches last_seq, or nothing was pending after its last message."""
    return not batch or batch[-1].seq >= last_seq or batch[-1].pending == 0


def _count_rows(store: Store) -> dict[str, int]:
    counts = {}
    for table in READ_MODEL:
        fetched = store.con.execute(f"SELECT count(*) FROM {table.name}").fetchone()
        counts[table.name] = int(fetched[0]) if fetched else 0
    return counts
