"""Reads without a consumer (batched Direct Get): the same messages, in the same order, as a consumer reads,
over several batches, and no consumer left behind on the server."""

from __future__ import annotations

import asyncio

import pytest

import bus
import schemas
from bus import Bus
from bus.direct import read_direct, read_subjects
from schemas.chat import ChatCreated, ChatRenamed
from schemas.ids import new_id
from schemas.subjects import matches


async def _chat_with_renames(nbus: Bus, renames: int) -> str:
    chat_id = new_id("c")
    created = ChatCreated(event_id=new_id("e"), chat_id=chat_id, at=schemas.now(), owner_id="ann", title="hi")
    await bus.append_event(nbus.js, created)
    for i in range(renames):
        renamed = ChatRenamed(
            event_id=new_id("e"), chat_id=chat_id, at=schemas.now(), title=f"t{i}", by="ann"
        )
        await bus.append_event(nbus.js, renamed)
    return chat_id


@pytest.mark.parametrize("batch", [1, 3, 256])
async def test_direct_read_matches_a_consumers_read_across_batches(nbus: Bus, batch: int) -> None:
    chat_id = await _chat_with_renames(nbus, 7)
    await _chat_with_renames(nbus, 2)  # another chat, interleaved in the stream: not read
    expected = await bus.read_all(nbus.js, "CHAT", [f"chat.{chat_id}.>"])
    got = await read_direct(nbus.js, "CHAT", f"chat.{chat_id}.>", batch=batch)
    assert [(m.seq, m.subject, m.data) for m in got] == [(m.seq, m.subject, m.data) for m in expected]
    assert len(got) == 8 and got[-1].pending == 0
    later = await read_direct(nbus.js, "CHAT", f"chat.{chat_id}.>", start_seq=got[4].seq, batch=batch)
    assert [m.seq for m in later] == [m.seq for m in got[4:]]


async def test_direct_read_of_nothing_is_empty(nbus: Bus) -> None:
    assert await read_direct(nbus.js, "CHAT", f"chat.{new_id('c')}.>") == []
    chat_id = await _chat_with_renames(nbus, 1)
    last = (await read_direct(nbus.js, "CHAT", f"chat.{chat_id}.>"))[-1]
    assert await read_direct(nbus.js, "CHAT", f"chat.{chat_id}.>", start_seq=last.seq + 1) == []


async def test_read_subjects_keeps_only_the_wanted_subjects_in_order(nbus: Bus) -> None:
    chat_id = await _chat_with_renames(nbus, 3)
    got = await read_subjects(nbus.js, "CHAT", f"chat.{chat_id}.>", [f"chat.{chat_id}.created"])
    assert [m.subject for m in got] == [f"chat.{chat_id}.created"]
    renamed = await read_subjects(nbus.js, "CHAT", f"chat.{chat_id}.>", [f"chat.{chat_id}.*"])
    assert len(renamed) == 4


async def test_many_reads_at_once_leave_no_consumer(nbus: Bus) -> None:
    chat_id = await _chat_with_renames(nbus, 2)
    before = (await nbus.js.stream_info("CHAT")).state.consumer_count
    reads = await asyncio.gather(*(read_direct(nbus.js, "CHAT", f"chat.{chat_id}.>") for _ in range(300)))
    assert all(len(r) == 3 for r in reads)
    assert (await nbus.js.stream_info("CHAT")).state.consumer_count == before


def test_subject_matching_follows_nats_wildcards() -> None:
    assert matches("chat.a.>", "chat.a.reply.r.completed")
    assert not matches("chat.a.>", "chat.a")
    assert matches("chat.a.reply.*.completed", "chat.a.reply.r1.completed")
    assert not matches("chat.a.reply.*.completed", "chat.a.reply.r1.failed")
    assert not matches("chat.a.created", "chat.a.created.x")
    assert not matches("chat.*.created", "chat.created")


async def test_a_read_that_stops_short_of_min_seq_is_read_again_then_from_the_leader(nbus: Bus) -> None:
    # On a cluster any replica answers a direct get, and one a few messages behind stops short of what
    # the reader knows was stored. Here a min_seq past the chat's last message stands for such a replica:
    # the read is asked again, then made through a consumer (served by the stream's leader).
    chat_id = await _chat_with_renames(nbus, 2)
    held = await read_direct(nbus.js, "CHAT", f"chat.{chat_id}.>")
    assert await read_direct(nbus.js, "CHAT", f"chat.{chat_id}.>", min_seq=held[-1].seq) == held
    again = await read_direct(nbus.js, "CHAT", f"chat.{chat_id}.>", min_seq=held[-1].seq + 1)
    assert [(m.seq, m.data) for m in again] == [(m.seq, m.data) for m in held]
