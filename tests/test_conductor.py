"""The conductor against a real NATS: turns in order, mentions, pause, limits, kill -9, two at once.

The bots' model is the converted SmolLM2 (a real worker) in the first test; the others play the worker
for a scripted alias (pull its requests, append started and completed), so a reply's text is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from nats.js.errors import NotFoundError

import bus
import schemas
from bus import Bus, Delivery
from logtools.chat_log import read_chat_state
from schemas.bot import BotSpec
from schemas.chat import (
    ChatCreated,
    ChatEvent,
    Floor,
    FloorPaused,
    FloorResumed,
    FloorSet,
    FloorStopped,
    MessagePosted,
    ParticipantJoined,
    Policy,
    ReplyCancelled,
    ReplyCompleted,
    ReplyRequested,
    ReplyStarted,
    SpeakerNamed,
)
from schemas.chat_state import ChatState
from schemas.ids import new_id
from schemas.sampling import SamplingParams
from schemas.seat import context_for
from schemas.streams import CHAT, CONDUCTOR_SERVICE, worker_consumer
from services.conductor import ConductorStatus, run_conductor
from services.conductor.cache import ChatCache
from tests.stack import extra_worker, spawn, stop_process

NAMES = ["Zen Sage", "Hot Head", "Quiet One"]
Script = Callable[[ReplyRequested], str]


def _base(chat_id: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": new_id("e"), "chat_id": chat_id, "at": schemas.now(), **fields}


async def append(nbus: Bus, *events: ChatEvent) -> None:
    for event in events:
        await bus.append_event(nbus.js, event)


async def party(
    nbus: Bus, model: str, policy: Policy, bots: int = 2, params: SamplingParams | None = None, **limits: Any
) -> str:
    """A chat with `bots` bots on `model` (participants p1, p2, ...) and its floor; its id."""
    chat_id = new_id("c")
    await append(nbus, ChatCreated(**_base(chat_id, owner_id="ann", title="party")))
    for i in range(bots):
        bot = BotSpec(name=NAMES[i], model=model, params=params or SamplingParams(max_new_tokens=4))
        await append(nbus, ParticipantJoined(**_base(chat_id, participant_id=f"p{i + 1}", bot=bot, by="ann")))
    await append(nbus, FloorSet(**_base(chat_id, floor=Floor(policy=policy, **limits), by="ann")))
    return chat_id


async def post(nbus: Bus, chat_id: str, text: str) -> None:
    message = MessagePosted(
        **_base(chat_id, message_id=new_id("m"), author_id="ann", author_name="Ann", content=text)
    )
    await append(nbus, message)


def requests(state: ChatState) -> list[ReplyRequested]:
    """The chat's reply requests, in the order they were appended."""
    found = [(state.tree.nodes[r].seq, reply.request) for r, reply in state.replies.items() if reply.request]
    return [request for _, request in sorted(found, key=lambda pair: pair[0])]


def done(state: ChatState) -> int:
    return sum(reply.status == "completed" for reply in state.replies.values())


async def until(
    nbus: Bus, chat_id: str, check: Callable[[ChatState], bool], timeout: float = 60.0
) -> ChatState:
    """Read the chat until `check` holds; its state then."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await read_chat_state(nbus.js, chat_id)
        if check(state):
            return state
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{chat_id}: {len(state.replies)} replies, {done(state)} completed")
        await asyncio.sleep(0.1)


async def quiet(nbus: Bus, chat_id: str, seconds: float = 1.5) -> ChatState:
    """The chat's state once nothing happened in it for `seconds`."""
    state = await read_chat_state(nbus.js, chat_id)
    while True:
        await asyncio.sleep(seconds)
        later = await read_chat_state(nbus.js, chat_id)
        if later.last_seq == state.last_seq:
            return later
        state = later


async def _quiet_all(nbus: Bus, chat_ids: list[str]) -> list[ChatState]:
    """Each chat's state once nothing happened in it for the quiet time: the chats watched at once."""
    return list(await asyncio.gather(*(quiet(nbus, chat_id) for chat_id in chat_ids)))


def assert_a_chain(state: ChatState, speakers: list[str]) -> None:
    """Exactly these turns, in order, each following the one before (no turn skipped or doubled)."""
    asked = requests(state)
    assert [r.speaker for r in asked] == speakers
    for before, after in zip(asked, asked[1:], strict=False):
        assert after.message_id == before.reply_id
    assert all(r.requested_by == "conductor" for r in asked)


@contextlib.asynccontextmanager
async def conductor(nbus: Bus) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_conductor(nbus, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def scripted_worker(nbus: Bus, alias: str, script: Script, seconds: float = 0.0) -> AsyncIterator[None]:
    """Answer every request for `alias` with `script(request)`, after `seconds`."""
    stop = asyncio.Event()

    async def answer(delivery: Delivery) -> None:
        request = schemas.decode_event(delivery.data)
        assert isinstance(request, ReplyRequested)
        common = {"reply_id": request.reply_id, "attempt": 1, "worker_id": "script", "model": alias}
        await append(nbus, ReplyStarted(**_base(request.chat_id, **common)))
        await asyncio.sleep(seconds)
        completed = ReplyCompleted(
            **_base(request.chat_id, **common),
            text=script(request),
            prompt_tokens=1,
            completion_tokens=1,
            finish_reason="stop",
            speaker=request.speaker,
        )
        await append(nbus, completed)
        await delivery.ack()

    task = asyncio.create_task(bus.pull_loop(nbus.js, worker_consumer(alias), answer, capacity=8, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_two_bots_in_round_robin_take_six_turns_each_seeing_the_others_last_turn(
    nbus: Bus, smollm2_dir: Path
) -> None:
    async with extra_worker(nbus, smollm2_dir, "smollm2"):
        chat_id = await party(
            nbus, "smollm2", "round_robin", rounds=3, params=SamplingParams(max_new_tokens=6)
        )
        async with conductor(nbus):
            await post(nbus, chat_id, "Is tea better than coffee?")
            await until(nbus, chat_id, lambda s: done(s) >= 6, timeout=240)
            state = await quiet(nbus, chat_id)
    assert_a_chain(state, ["p1", "p2"] * 3)
    assert done(state) == 6
    asked = requests(state)
    for before, request in zip(asked, asked[1:], strict=False):
        other = state.participants[before.speaker].name
        answer = state.answer(before.reply_id)
        assert answer is not None and answer.speaker == before.speaker
        seen = context_for(state, request)
        assert seen[-1].role == "user" and seen[-1].content.endswith(f"{other}: {answer.text}")
        own = [t for t in seen if t.role == "assistant"]
        assert len(own) == asked.index(request) // 2  # its own earlier turns, as assistant


async def test_a_reply_naming_a_bot_hands_it_the_word(nbus: Bus) -> None:
    lines = {"p2": "Fine. @Quiet One, your turn", "p3": "I pass to @zensage.", "p1": "That is all."}
    chat_id = await party(nbus, "script", "mention", bots=3)
    async with scripted_worker(nbus, "script", lambda r: lines[r.speaker]), conductor(nbus):
        await post(nbus, chat_id, "What do you say, @Hot Head?")
        await until(nbus, chat_id, lambda s: done(s) >= 3)
        state = await quiet(nbus, chat_id)
        assert_a_chain(state, ["p2", "p3", "p1"])
        await post(nbus, chat_id, "Nobody named here.")
        assert len(requests(await quiet(nbus, chat_id))) == 3
        status = await _status(nbus)  # read once, then folded event by event: no conflict, no gap
    assert (status.turns, status.reads, status.conflicts, status.gaps) == (3, 1, 0, 0)


async def test_pause_takes_effect_within_one_turn_and_resume_goes_on(nbus: Bus) -> None:
    chat_id = await party(nbus, "script", "auto", max_bot_turns=40)
    async with scripted_worker(nbus, "script", lambda r: "more", seconds=0.3), conductor(nbus):
        await post(nbus, chat_id, "Talk among yourselves.")
        await until(nbus, chat_id, lambda s: done(s) >= 2)
        paused = await bus.append_event(nbus.js, FloorPaused(**_base(chat_id, by="ann")))
        state = await quiet(nbus, chat_id)
        asked = requests(state)
        assert all(state.tree.nodes[r.reply_id].seq < paused.seq for r in asked)
        assert all(not reply.open for reply in state.replies.values())  # the running turn finished
        await append(nbus, FloorResumed(**_base(chat_id, by="ann")))
        state = await until(nbus, chat_id, lambda s: done(s) >= len(asked) + 2)
    assert_a_chain(state, ["p1", "p2"] * (len(requests(state)) // 2) + ["p1"] * (len(requests(state)) % 2))


async def test_stop_ends_the_run_until_the_moderator_names_a_speaker_or_a_human_posts(nbus: Bus) -> None:
    chat_id = await party(nbus, "script", "auto", max_bot_turns=40)
    async with scripted_worker(nbus, "script", lambda r: "more", seconds=0.2), conductor(nbus):
        await post(nbus, chat_id, "Talk.")
        state = await until(nbus, chat_id, lambda s: done(s) >= 2)
        stopped = await bus.append_event(nbus.js, FloorStopped(**_base(chat_id, by="ann")))
        for reply in state.replies.values():  # as the API does: the running turn is cancelled
            await append(nbus, ReplyCancelled(**_base(chat_id, reply_id=reply.reply_id, by="ann")))
        state = await quiet(nbus, chat_id)
        before = len(requests(state))
        assert all(state.tree.nodes[r.reply_id].seq < stopped.seq for r in requests(state))
        await append(nbus, SpeakerNamed(**_base(chat_id, participant_id="p2", by="ann")))
        state = await quiet(nbus, chat_id)
        assert [r.speaker for r in requests(state)[before:]] == ["p2"]
        await post(nbus, chat_id, "Go on.")
        state = await until(nbus, chat_id, lambda s: len(requests(s)) >= before + 3)
    assert [r.speaker for r in requests(state)[before + 1 : before + 3]] == ["p1", "p2"]


async def test_max_bot_turns_stops_an_auto_chat_until_a_human_posts(nbus: Bus) -> None:
    chat_id = await party(nbus, "script", "auto", bots=3, max_bot_turns=5)
    async with scripted_worker(nbus, "script", lambda r: "on and on"), conductor(nbus):
        await post(nbus, chat_id, "Go.")
        await until(nbus, chat_id, lambda s: done(s) >= 5)
        state = await quiet(nbus, chat_id)
        assert_a_chain(state, ["p1", "p2", "p3", "p1", "p2"])
        await post(nbus, chat_id, "Again.")
        await until(nbus, chat_id, lambda s: done(s) >= 10)
        assert len(requests(await quiet(nbus, chat_id))) == 10


async def test_a_delay_holds_the_turn_without_holding_other_chats(nbus: Bus) -> None:
    slow = await party(nbus, "script", "round_robin", delay_s=2.0)
    fast = await party(nbus, "script", "round_robin", rounds=2)
    async with scripted_worker(nbus, "script", lambda r: "ok"), conductor(nbus):
        await post(nbus, slow, "Slowly.")
        await post(nbus, fast, "Quickly.")
        state = await until(nbus, fast, lambda s: done(s) >= 4, timeout=10)
        assert len((await read_chat_state(nbus.js, slow)).replies) == 0  # its first turn waits 2 s
        state = await until(nbus, slow, lambda s: done(s) >= 2, timeout=15)
    first, second = requests(state)
    assert (second.at - first.at).total_seconds() >= 2.0


async def test_a_pause_during_the_delay_holds_the_turn(nbus: Bus) -> None:
    chat_id = await party(nbus, "script", "round_robin", delay_s=1.5)
    async with scripted_worker(nbus, "script", lambda r: "ok"), conductor(nbus):
        await post(nbus, chat_id, "Take your time.")
        await asyncio.sleep(0.5)
        await append(nbus, FloorPaused(**_base(chat_id, by="ann")))
        await asyncio.sleep(2.5)
        assert (await read_chat_state(nbus.js, chat_id)).replies == {}
        await append(nbus, FloorResumed(**_base(chat_id, by="ann")))
        state = await until(nbus, chat_id, lambda s: done(s) >= 2, timeout=15)
    assert_a_chain(state, ["p1", "p2"])


async def test_chats_without_bots_are_only_looked_up_once(nbus: Bus) -> None:
    plain = [new_id("c") for _ in range(10)]
    for chat_id in plain:
        await append(nbus, ChatCreated(**_base(chat_id, owner_id="ann", title="plain")))
        await post(nbus, chat_id, "Hello")
        await post(nbus, chat_id, "Anyone?")
    async with conductor(nbus):
        deadline = asyncio.get_running_loop().time() + 20
        while True:  # until every event was delivered and acknowledged
            with contextlib.suppress(NotFoundError):  # the conductor declares its consumer as it starts
                info = await nbus.js.consumer_info(CHAT.name, "conductor")
                if info.delivered.stream_seq >= 30 and info.num_pending == 0 and info.num_ack_pending == 0:
                    break
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        status = await _status(nbus)
    assert status.quiet_chats == len(plain)
    assert (status.chats, status.reads, status.turns) == (0, 0, 0)
    assert [(await read_chat_state(nbus.js, c)).replies for c in plain] == [{}] * len(plain)


async def _status(nbus: Bus, timeout: float = 60.0) -> ConductorStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await bus.call_raw(
                nbus.nc, f"{CONDUCTOR_SERVICE}.status", b"", ConductorStatus, timeout=1.0
            )
        except bus.ServiceError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_conductor_killed_mid_conversation_and_restarted_skips_and_doubles_nothing(
    nbus: Bus, nats_url: str, tmp_path: Path
) -> None:
    chats = [await party(nbus, "script", "auto", max_bot_turns=16) for _ in range(3)]
    proc = spawn(["conductor"], nats_url, tmp_path / "conductor-1.log")
    try:
        await _status(nbus)
        async with scripted_worker(nbus, "script", lambda r: "and so on", seconds=0.05):
            for chat_id in chats:
                await post(nbus, chat_id, "Begin.")
            await until(nbus, chats[0], lambda s: done(s) >= 4)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc = spawn(["conductor"], nats_url, tmp_path / "conductor-2.log")
            for chat_id in chats:
                await until(nbus, chat_id, lambda s: done(s) >= 16, timeout=90)
            states = await _quiet_all(nbus, chats)
    finally:
        stop_process(proc)
    for state in states:
        assert_a_chain(state, ["p1", "p2"] * 8)


async def test_a_chat_read_while_the_cache_is_dropped_is_not_kept(nbus: Bus) -> None:
    # A read under way when a gap showed (an event went to another conductor) may predate that event:
    # kept, it would be folded onwards without it and could decide a running reply never ended.
    chat_id = await party(nbus, "script", "auto")
    cache = ChatCache(nbus.js)
    reading = asyncio.create_task(cache.read(chat_id))
    await asyncio.sleep(0)  # the read is asked of the server
    cache.forget_all()
    state = await reading
    assert len(state.participants) == 2 and cache.get(chat_id) is None
    assert await cache.read(chat_id) is cache.get(chat_id)  # a read after the drop is kept


async def test_two_conductors_at_once_never_double_a_turn(nbus: Bus, nats_url: str, tmp_path: Path) -> None:
    chats = [await party(nbus, "script", "auto", bots=3, max_bot_turns=12) for _ in range(4)]
    procs = [spawn(["conductor"], nats_url, tmp_path / f"conductor-{i}.log") for i in range(2)]
    try:
        await _status(nbus)
        async with scripted_worker(nbus, "script", lambda r: "yes"), conductor(nbus):  # and a third, here
            for chat_id in chats:
                await post(nbus, chat_id, "Begin.")
            for chat_id in chats:
                await until(nbus, chat_id, lambda s: done(s) >= 12, timeout=90)
            states = await _quiet_all(nbus, chats)
    finally:
        for proc in procs:
            stop_process(proc)
    for state in states:
        assert_a_chain(state, ["p1", "p2", "p3"] * 4)
    info = await nbus.js.consumer_info(CHAT.name, "conductor")
    assert info.num_ack_pending == 0 and info.num_pending == 0
