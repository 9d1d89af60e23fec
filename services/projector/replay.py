"""Rebuild a fresh read model from the whole log, with progress, as fast as the machine allows.

Replay folds with the same `Fold` as the live projector, but never reads the file back: the rows
that can still change (users, keys, chats, selections, ratings and replies not yet finished) stay
in memory, and only rows that are final (messages, finished replies) are written as batches go:
many batches at a time, one INSERT per table and one commit, in a thread beside the fold (so
DuckDB compresses and writes them while the next ones are folded). The held rows are written at
the end. The file is built as `<name>.partial` and renamed when complete.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

import bus
from bus import decode_bulk
from schemas.streams import PROJECTED_STREAMS
from services.projector.errors import ReadModelExists
from services.projector.fold import TERMINAL, Fold
from services.projector.store import ArrowBatch, Store
from services.projector.tables import MESSAGES, MUTABLE, READ_MODEL, REPLIES, Row

REPLAY_BATCH = 20_000
# Final rows held before they are written: ~20 MB of Arrow; fewer, bigger writes cost less CPU,
# smaller ones overlap the fold better (measured 60k-400k on 1M events: 100k among the fastest).
FLUSH_ROWS = 100_000
READ_TIMEOUT = 30.0

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay did: events read, rows per table, last sequence per stream and speed; and the
    messages it skipped (unreadable, or an event on a subject it does not belong to: bus/decode.py)."""

    events: int
    seconds: float
    rows: dict[str, int]
    checkpoints: dict[str, int]
    rejected: bus.Rejected = field(default_factory=bus.Rejected)

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
        self.rejected = bus.Rejected()

    def fold(self, batch: bus.BulkBatch) -> ArrowBatch:
        """Fold a batch over the held rows; returns the rows that are final (to insert)."""
        state = Fold(self.rows, self.store.dead_chats, self.written, in_place=True)
        state.apply(decode_bulk(batch, self.rejected))
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
            stream=batch.stream,
            last_seq=batch.seqs[-1],
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


class _Inserts:
    """Folded batches waiting to be written: merged into one INSERT per table when enough are held,
    written in a thread while the fold goes on (one write at a time, in order)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[ArrowBatch] = []
        self.rows = 0
        self.writing: asyncio.Future[None] | None = None

    async def add(self, batch: ArrowBatch) -> None:
        """Hold a batch; write what is held once it is big, or before a batch that erases something
        (the erasure deletes stored rows, so the rows before it must be stored first)."""
        if batch.erased_chats or batch.erased_users:
            await self.flush()
            await self._write(batch)
            return
        self.batches.append(batch)
        self.rows += sum(rows.num_rows for _, rows, _ in batch.tables if rows is not None)
        if self.rows >= FLUSH_ROWS:
            await self.flush()

    async def flush(self) -> None:
        """Start writing every held batch (one transaction)."""
        if self.batches:
            merged = _merge(self.batches)
            self.batches, self.rows = [], 0
            await self._write(merged)

    async def _write(self, batch: ArrowBatch) -> None:
        await self.wait()
        self.writing = asyncio.ensure_future(asyncio.to_thread(self.store.write, batch))

    async def wait(self) -> None:
        """Wait for the write under way (raising what it raised)."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing

    async def settle(self) -> None:
        """Wait for the write under way, whatever became of it (before the store closes)."""
        if self.writing is not None:
            await asyncio.gather(self.writing, return_exceptions=True)
            self.writing = None


def _merge(batches: list[ArrowBatch]) -> ArrowBatch:
    """Batches of one stream's inserts (no updates, no erasures) as one, in order; its checkpoint is
    the last one's."""
    assert len({batch.stream for batch in batches}) == 1, "merging batches of several streams"
    parts: dict[str, list[pa.Table]] = {}
    tables = {}
    for batch in batches:
        for table, inserts, _ in batch.tables:
            tables[table.name] = table
            if inserts is not None:
                parts.setdefault(table.name, []).append(inserts)
    return ArrowBatch(
        stream=batches[-1].stream,
        last_seq=batches[-1].last_seq,
        tables=[
            (table, pa.concat_tables(parts[name]) if name in parts else None, None)
            for name, table in tables.items()
        ],
    )


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
    held = _Held(store)
    inserts = _Inserts(store)
    done = 0
    checkpoints: dict[str, int] = {}
    # Replay allocates millions of short-lived objects and few cycles: the cyclic GC would cost a third.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        # Writes run beside the fold and nats-server on two cores: a second DuckDB thread only competes.
        store.con.execute("SET threads = 1")
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

            checkpoints[stream] = await _replay_stream(nbus, held, inserts, stream, last[stream], progress)
            await inserts.flush()  # a write holds one stream's batches: each carries its checkpoint
        await inserts.wait()
        if checkpoints:
            stream = next(iter(checkpoints))
            await asyncio.to_thread(store.write, held.rest(stream, checkpoints[stream]))
        store.con.execute("RESET threads")
        await asyncio.to_thread(store.create_indexes)
        rows = await asyncio.to_thread(_count_rows, store)
    finally:
        await inserts.settle()
        if gc_was_enabled:
            gc.enable()
        await asyncio.to_thread(store.close)
    partial.rename(db_path)
    seconds = time.perf_counter() - started
    return ReplaySummary(
        events=done, seconds=seconds, rows=rows, checkpoints=checkpoints, rejected=held.rejected
    )


async def _replay_stream(
    nbus: bus.Bus,
    held: _Held,
    inserts: _Inserts,
    stream: str,
    last_seq: int,
    progress: Callable[[int], None],
) -> int:
    """Apply one stream from its first message to last_seq; returns the last sequence applied.

    The reader parses frames on the event loop while a batch is folded; the writer thread inserts."""
    reader = bus.BulkReader(nbus, stream, [], 1)  # no filter: every subject of the stream
    await reader.start()
    applied = 0
    try:
        while True:
            batch = await reader.next_batch(REPLAY_BATCH, READ_TIMEOUT)
            if batch is None:
                raise TimeoutError(f"replaying {stream}: nothing arrived for {READ_TIMEOUT}s")
            batch = batch.upto(last_seq)
            if batch:
                await inserts.add(held.fold(batch))
                applied = batch.seqs[-1]
                progress(len(batch))
            if not batch or batch.seqs[-1] >= last_seq or batch.pending == 0:
                break
    finally:
        await reader.stop()
    return applied


def _count_rows(store: Store) -> dict[str, int]:
    counts = {}
    for table in READ_MODEL:
        fetched = store.con.execute(f"SELECT count(*) FROM {table.name}").fetchone()
        counts[table.name] = int(fetched[0]) if fetched else 0
    return counts
