"""The bus against a real nats-server: dedup, expected sequences, ordered reads, pull loop, micro."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import msgspec
import pytest
from nats.js.errors import NotFoundError

import bus
import schemas
from bus import Bus, ConcurrencyConflict, Credentials, EmbeddedServer, ServerConfig
from schemas.chat import ChatCreated, ChatRenamed, ReplyCompleted, ReplyStarted
from schemas.ids import new_id
from schemas.streams import batch_worker_consumer, worker_consumer


def _created(chat_id: str) -> ChatCreated:
    return ChatCreated(event_id=new_id("e"), chat_id=chat_id, at=schemas.now(), owner_id="ann", title="hi")


async def test_append_with_same_dedup_id_stores_once(nbus: Bus) -> None:
    event = _created("c1")
    first = await bus.append_event(nbus.js, event)
    again = await bus.append_event(nbus.js, event)
    assert not first.duplicate and again.duplicate
    assert again.seq == first.seq
    info = await nbus.js.stream_info("CHAT")
    assert info.state.messages == 1


async def test_expected_subject_sequence_refuses_a_stale_writer(nbus: Bus) -> None:
    await bus.append_event(nbus.js, _created("c2"), expected_subject_seq=0)
    with pytest.raises(ConcurrencyConflict):
        await bus.append_event(nbus.js, _created("c2"), expected_subject_seq=0)


async def test_fence_on_another_subject_refuses_a_zombie(nbus: Bus) -> None:
    def started(attempt: int) -> ReplyStarted:
        return ReplyStarted(
            event_id=new_id("e"),
            chat_id="c3",
            at=schemas.now(),
            reply_id="r1",
            attempt=attempt,
            worker_id=f"w{attempt}",
            model="m",
        )

    first = await bus.append_event(nbus.js, started(1))
    second = await bus.append_event(nbus.js, started(2))
    done = ReplyCompleted(
        event_id=new_id("e"),
        chat_id="c3",
        at=schemas.now(),
        reply_id="r1",
        attempt=1,
        worker_id="w1",
        model="m",
        text="late",
        prompt_tokens=1,
        completion_tokens=1,
        finish_reason="stop",
    )
    fence = "chat.c3.reply.r1.started"
    with pytest.raises(ConcurrencyConflict):
        await bus.append_event(nbus.js, done, expected_subject_seq=first.seq, expected_subject=fence)
    ok = await bus.append_event(nbus.js, done, expected_subject_seq=second.seq, expected_subject=fence)
    assert not ok.duplicate


async def test_read_all_returns_one_chat_in_order(nbus: Bus) -> None:
    await bus.append_event(nbus.js, _created("a"))
    await bus.append_event(nbus.js, _created("b"))
    for i in range(5):
        await bus.append_event(
            nbus.js, ChatRenamed(event_id=new_id("e"), chat_id="a", at=schemas.now(), title=f"t{i}", by="ann")
        )
    msgs = await bus.read_all(nbus.js, "CHAT", ["chat.a.>"])
    titles = [getattr(schemas.decode_event(m.data), "title", None) for m in msgs]
    assert titles == ["hi", "t0", "t1", "t2", "t3", "t4"]
    assert [m.seq for m in msgs] == sorted(m.seq for m in msgs)
    assert await bus.read_all(nbus.js, "CHAT", ["chat.nothing.>"]) == []
    later = await bus.read_all(nbus.js, "CHAT", ["chat.a.>"], start_seq=msgs[3].seq)
    assert [m.seq for m in later] == [m.seq for m in msgs[3:]]
    # Stored at or after a time: a time between the third and the fourth message reads from the fourth on.
    # (Stored times are nanoseconds; a datetime holds microseconds, so the time of a message itself may
    # round to just after it: the midpoint stays clear of both.)
    third, fourth = msgs[2].time, msgs[3].time
    assert third is not None and fourth is not None and fourth > third
    since = await bus.read_all(nbus.js, "CHAT", ["chat.a.>"], start_time=third + (fourth - third) / 2)
    assert [m.seq for m in since] == [m.seq for m in msgs[3:]]


async def test_bulk_reader_reads_every_frame_shape_exactly(nbus: Bus) -> None:
    """Replay's reader splits chunks by lines; frames it cannot read that way must still arrive whole."""
    chat = new_id("c")
    sent: list[tuple[str, bytes, dict[str, str] | None]] = []
    for i in range(3000):  # several socket chunks, with status frames among them
        subject = f"chat.{chat}.renamed"
        shape = i % 6
        if shape == 0:  # an event as every append stores it
            data, headers = schemas.encode(_created(chat)), {"Nats-Msg-Id": new_id("e")}
        elif shape == 1:  # an order-sensitive append: three header lines
            data = schemas.encode(_created(chat))
            headers = {
                "Nats-Msg-Id": new_id("e"),
                "Nats-Expected-Last-Subject-Sequence": "0",
                "Nats-Expected-Last-Subject-Sequence-Subject": f"chat.{new_id('c')}.>",
            }
        elif shape == 2:  # no headers at all (MSG, not HMSG)
            data, headers = b'{"plain":%d}' % i, None
        elif shape == 3:  # raw newlines and a blank line inside the body
            data, headers = b'{\r\n\r\n  "pretty": [1,\n 2]\n}\r', {"Nats-Msg-Id": new_id("e")}
        elif shape == 4:  # an empty body
            data, headers = b"", {"Nats-Msg-Id": new_id("e")}
        else:  # a body bigger than one read
            data, headers = (
                b'{"big":"' + b"x" * (1_500_000 if i == 5 else 2000) + b'"}',
                {"Nats-Msg-Id": new_id("e")},
            )
        await nbus.js.publish(subject, data, headers=headers)
        sent.append((subject, data, headers))
    reader = bus.BulkReader(nbus, "CHAT", [f"chat.{chat}.>"])
    await reader.start()
    got: list[bus.BulkMsg] = []
    try:
        while len(got) < len(sent):
            assert await reader.wait_batch(1000, 10.0), f"stalled at {len(got)}"
            got.extend(reader.take())
    finally:
        await reader.stop()
    assert [(m.subject, m.data) for m in got] == [(subject, data) for subject, data, _ in sent]
    assert [m.seq for m in got] == sorted({m.seq for m in got})
    assert got[-1].pending == 0


async def test_pull_loop_redelivers_a_nak_and_counts_attempts(nbus: Bus) -> None:
    spec = worker_consumer("m1", ack_wait=5)
    await bus.append_raw(nbus.js, "chat.c.reply.r.requested.m1", b"{}", msg_id="x1")
    attempts: list[int] = []
    stop = asyncio.Event()

    async def handle(delivery: bus.Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            await delivery.nak()
        else:
            await delivery.ack()
            stop.set()

    await asyncio.wait_for(bus.pull_loop(nbus.js, spec, handle, capacity=1, stop=stop, fetch_timeout=0.2), 10)
    assert attempts == [1, 2]


class Ping(msgspec.Struct):
    text: str


async def test_micro_service_answers_and_reports_errors(nbus: Bus) -> None:
    async def echo(data: bytes) -> bytes:
        ping = msgspec.json.decode(data, type=Ping)
        if ping.text == "boom":
            raise bus.ServiceError("bad_request", "no booms")
        return msgspec.json.encode(Ping(text=ping.text.upper()))

    service = await bus.serve(nbus.nc, "echoer", "1.0.0", {"echo": echo})
    try:
        answer = await bus.call(nbus.nc, "echoer.echo", Ping(text="hi"), Ping)
        assert answer.text == "HI"
        with pytest.raises(bus.ServiceError) as err:
            await bus.call(nbus.nc, "echoer.echo", Ping(text="boom"), Ping)
        assert err.value.code == "bad_request"
    finally:
        await service.stop()


async def test_accounts_added_to_a_running_server_work_and_keep_the_others(tmp_path: Path) -> None:

    config = ServerConfig(store_dir=tmp_path / "js", credentials=Credentials.generate(), accounts=["a0"])
    server = EmbeddedServer(config, log_path=tmp_path / "nats.log")
    server.start()
    try:
        first = await bus.connect(server.url_for("a0"), name="a0")
        await bus.declare_all(first.js)
        await first.js.publish("chat.c1.created", b"{}")
        server.add_accounts(["a1"])
        second = await bus.connect(server.url_for("a1"), name="a1")
        await bus.declare_all(second.js)
        assert (await second.js.stream_info("CHAT")).state.messages == 0  # its own streams
        assert (await first.js.stream_info("CHAT")).state.messages == 1  # a0 kept its data and connection
        await first.close()
        await second.close()
    finally:
        server.stop()


async def _waiting(nbus: Bus, durable: str) -> None:
    """Until `durable` has a pull request waiting (its lane's long poll is open)."""
    for _ in range(200):
        with contextlib.suppress(NotFoundError):  # not declared yet
            if (await nbus.js.consumer_info("CHAT", durable)).num_waiting:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{durable} never fetched")


async def test_a_message_arriving_on_a_pending_fetch_of_a_full_lane_is_handed_back(nbus: Bus) -> None:
    """Two lanes, capacity 2, the batch lane's limit 1: a batch message arriving on a fetch opened while the
    pool was empty never runs once people hold a slot, and the pool never holds more than 2."""
    people, batch = worker_consumer("pool1", ack_wait=5), batch_worker_consumer("pool1", ack_wait=5)
    release, running, ran = asyncio.Event(), [0], []
    most = [0]

    async def handle(delivery: bus.Delivery) -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        ran.append((delivery.msg.subject.split(".")[3], delivery.attempt, running[0]))
        try:
            if not delivery.msg.subject.endswith(".batch"):
                await release.wait()
        finally:
            running[0] -= 1
        await delivery.ack()

    stop = asyncio.Event()
    lanes = [bus.PullLane(people, handle, 2), bus.PullLane(batch, handle, 1)]
    pulling = asyncio.create_task(bus.pull_lanes(nbus.js, lanes, stop=stop, fetch_timeout=3.0))
    try:
        await _waiting(nbus, batch.durable)  # opened with the pool empty: it may take a line ...
        await bus.append_raw(nbus.js, "chat.c.reply.p1.requested.pool1", b"{}", msg_id="p1")
        await _waiting(nbus, people.durable)
        assert [r[0] for r in ran] == ["p1"]
        await bus.append_raw(nbus.js, "chat.c.reply.b1.requested.pool1.batch", b"{}", msg_id="b1")
        await asyncio.sleep(0.5)  # ... but a person holds the batch lane's one slot: handed back
        assert [r[0] for r in ran] == ["p1"]
        await bus.append_raw(nbus.js, "chat.c.reply.p2.requested.pool1", b"{}", msg_id="p2")
        for _ in range(100):  # the second person finds the reserved slot free
            if len(ran) == 2:
                break
            await asyncio.sleep(0.02)
        assert [r[0] for r in ran] == ["p1", "p2"]
        release.set()
        for _ in range(300):
            if len(ran) == 3:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(pulling, 15)
    assert most[0] == 2
    (line,) = [r for r in ran if r[0] == "b1"]
    assert line[1] == 2  # delivered again after the hand-back, once the people were done


async def test_a_stream_holds_more_consumers_than_the_servers_default_1000(nbus: Bus) -> None:
    # Each open WebSocket/SSE feed holds an ordered consumer on CHAT (and one on TOKENS).
    subs = [await nbus.js.subscribe("chat.feed.>", ordered_consumer=True) for _ in range(1100)]
    assert (await nbus.js.stream_info("CHAT")).state.consumer_count >= 1100
    for sub in subs:
        await sub.unsubscribe()
