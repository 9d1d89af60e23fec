"""The projector against a real nats-server: folds, idempotence, paging, min_seq, replay, replicas."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import bus
import schemas
from bus import Bus, decode_bulk
from schemas.chat import (
    ChatDeleted,
    ChatRenamed,
    ReplyCancelled,
    ReplyFailed,
)
from schemas.identity import ApiKeyIssued, ApiKeyRevoked, UserCreated, UserRoleChanged
from schemas.ids import new_id
from schemas.queries import (
    ChatAnswer,
    ChatPage,
    Checkpoints,
    CheckpointsAnswer,
    GetChat,
    ListChats,
    ListMessages,
    MessagesAnswer,
)
from schemas.subjects import subject_of
from services.projector import ReadModelExists, dump_read_model, replay, run_projector
from services.projector.projection import project
from services.projector.store import Store
from services.projector.tables import CHATS
from tests.logs import at_second, chat_life, completed, created, posted, publish_fast, requested, started


async def append_all(nbus: Bus, events: list[Any]) -> int:
    """Append events in order; the last stream sequence."""
    seq = 0
    for event in events:
        seq = (await bus.append_event(nbus.js, event)).seq
    return seq


async def status(nbus: Bus) -> CheckpointsAnswer:
    return await bus.call(nbus.nc, "projector.status", Checkpoints(), CheckpointsAnswer, timeout=2)


async def wait_applied(nbus: Bus, seq: int, timeout: float = 15.0) -> None:
    """Wait until a projector answers and has applied CHAT up to seq."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(bus.ServiceError):
            if (await status(nbus)).applied.get("CHAT", 0) >= seq:
                return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"projector did not reach CHAT {seq}")


@contextlib.asynccontextmanager
async def projector(nbus: Bus, db_path: Path, **kwargs: Any) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(nbus, db_path, stop, **kwargs))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_a_chats_life_folds_into_rows(nbus: Bus, tmp_path: Path) -> None:
    c = "chat1"
    before = [
        UserCreated(event_id=new_id("e"), at=at_second(0), user_id="ann", display_name="Ann"),
        created(c, i=1),
        ChatRenamed(event_id=new_id("e"), chat_id=c, at=at_second(2), title="renamed", by="ann"),
        posted(c, "m1", 3),
        requested(c, "r1", "m1", 3),
        started(c, "r1", 1, 4),
        completed(c, "r1", 1, 5),
    ]
    after = [
        posted(c, "m2", 6),
        requested(c, "r2", "m2", 6),
        started(c, "r2", 1, 7),
        started(c, "r2", 2, 8),  # redelivered to another worker
        started(c, "r2", 1, 8),  # a zombie's stale attempt changes nothing
        ReplyFailed(
            event_id=new_id("e"),
            chat_id=c,
            at=at_second(9),
            reply_id="r2",
            attempt=2,
            worker_id="w2",
            error="out of memory",
        ),
        requested(c, "r3", "m2", 10),
        started(c, "r3", 1, 11),
        ReplyCancelled(event_id=new_id("e"), chat_id=c, at=at_second(12), reply_id="r3", by="ann"),
        completed(c, "r3", 1, 13, finish="cancelled"),
        started(c, "r1", 2, 14),  # already terminal: ignored
        completed(c, "nope", 1, 14),  # unknown reply: ignored
        ChatRenamed(
            event_id=new_id("e"), chat_id="nochat", at=at_second(14), title="x", by="ann"
        ),  # unknown chat
        ChatDeleted(event_id=new_id("e"), chat_id=c, at=at_second(15), by="ann"),
    ]
    await append_all(nbus, before)
    # An event type from a newer version is skipped, not fatal.
    await bus.append_raw(
        nbus.js, f"chat.{c}.future", b'{"type":"chat.future","chat_id":"chat1"}', msg_id="f1"
    )
    async with projector(nbus, tmp_path / "live.duckdb"):
        await wait_applied(nbus, 0)  # serving: it caught up with the backlog
        last = await append_all(nbus, after)
        chat = (
            await bus.call(nbus.nc, "projector.chats.get", GetChat(chat_id=c, min_seq=last), ChatAnswer)
        ).chat
        answer = await bus.call(nbus.nc, "projector.messages.list", ListMessages(chat_id=c), MessagesAnswer)
        listed = await bus.call(nbus.nc, "projector.chats.list", ListChats(user_id="ann"), ChatPage)
        with_deleted = await bus.call(
            nbus.nc, "projector.chats.list", ListChats(user_id="ann", include_deleted=True), ChatPage
        )
        assert (await bus.call(nbus.nc, "projector.chats.get", GetChat(chat_id="x"), ChatAnswer)).chat is None
        with pytest.raises(bus.ServiceError) as err:
            await bus.call(nbus.nc, "projector.chats.list", ListChats(user_id="ann", cursor="!!"), ChatPage)
        assert err.value.code == "bad_request"

    assert chat is not None
    assert (chat.title, chat.deleted, chat.message_count, chat.owner_id) == ("renamed", True, 2, "ann")
    assert chat.created_at == at_second(1) and chat.updated_at == at_second(15)
    assert listed.items == [] and [x.chat_id for x in with_deleted.items] == [c]
    assert [(m.message_id, m.content) for m in answer.messages] == [
        ("m1", "text of m1"),
        ("m2", "text of m2"),
    ]
    assert answer.messages[0].seq < answer.messages[1].seq
    r1, r2, r3 = answer.replies
    assert (r1.reply_id, r1.status, r1.attempt, r1.text, r1.finish_reason) == (
        "r1",
        "completed",
        1,
        "answer r1",
        "stop",
    )
    assert (r1.prompt_tokens, r1.completion_tokens, r1.generation_ms, r1.completed_at) == (
        7,
        3,
        90.0,
        at_second(5),
    )
    assert (r2.status, r2.attempt, r2.worker_id, r2.error) == ("failed", 2, "w2", "out of memory")
    assert (r3.status, r3.finish_reason) == ("cancelled", "cancelled")
    tables = dump_read_model(tmp_path / "live.duckdb")
    assert [row[0] for row in tables["users"]] == ["ann"]
    assert len(tables["replies"]) == 3 and len(tables["chats"]) == 1


async def test_a_redelivered_event_is_not_applied_twice(nbus: Bus, tmp_path: Path) -> None:
    db = tmp_path / "model.duckdb"
    first = await append_all(nbus, [created("c"), posted("c", "m1", 1), posted("c", "m2", 2)])
    store = Store.open(db)
    try:
        batch = await bus.read_all(nbus.js, "CHAT", ["chat.>"])
        assert project(store, "CHAT", batch) == 3
        assert project(store, "CHAT", batch) == 0  # the very same batch again
        await append_all(nbus, [posted("c", "m3", 3)])
        # A consumer restarted from an older position: only the new message counts.
        again = await bus.read_all(nbus.js, "CHAT", ["chat.>"], start_seq=2)
        assert project(store, "CHAT", again) == 1
        assert store.checkpoint("CHAT") == first + 1
    finally:
        store.close()
    tables = dump_read_model(db)
    assert tables["chats"][0][CHATS.names.index("message_count")] == 3
    assert len(tables["messages"]) == 3


async def test_paging_covers_every_chat_once_and_only_the_owners(nbus: Bus, tmp_path: Path) -> None:
    events: list[Any] = [created(f"a{i:02d}", "ann", i % 5) for i in range(23)]  # ties on updated_at
    events += [created(f"b{i}", "bob", i) for i in range(4)]
    last = await append_all(nbus, events)
    async with projector(nbus, tmp_path / "m.duckdb"):
        await wait_applied(nbus, last)
        seen: list[tuple[Any, str]] = []
        cursor = None
        while True:
            page = await bus.call(
                nbus.nc, "projector.chats.list", ListChats(user_id="ann", limit=7, cursor=cursor), ChatPage
            )
            assert len(page.items) <= 7
            seen += [(chat.updated_at, chat.chat_id) for chat in page.items]
            assert all(chat.owner_id == "ann" for chat in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        bob = await bus.call(nbus.nc, "projector.chats.list", ListChats(user_id="bob", limit=500), ChatPage)
    assert sorted(chat_id for _, chat_id in seen) == sorted(f"a{i:02d}" for i in range(23))
    assert seen == sorted(seen, reverse=True)
    assert {chat.chat_id for chat in bob.items} == {f"b{i}" for i in range(4)}


async def test_min_seq_waits_for_the_write_then_answers_behind(nbus: Bus, tmp_path: Path) -> None:
    async with projector(nbus, tmp_path / "m.duckdb", min_seq_timeout=1.0):
        await wait_applied(nbus, 0)
        info = await nbus.js.stream_info("CHAT")
        asking = asyncio.create_task(
            bus.call(
                nbus.nc,
                "projector.chats.get",
                GetChat(chat_id="late", min_seq=info.state.last_seq + 1),
                ChatAnswer,
            )
        )
        await asyncio.sleep(0.2)
        assert not asking.done()
        await append_all(nbus, [created("late")])
        answer = await asking
        assert answer.chat is not None and answer.chat.chat_id == "late"

        started_at = time.monotonic()
        with pytest.raises(bus.ServiceError) as err:
            await bus.call(
                nbus.nc,
                "projector.messages.list",
                ListMessages(chat_id="late", min_seq=10_000),
                MessagesAnswer,
            )
        assert err.value.code == "behind"
        assert 0.9 <= time.monotonic() - started_at < 4


async def test_restart_mid_stream_ends_identical_to_replay(nbus: Bus, tmp_path: Path) -> None:
    identity = [
        UserCreated(event_id=new_id("e"), at=at_second(0), user_id="user0"),
        UserRoleChanged(event_id=new_id("e"), at=at_second(1), user_id="user0", role="admin"),
        ApiKeyIssued(
            event_id=new_id("e"), at=at_second(2), key_id="k1", user_id="user0", key_sha256="ab", label="cli"
        ),
        ApiKeyRevoked(event_id=new_id("e"), at=at_second(3), key_id="k1", user_id="user0"),
    ]
    await append_all(nbus, identity)
    lives = [chat_life(i) for i in range(400)]
    live_db = tmp_path / "live.duckdb"
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(nbus, live_db, stop, serve_queries=False))
    for n in range(0, 200, 20):  # the projector folds while events arrive
        await publish_fast(nbus, [e for life in lives[n : n + 20] for e in life])
        await asyncio.sleep(0.01)
    task.cancel()  # mid-stream, maybe mid-batch
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await publish_fast(nbus, [e for life in lives[200:] for e in life])
    last = (await nbus.js.stream_info("CHAT")).state.last_seq
    async with projector(nbus, live_db):
        await wait_applied(nbus, last)

    progress: list[tuple[int, int]] = []
    summary = await replay(
        nbus, tmp_path / "replayed.duckdb", on_progress=lambda d, t: progress.append((d, t))
    )
    assert summary.events == last + len(identity)
    assert summary.checkpoints == {"CHAT": last, "IDENTITY": len(identity)}
    rebuilt = Store.open(tmp_path / "replayed.duckdb")
    assert rebuilt.checkpoints == summary.checkpoints  # a projector started on it goes on from there
    rebuilt.close()
    assert progress[-1] == (summary.events, summary.events)
    assert summary.rows["chats"] == 400 and summary.rows["replies"] == 1200
    live, replayed = dump_read_model(live_db), dump_read_model(tmp_path / "replayed.duckdb")
    assert live == replayed
    assert live["api_keys"][0][4] is not None and live["users"][0][1] == "admin"
    with pytest.raises(ReadModelExists):
        await replay(nbus, tmp_path / "replayed.duckdb")


async def test_replay_reads_odd_bodies_as_the_live_projector_does(nbus: Bus, tmp_path: Path) -> None:
    """Replay decodes a batch in one call; bodies that call cannot split (a raw newline, a blank, a
    malformed or unknown event) must still decode one by one, each keeping its own sequence."""
    c, pretty = new_id("c"), new_id("c")
    await append_all(nbus, [created(c), posted(c, "m1", 1)])
    pretty_event = msgspec.json.format(schemas.encode(created(pretty, title="line\nbreak")), indent=2)
    assert b"\n" in pretty_event
    odd = [
        (f"chat.{pretty}.created", pretty_event),
        (f"chat.{c}.future", b'{"type":"chat.future","chat_id":"x"}'),
        (f"chat.{c}.blank", b""),
        (f"chat.{c}.broken", b"{not json"),
    ]
    for subject, body in odd:
        await bus.append_raw(nbus.js, subject, body, msg_id=new_id("e"))
    last = await append_all(nbus, [posted(c, "m2", 2), posted(pretty, "p1", 3)])
    async with projector(nbus, tmp_path / "live.duckdb"):
        await wait_applied(nbus, last)
    await replay(nbus, tmp_path / "replayed.duckdb")
    live, replayed = dump_read_model(tmp_path / "live.duckdb"), dump_read_model(tmp_path / "replayed.duckdb")
    assert live == replayed
    chats = {row[0]: row for row in replayed["chats"]}
    assert chats[pretty][2] == "line\nbreak" and chats[pretty][8] == 1 and chats[c][8] == 2
    seqs = {row[0]: row[7] for row in replayed["messages"]}
    assert seqs == {"m1": 2, "m2": 7, "p1": 8}


@pytest.mark.parametrize(
    "odd",
    [
        b"",
        b"  ",
        b"{not json",
        b'{"type":"chat.future"}',
        schemas.encode(created("c8")) + b"\n" + schemas.encode(created("c9")),  # two events in one body
        msgspec.json.format(b'{"a": [1, 2]}', indent=2),
    ],
    ids=["blank", "spaces", "broken", "future", "two-events", "pretty"],
)
def test_a_batch_decodes_each_event_with_its_own_sequence(odd: bytes) -> None:
    events = [created("c1"), posted("c1", "m1", 1), posted("c1", "m2", 2)]
    bodies = [schemas.encode(events[0]), odd, schemas.encode(events[1]), schemas.encode(events[2])]
    subjects = [subject_of(events[0]), "chat.c1.x", subject_of(events[1]), subject_of(events[2])]
    batch = bus.BulkBatch("CHAT", [10, 11, 12, 13], [x.encode() for x in subjects], bodies, 0)
    assert decode_bulk(batch) == [(10, events[0]), (12, events[1]), (13, events[2])]


async def test_two_replicas_share_the_queries(nbus: Bus, nats_url: str, tmp_path: Path) -> None:
    last = await append_all(nbus, [created("shared")])
    other = await bus.connect(nats_url, name="replica-2")
    try:
        async with projector(nbus, tmp_path / "one.duckdb"), projector(other, tmp_path / "two.duckdb"):
            await wait_applied(nbus, last)
            for _ in range(40):
                answer = await bus.call(
                    nbus.nc, "projector.chats.get", GetChat(chat_id="shared", min_seq=last), ChatAnswer
                )
                assert answer.chat is not None
            stats = await _collect(nbus, "$SRV.STATS.projector")
    finally:
        await other.close()
    subject = "projector.chats.get"
    served = [sum(e["num_requests"] for e in s["endpoints"] if e["subject"] == subject) for s in stats]
    assert len(served) == 2 and all(n > 0 for n in served), served


async def _collect(nbus: Bus, subject: str, wait: float = 0.5) -> list[dict[str, Any]]:
    """Every answer to one request within `wait` seconds."""
    import json

    inbox = nbus.nc.new_inbox()
    answers: list[dict[str, Any]] = []

    async def on_answer(msg: Any) -> None:
        answers.append(json.loads(msg.data))

    sub = await nbus.nc.subscribe(inbox, cb=on_answer)
    await nbus.nc.publish(subject, b"", reply=inbox)
    await asyncio.sleep(wait)
    await sub.unsubscribe()
    return answers


def test_a_read_model_built_for_another_schema_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    """An upgrade that changes the tables must not leave a half-fitting file: it starts over from seq 1."""
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE messages (message_id VARCHAR, chat_id VARCHAR)")  # an older version's table
    con.execute("CREATE TABLE checkpoints (stream VARCHAR PRIMARY KEY, last_seq BIGINT NOT NULL)")
    con.execute("INSERT INTO checkpoints VALUES ('CHAT', 99)")
    con.close()

    store = Store.open(path)
    assert store.checkpoint("CHAT") == 0
    columns = {row[0] for row in store.con.execute("DESCRIBE messages").fetchall()}
    assert {"images", "content", "seq"} <= columns
    store.con.execute("INSERT INTO checkpoints VALUES ('CHAT', 5)")
    store.close()

    store = Store.open(path)  # same schema: kept as it is
    assert store.checkpoint("CHAT") == 5
    store.close()
