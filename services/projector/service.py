"""Run the projector: follow the projected streams into DuckDB and answer queries as a NATS micro service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgspec

import bus
import schemas
from bus import Delivered
from schemas.queries import Checkpoints, CheckpointsAnswer, DigestQuery, GetChat, ListChats, ListMessages
from schemas.streams import CHAT, PROJECTED_STREAMS, PROJECTOR_SERVICE, STREAMS
from services.projector import arena, batches, check, jobs, queries
from services.projector.projection import project
from services.projector.store import Store

log = logging.getLogger(__name__)

VERSION = "0.1.0"
LIVE_BATCH = 10_000
MIN_SEQ_TIMEOUT = 5.0
# Requests each query endpoint answers at once: a read waiting for the read model holds a slot, never
# the endpoint. Reads that wait are bounded apart, well below the slots, so waiters never fill them.
QUERY_CONCURRENCY = 64
MAX_WAITS = 16  # reads waiting for `min_seq` at once, across endpoints; beyond: `busy` at once
# A live batch smaller than this waits up to the linger for more: a new chat's first events arrive in
# three pieces a few ms apart, just as the worker's prefill wants every core of a CPU-only machine. Folded
# later in one transaction they cost half the CPU, none of it in the prefill (CHATBUS_PROJECTOR_LINGER_MS).
LINGER_BELOW = 64
SUBJECTS: dict[str, list[str]] = {spec.name: list(spec.subjects) for spec in STREAMS}

Q = TypeVar("Q")
A = TypeVar("A")


class Projector:
    """A Store driven from asyncio: one writer thread applies batches, reader threads answer queries."""

    def __init__(
        self,
        store: Store,
        min_seq_timeout: float = MIN_SEQ_TIMEOUT,
        max_waits: int = MAX_WAITS,
        linger: float = 0.0,
    ) -> None:
        self.store = store
        self.min_seq_timeout = min_seq_timeout
        self.max_waits = max_waits
        self.linger = linger  # seconds a small live batch waits for more before it is applied
        self.waiting = 0  # reads waiting for the read model now
        self.hurry = asyncio.Event()  # set by a read that waits: a lingering batch is applied at once
        self.applied: dict[str, int] = {s: store.checkpoint(s) for s in PROJECTED_STREAMS}
        self.advanced = asyncio.Condition()
        self.caught_up = {s: asyncio.Event() for s in PROJECTED_STREAMS}
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="projector-write")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="projector-read")
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()

    async def apply(self, stream: str, msgs: Sequence[Delivered]) -> int:
        """Apply a batch in the writer thread, then wake queries waiting for it."""
        loop = asyncio.get_running_loop()
        applied = await loop.run_in_executor(self._writer, project, self.store, stream, msgs)
        self.applied[stream] = self.store.checkpoint(stream)
        async with self.advanced:
            self.advanced.notify_all()
        return applied

    async def run_in_writer(self, fn: Callable[[], A]) -> A:
        """Run `fn` in the writer thread (between batches)."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    async def follow(self, js: Any, stream: str) -> None:
        """Follow one stream from its checkpoint forever; `caught_up` is set once the backlog is applied."""
        follower = bus.Follower(js, stream, SUBJECTS[stream], self.store.checkpoint(stream) + 1)
        await follower.start()
        remaining = follower.initial_pending
        if remaining <= 0:
            self.caught_up[stream].set()
        try:
            async for batch in follower.batches(max_batch=LIVE_BATCH):
                if self.linger > 0 and len(batch) < LINGER_BELOW and self.caught_up[stream].is_set():
                    batch += await self._rest_of_burst(follower, LIVE_BATCH - len(batch))
                await self.apply(stream, batch)
                remaining -= len(batch)
                if remaining <= 0:
                    self.caught_up[stream].set()
        finally:
            await follower.stop()

    async def _rest_of_burst(self, follower: bus.Follower, room: int) -> list[bus.StoredMsg]:
        """What arrives within the linger (at most `room`); nothing more is waited for while a read waits
        for the read model, so a `min_seq` read never waits for the linger."""
        if not self.waiting:
            self.hurry.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hurry.wait(), self.linger)
        return follower.take(room) if len(follower) else []

    async def wait_for(self, min_seq: int) -> None:
        """Wait until CHAT is applied up to min_seq; ServiceError `behind` after the timeout, `busy` at
        once when `max_waits` reads are waiting already."""
        if self.applied[CHAT.name] >= min_seq:
            return
        if self.waiting >= self.max_waits:
            raise bus.ServiceError(
                "busy", f"{self.waiting} reads are waiting for the read model already; retry shortly"
            )
        self.waiting += 1
        self.hurry.set()
        try:
            async with self.advanced:
                await asyncio.wait_for(
                    self.advanced.wait_for(lambda: self.applied[CHAT.name] >= min_seq), self.min_seq_timeout
                )
        except TimeoutError:
            raise bus.ServiceError(
                "behind", f"read model is at CHAT {self.applied[CHAT.name]}, asked for {min_seq}"
            ) from None
        finally:
            self.waiting -= 1

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self.store.reader()
            self._local.cursor = cursor
            with self._cursors_lock:
                self._cursors.append(cursor)
        return cursor

    async def read(self, fn: Callable[[duckdb.DuckDBPyConnection, Q], A], query: Q) -> A:
        """Run a query function in a reader thread with that thread's cursor."""

        def run() -> A:
            try:
                return fn(self._cursor(), query)
            except queries.BadQuery as exc:
                raise bus.ServiceError("bad_request", str(exc)) from exc

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    def endpoints(self) -> dict[str, Callable[[bytes], Awaitable[bytes]]]:
        """The micro service endpoints: chats.list, chats.get, messages.list, status."""

        async def chats_list(data: bytes) -> bytes:
            query = msgspec.json.decode(data, type=ListChats)
            await self.wait_for(query.min_seq)
            return schemas.encode(await self.read(queries.list_chats, query))

        async def chats_get(data: bytes) -> bytes:
            query = msgspec.json.decode(data, type=GetChat)
            await self.wait_for(query.min_seq)
            return schemas.encode(await self.read(queries.get_chat, query))

        async def messages_list(data: bytes) -> bytes:
            query = msgspec.json.decode(data, type=ListMessages)
            await self.wait_for(query.min_seq)
            return schemas.encode(await self.read(queries.list_messages, query))

        async def status(data: bytes) -> bytes:
            msgspec.json.decode(data or b"{}", type=Checkpoints)
            return schemas.encode(CheckpointsAnswer(applied=dict(self.applied)))

        async def digest(data: bytes) -> bytes:
            query = msgspec.json.decode(data or b"{}", type=DigestQuery)
            store = self.store
            answer = await self.run_in_writer(
                lambda: check.digest(store.con, dict(store.checkpoints), with_chats=query.with_chats)
            )
            return schemas.encode(answer)

        return {
            "chats.list": chats_list,
            "chats.get": chats_get,
            "messages.list": messages_list,
            "status": status,
            "digest": digest,
            **arena.endpoints(self),
            **jobs.endpoints(self),
            **batches.endpoints(self),
        }

    def close(self) -> None:
        """Let the threads finish their work, then close the file."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        for cursor in self._cursors:
            cursor.close()
        self.store.close()


async def run_projector(
    nbus: bus.Bus,
    db_path: Path,
    stop: asyncio.Event,
    *,
    serve_queries: bool = True,
    min_seq_timeout: float = MIN_SEQ_TIMEOUT,
    max_waits: int = MAX_WAITS,
    linger: float = 0.0,
) -> None:
    """Project the streams into db_path and (once caught up) answer queries, until stop is set.

    `linger` (seconds): how long a small live batch waits for the rest of its burst (0: none)."""
    store = await asyncio.to_thread(Store.open, db_path)
    projector = Projector(store, min_seq_timeout, max_waits, linger)
    followers = [
        asyncio.create_task(projector.follow(nbus.js, s), name=f"projector-{s}") for s in PROJECTED_STREAMS
    ]
    stopped = asyncio.create_task(stop.wait(), name="projector-stop")
    service = None
    try:
        if serve_queries:
            ready = asyncio.create_task(_all_set(projector.caught_up.values()), name="projector-ready")
            await _first_of([ready, stopped, *followers])
            if ready.done():
                service = await bus.serve(
                    nbus.nc,
                    PROJECTOR_SERVICE,
                    VERSION,
                    projector.endpoints(),
                    description="chatbus read model (DuckDB)",
                    concurrency=QUERY_CONCURRENCY,
                )
                log.info("projector serving queries at %s", projector.applied)
            ready.cancel()
        await _first_of([stopped, *followers])
    finally:
        if service is not None:
            with contextlib.suppress(bus.BusError):  # the connection is gone: nothing more arrives
                await service.stop()
        for task in [stopped, *followers]:
            task.cancel()
        results = await asyncio.gather(stopped, *followers, return_exceptions=True)
        projector.close()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


async def _all_set(events: Any) -> None:
    for event in events:
        await event.wait()


async def _first_of(tasks: list[asyncio.Task[Any]]) -> None:
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
