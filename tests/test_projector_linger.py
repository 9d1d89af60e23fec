"""The projector's linger: a new chat's burst of events lands in one transaction, and a read that asks
for its own writes (`min_seq`) never waits for the linger."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import bus
from bus import Bus, Delivered
from schemas.queries import ChatAnswer, Checkpoints, CheckpointsAnswer, GetChat
from schemas.streams import CHAT
from services.projector.service import Projector, run_projector
from services.projector.store import Store
from tests.logs import created, posted, requested, started


class CountingProjector(Projector):
    """A projector that notes the size of each batch it applies (each is one transaction)."""

    def __init__(self, store: Store, linger: float) -> None:
        super().__init__(store, linger=linger)
        self.batches: list[int] = []

    async def apply(self, stream: str, msgs: Sequence[Delivered]) -> int:
        self.batches.append(len(msgs))
        return await super().apply(stream, msgs)


@contextlib.asynccontextmanager
async def projector(nbus: Bus, db: Path, linger: float) -> AsyncIterator[None]:
    """The projector service (folding and answering queries) with this linger, until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(nbus, db, stop, linger=linger))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def status(nbus: Bus) -> CheckpointsAnswer:
    return await bus.call(nbus.nc, "projector.status", Checkpoints(), CheckpointsAnswer, timeout=2)


async def wait_applied(nbus: Bus, seq: int, timeout: float = 15.0) -> None:
    """Wait until the projector answers and has applied CHAT up to seq."""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(bus.ServiceError):
                if (await status(nbus)).applied.get(CHAT.name, 0) >= seq:
                    return
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def following(nbus: Bus, db: Path, linger: float) -> AsyncIterator[CountingProjector]:
    store = await asyncio.to_thread(Store.open, db)
    counting = CountingProjector(store, linger)
    task = asyncio.create_task(counting.follow(nbus.js, CHAT.name))
    try:
        await asyncio.wait_for(counting.caught_up[CHAT.name].wait(), 10)
        yield counting
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        counting.close()


async def append_burst(nbus: Bus, chat_id: str, gap: float = 0.02) -> int:
    """A completion's first events as the API and then the worker append them, `gap` s apart."""
    await bus.append_event(nbus.js, created(chat_id, i=1))
    await asyncio.sleep(gap)
    await bus.append_events(nbus.js, [posted(chat_id, "m1", 2), requested(chat_id, "r1", "m1", 2)])
    await asyncio.sleep(gap)
    return (await bus.append_event(nbus.js, started(chat_id, "r1", 1, 3))).seq


async def until_applied(counting: Projector, seq: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while counting.applied[CHAT.name] < seq:
            await asyncio.sleep(0.01)


async def test_a_new_chats_burst_lands_in_one_transaction(nbus: Bus, tmp_path: Path) -> None:
    async with following(nbus, tmp_path / "linger.duckdb", linger=0.3) as counting:
        last = await append_burst(nbus, "burst")
        await until_applied(counting, last)
        assert counting.batches == [4]
        chat = counting.store.con.execute("SELECT chat_id FROM chats").fetchall()
        assert chat == [("burst",)]


async def test_without_linger_the_same_burst_takes_one_transaction_per_piece(
    nbus: Bus, tmp_path: Path
) -> None:
    async with following(nbus, tmp_path / "eager.duckdb", linger=0.0) as counting:
        last = await append_burst(nbus, "eager", gap=0.1)  # room to apply each piece before the next
        await until_applied(counting, last)
        # Not held back for what may follow: the first event goes alone. (Under load a later piece may
        # still arrive while one is being applied and go with it: the count after the first varies.)
        assert counting.batches[0] == 1 and len(counting.batches) >= 2 and sum(counting.batches) == 4


async def test_a_min_seq_read_never_waits_for_the_linger(nbus: Bus, tmp_path: Path) -> None:
    linger = 5.0  # far longer than any read below may take
    async with projector(nbus, tmp_path / "reads.duckdb", linger=linger):
        await wait_applied(nbus, 0)
        # A read that arrives while the batch lingers cuts the linger short.
        seq = (await bus.append_event(nbus.js, created("mine", i=1))).seq
        await asyncio.sleep(0.1)  # the projector has the event and lingers
        assert (await status(nbus)).applied.get(CHAT.name, 0) < seq
        t0 = time.monotonic()
        answer = await bus.call(
            nbus.nc, "projector.chats.get", GetChat(chat_id="mine", min_seq=seq), ChatAnswer
        )
        assert answer.chat is not None and time.monotonic() - t0 < 1.0
        # A read already waiting when the events arrive: they are applied without a linger.
        info = await nbus.js.stream_info(CHAT.name)
        asking = asyncio.create_task(
            bus.call(
                nbus.nc,
                "projector.chats.get",
                GetChat(chat_id="next", min_seq=info.state.last_seq + 1),
                ChatAnswer,
            )
        )
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await bus.append_event(nbus.js, created("next", i=2))
        answer = await asking
        assert answer.chat is not None and time.monotonic() - t0 < 1.0


async def test_a_lingering_batch_is_applied_when_the_linger_ends(nbus: Bus, tmp_path: Path) -> None:
    async with projector(nbus, tmp_path / "ends.duckdb", linger=0.3):
        await wait_applied(nbus, 0)
        t0 = time.monotonic()
        seq = (await bus.append_event(nbus.js, created("alone", i=1))).seq
        await wait_applied(nbus, seq, timeout=5)
        assert 0.25 <= time.monotonic() - t0 < 3
