"""Rebuild a fresh read model from the whole log, with progress, as fast as the machine allows.

Replay folds with the same `Fold` as the live projector, but never reads the file back: the rows
that can still change (users, keys, chats, selections, ratings and replies not yet finished) stay
in memory, and only rows that are final (messages, finished replies) are written as batches go,
by a writer thread, in one transaction. The held rows are written at the end. The file is built
as `<name>.partial` and renamed when complete.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import bus
from schemas.streams import PROJECTED_STREAMS
from services.projector.errors import ReadModelExists
from services.projector.fold import TERMINAL, Fold, decode_batch
from services.projector.service import SUBJECTS
from services.projector.store import ArrowBatch, Store
from services.projector.tables import MESSAGES, MUTABLE, READ_MODEL, REPLIES, Row

REPLAY_BATCH = 20_000
READ_TIMEOUT = 30.0

Progress = Callable[[int, int], None]
T = TypeVar("T")


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


class _Held:
    """What replay keeps in memory: rows that may still change, and the keys of rows already written."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rows: dict[str, dict[str, Row]] = {table.name: {} for table in MUTABLE}
        self.written: dict[str, set[str]] = {REPLIES.name: set(), MESSAGES.name: set()}

    def fold(self, stream: str, msgs: list[bus.BulkMsg]) -> ArrowBatch:
        """Fold a batch over the held rows; returns the rows that are final (to insert now)."""
        state = Fold(self.rows, self.store.dead_chats, self.written, in_place=True)
        state.apply(decode_batch(msgs))
        for table in MUTABLE:
            self.rows[table.name] = state.tables[table.name].known
        replies = self.rows[REPLIES.name]  # only unfinished ones are held: few besides this batch's
        finished = [row for row in replies.values() if row["status"] in TERMINAL]
        for row in finished:
            del replies[row["reply_id"]]
        self.written[REPLIES.name].update(row["reply_id"] for row in finished)
        self.written[MESSAGES.name].update(state.messages)
        messages = list(state.messages.values())
        return ArrowBatch(
            stream=stream,
            last_seq=msgs[-1].seq,
            tables=[
                (MESSAGES, MESSAGES.arrow(messages) if messages else None, None),
                (REPLIES, REPLIES.arrow(finished) if finished else None, None),
            ],
            erased_chats=state.erased_chats,
            erased_users=state.erased_users,
        )

    def rest(self, stream: str, last_seq: int) -> ArrowBatch:
        """Every held row, to insert at the end."""
        tables = [
            (t, t.arrow(list(self.rows[t.name].values())) if self.rows[t.name] else None, None)
            for t in MUTABLE
        ]
        return ArrowBatch(stream=stream, last_seq=last_seq, tables=tables)


@dataclass
class _Writer:
    """The writer thread: applies batches to the store inside one transaction, one after another."""

    store: Store
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="replay-write")
    )

    async def run(self, fn: Callable[[], T]) -> T:
        """Run fn in the writer thread, after what was handed to it before."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    async def apply(self, batch: ArrowBatch) -> None:
        """Write a batch in the writer thread."""
        await self.run(lambda: self.store.apply(batch))


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
    store = await asyncio.to_thread(Store.open, partial, indexes=False)
    writer = _Writer(store)
    held = _Held(store)
    done = 0
    checkpoints: dict[str, int] = {}
    # Replay allocates millions of short-lived objects and few cycles: the cyclic GC would cost a third.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    # DuckDB takes the GIL back for every Arrow vector it scans; with the reader and the fold busy,
    # each take waits out the switch interval (5 ms by default), which made inserts 5x slower.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, 0.0005))
    try:
        # One transaction: nobody reads the partial file, and per-batch commits cost a WAL write each.
        await writer.run(store.con.begin)
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

            checkpoints[stream] = await _replay_stream(nbus, writer, held, stream, last[stream], progress)
        if checkpoints:
            stream = next(iter(checkpoints))
            await writer.apply(held.rest(stream, checkpoints[stream]))
        await writer.run(store.con.commit)
        await writer.run(store.create_indexes)
        rows = await writer.run(lambda: _count_rows(store))
    finally:
        sys.setswitchinterval(switch_interval)
        if gc_was_enabled:
            gc.enable()
        writer.pool.shutdown(wait=True)
        await asyncio.to_thread(store.close)
    partial.rename(db_path)
    seconds = time.perf_counter() - started
    return ReplaySummary(events=done, seconds=seconds, rows=rows, checkpoints=checkpoints)


async def _replay_stream(
    nbus: bus.Bus,
    writer: _Writer,
    held: _Held,
    stream: str,
    last_seq: int,
    progress: Callable[[int], None],
) -> int:
    """Apply one stream from its first message to last_seq; returns the last sequence applied.

    Reading and folding run on the event loop while the writer inserts the previous batch."""
    follower = bus.BulkReader(nbus, stream, SUBJECTS[stream], 1)
    await follower.start()
    writing: asyncio.Task[None] | None = None
    applied = 0
    try:
        while True:
            if not await follower.wait_batch(REPLAY_BATCH, READ_TIMEOUT):
                raise TimeoutError(f"replaying {stream}: nothing arrived for {READ_TIMEOUT}s")
            batch = _until(follower.take(REPLAY_BATCH), last_seq)
            end = _at_end(batch, last_seq)
            folded = held.fold(stream, batch) if batch else None
            if writing is not None:
                await writing
                writing = None
            if folded is not None:
                writing = asyncio.create_task(writer.apply(folded))
                applied = folded.last_seq
                progress(len(batch))
            if end:
                break
        if writing is not None:
            await writing
            writing = None
    finally:
        if writing is not None:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await follower.stop()
    return applied


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
