"""`chatbus chat`, the terminal client, as a user runs it: the real program in a pty (pexpect) against the
in-process stack (real NATS, API, projector, a demo-model worker) and, for chats with bots, the conductor."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import bus
import schemas
from bus import Bus
from schemas.bot import BotCreated, BotSpec
from schemas.chat import (
    ChoiceMade,
    FloorPaused,
    FloorResumed,
    FloorStopped,
    ParticipantJoined,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    SpeakerNamed,
)
from schemas.ids import new_id
from schemas.sampling import SamplingParams
from tests.stack import Client, chat_events, extra_worker
from tests.terminal import Terminal


@pytest.fixture
def terminals(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[list[Terminal]]:
    """The test's terminals: killed if still running, their output left in the artifacts (raw: `cat` it)."""
    started: list[Terminal] = []
    yield started
    for number, terminal in enumerate(started):
        if terminal.child.isalive():
            terminal.child.terminate(force=True)
        (artifacts_dir / f"chat-client-{request.node.name}-{number}.txt").write_text(terminal.seen)


async def test_a_chat_streams_its_reply_in_the_terminal_and_commands_answer(
    nbus: Bus, stack: dict[str, str], terminals: list[Terminal]
) -> None:
    async with Client(stack["base"], stack["ann"]) as ann:
        _, chat = await ann.call("POST", "/v1/chats", json={"title": "terminal", "model": "demo"})
        await ann.call("POST", f"/v1/chats/{chat['chat_id']}/messages", json={"content": "before you came"})
    terminals.append(term := Terminal(stack, chat["chat_id"]))
    await term.expect(r"(you|ann): before you came")
    await term.expect(r"demo: ")  # the history's reply, by its model
    term.type("tell me a story")
    await term.expect(r"(you|ann): tell me a story")
    asked = term.mark
    await term.expect(r"demo is (about to speak|speaking)")
    ended = len(await term.expect(r"demo: .+"))
    label = r"demo is (about to speak|speaking( \(\d+ tokens\))?)"
    streamed = re.sub(label, "", term.text()[asked : term.mark - ended])
    answer = await _last_answer(nbus, chat["chat_id"])
    words = {word for word in answer.split() if len(word) >= 4}
    assert any(word in streamed for word in words), "no streamed text showed before the reply ended"

    term.type("/help")
    await term.expect(r"/policy manual\|round_robin\|mention\|auto  how the next speaker is chosen")
    term.type("/who")
    await term.expect(r"no bots in this chat: it answers with demo")
    term.type("/pause")  # a floor action in a chat without bots: the API's 409, not a traceback
    await term.expect(r"error: .+\(409 [a-z_]+\)")
    term.type("/hide")
    await term.expect(r"text hidden")
    term.type("a secret question")
    await term.expect(r"(you|ann): \(3 words\)")
    await term.expect(r"demo: \(\d+ tokens\)")
    term.type("/dance")
    await term.expect(r"unknown command /dance; /help lists them")
    term.child.sendintr()  # Ctrl-C leaves cleanly
    assert await term.exit_code() == 0
    assert "Traceback" not in term.text()


async def _last_answer(nbus: Bus, chat_id: str) -> str:
    """The text of the chat's last completed reply, from the log."""
    return [e for e in await chat_events(nbus, chat_id) if isinstance(e, ReplyCompleted)][-1].text


async def test_a_new_chat_then_the_list_opens_it_by_number(
    stack: dict[str, str], terminals: list[Terminal]
) -> None:
    async with Client(stack["base"], stack["ann"]) as ann:
        await ann.call("POST", "/v1/chats", json={"title": "older one", "model": "demo"})
    terminals.append(term := Terminal(stack, "--new", "--title", "fresh start", "--model", "demo"))
    chat_id = (await term.expect(r"created chat [A-Za-z0-9_-]+")).split()[-1]
    term.type("hello new chat")
    await term.expect(r"(you|ann): hello new chat")
    await term.expect(r"demo: ")
    term.type("/quit")
    assert await term.exit_code() == 0

    terminals.append(picker := Terminal(stack))
    listed = await picker.expect(r"(?s)1 +fresh start +demo +" + chat_id + r".*2 +older one")
    assert "older one" in listed
    picker.type("9")
    await picker.expect(r"pick 1 to 2, or give a chat id")
    picker.type("1")
    await picker.expect(f"chat {chat_id}: /help")
    await picker.expect(r"(you|ann): hello new chat")
    assert await picker.leave() == 0


async def test_what_the_api_refuses_is_its_message_not_a_traceback(
    stack: dict[str, str], terminals: list[Terminal]
) -> None:
    terminals.append(wrong_key := Terminal(stack, "c_nosuchchat", key="cb_not_a_key"))
    await wrong_key.expect(r"error: .+\(401 [a-z_]+\)")
    assert await wrong_key.exit_code() == 1
    async with Client(stack["base"], stack["ann"]) as ann:
        _, chat = await ann.call("POST", "/v1/chats", json={"title": "ann's", "model": "demo"})
    terminals.append(stranger := Terminal(stack, chat["chat_id"], key=stack["bob"]))
    await stranger.expect(r"error: .+\(404 not_found\)")  # another user's chat does not exist for bob
    assert await stranger.exit_code() == 1
    for term in (wrong_key, stranger):
        assert "Traceback" not in term.text()


# ---------------------------------------------------------------- a chat with bots, with the conductor


async def _add_bot(nbus: Bus, name: str) -> str:
    """A bot of ann's in the store, as the bot routes append it."""
    bot_id = new_id("b")
    spec = BotSpec(
        name=name, model="demo", system_prompt=f"You are {name}.", params=SamplingParams(max_new_tokens=80)
    )
    event = BotCreated(event_id=new_id("e"), bot_id=bot_id, at=schemas.now(), owner_id="ann", spec=spec)
    await bus.append_event(nbus.js, event, expected_subject_seq=0)
    return bot_id


async def _log(nbus: Bus, chat_id: str) -> list[tuple[int, schemas.Event]]:
    """The chat's events with their CHAT sequences."""
    return [
        (m.seq, schemas.decode_event(m.data))
        for m in await bus.read_all(nbus.js, "CHAT", [f"chat.{chat_id}.>"])
    ]


@pytest.fixture
async def conductor(nbus: Bus) -> AsyncIterator[None]:
    from services.conductor import run_conductor

    stop = asyncio.Event()
    task = asyncio.create_task(run_conductor(nbus, stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_a_party_chat_streams_its_bots_turns_and_the_moderator_pauses_resumes_stops_and_names_the_next(
    nbus: Bus, stack: dict[str, str], conductor: None, terminals: list[Terminal]
) -> None:
    bots = [await _add_bot(nbus, "Zen Sage"), await _add_bot(nbus, "Critic")]
    body = {"title": "salon", "bots": bots, "floor": {"policy": "auto", "max_bot_turns": 30}}
    async with Client(stack["base"], stack["ann"]) as ann:
        status, chat = await ann.call("POST", "/v1/chats", json=body)
    assert status == 201, chat
    chat_id = chat["chat_id"]
    terminals.append(term := Terminal(stack, chat_id))
    await term.expect(r"\+ Zen Sage joined \(demo\)")
    await term.expect(r"\+ Critic joined \(demo\)")
    await term.expect(r"floor: auto, at most 30 bot turns in a row")
    term.type("/who")
    await term.expect(r"Zen Sage +demo")
    term.type("/mute Nobody")
    await term.expect(r"error: .*Nobody.*\(404 [a-z_]+\)")

    term.type("hello bots")
    await term.expect(r"(you|ann): hello bots")
    asked = term.mark
    await term.expect(r"Zen Sage is (about to speak|speaking)")
    ended = len(await term.expect(r"Zen Sage: .+"))
    label = r"Zen Sage is (about to speak|speaking( \(\d+ tokens\))?)"
    streamed = re.sub(label, "", term.text()[asked : term.mark - ended])
    answers = [e for _, e in await _log(nbus, chat_id) if isinstance(e, ReplyCompleted)]
    words = {word for word in answers[0].text.split() if len(word) >= 4}
    assert any(word in streamed for word in words), "no streamed text showed before the turn ended"

    term.type("/pause")
    await term.expect(r"\|\| paused by ann")
    paused = next(seq for seq, e in await _log(nbus, chat_id) if isinstance(e, FloorPaused))
    log = await _quiet(nbus, chat_id)
    assert not [e for seq, e in log if isinstance(e, ReplyRequested) and seq > paused], (
        "a turn began after /pause"
    )
    term.type("/who")
    await term.expect(r"floor: auto, at most 30 bot turns in a row \(paused\)")

    term.type("/resume")
    await term.expect(r"> resumed by ann")
    await term.expect(r"(Zen Sage|Critic) is (about to speak|speaking)")
    await term.expect(r"(Zen Sage|Critic): .+")
    log = await _log(nbus, chat_id)
    resumed = next(seq for seq, e in log if isinstance(e, FloorResumed))
    assert [e for seq, e in log if isinstance(e, ReplyRequested) and seq > resumed], "no turn after /resume"
    assert [e.by for _, e in log if isinstance(e, FloorPaused | FloorResumed)] == ["ann", "ann"]

    term.type("/stop")
    await term.expect(r"\[\] stopped by ann")
    log = await _quiet(nbus, chat_id)
    stopped = next(seq for seq, e in log if isinstance(e, FloorStopped))
    began = [e for seq, e in log if isinstance(e, ReplyRequested) and seq > stopped]
    assert not began, "a turn began after /stop"
    term.type("/next critic")  # a stopped chat goes on when the moderator names a speaker
    await term.expect(r"-> Critic speaks next \(named by ann\)")
    await term.expect(r"Critic: .+")
    log = await _log(nbus, chat_id)
    named = next(seq for seq, e in log if isinstance(e, SpeakerNamed))
    after = [e for seq, e in log if isinstance(e, ReplyRequested) and seq > named]
    joined = {e.bot.name: e.participant_id for _, e in log if isinstance(e, ParticipantJoined)}
    critic = joined["Critic"]
    assert after and after[0].speaker == critic
    term.type("/quit")
    assert await term.exit_code() == 0
    assert "Traceback" not in term.text()


async def _quiet(
    nbus: Bus, chat_id: str, seconds: float = 2.0, timeout: float = 60
) -> list[tuple[int, schemas.Event]]:
    """The chat's log once no reply is open and nothing was appended for `seconds`."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = -1
    while asyncio.get_running_loop().time() < deadline:
        log = await _log(nbus, chat_id)
        ended = {e.reply_id for _, e in log if isinstance(e, ReplyCompleted | ReplyFailed)}
        open_ = [e for _, e in log if isinstance(e, ReplyRequested) and e.reply_id not in ended]
        if not open_ and log[-1][0] == last:
            return log
        last = log[-1][0]
        await asyncio.sleep(seconds)
    raise TimeoutError("the chat never went quiet")


async def test_a_new_party_chat_takes_its_bots_by_name(
    nbus: Bus, stack: dict[str, str], conductor: None, terminals: list[Terminal]
) -> None:
    await _add_bot(nbus, "Zen Sage")
    await _add_bot(nbus, "Critic")
    terminals.append(unknown := Terminal(stack, "--new", "--bots", "zen sage,Nobody"))
    await unknown.expect(r"error: no bot 'Nobody' that you may use")
    assert await unknown.exit_code() == 1
    args = (
        "--new",
        "--title",
        "duo",
        "--bots",
        "zen sage, CRITIC",
        "--policy",
        "round_robin",
        "--turns",
        "2",
    )
    terminals.append(term := Terminal(stack, *args))
    chat_id = (await term.expect(r"created chat [A-Za-z0-9_-]+")).split()[-1]
    await term.expect(r"floor: round_robin, at most 2 bot turns in a row")
    term.type("one round please")
    await term.expect(r"Zen Sage: .+")
    await term.expect(r"Critic: .+")  # round robin: each bot once, in the order they joined
    assert await term.leave() == 0
    log = [e for _, e in await _log(nbus, chat_id)]
    joined = [e.bot.name for e in log if isinstance(e, ParticipantJoined)]
    assert joined == ["Zen Sage", "Critic"]


@pytest.fixture
async def demo2(nbus: Bus, stack: dict[str, str], demo_model_dir: Path) -> AsyncIterator[None]:
    """A second demo-model worker, serving alias `demo2` (side-by-side chats compare two aliases)."""
    async with extra_worker(nbus, demo_model_dir, "demo2", capacity=2):
        yield


async def test_side_by_side_answers_stream_together_and_one_is_chosen(
    nbus: Bus, stack: dict[str, str], demo2: None, terminals: list[Terminal]
) -> None:
    terminals.append(term := Terminal(stack, "--new", "--title", "which", "--compare", "demo,demo2"))
    chat_id = (await term.expect(r"created chat [A-Za-z0-9_-]+")).split()[-1]
    term.type("/choose demo")
    await term.expect(r"no message has been answered side by side yet")
    term.type("hello both")
    await term.expect(r"(you|ann): hello both")
    asked = term.mark
    first = await term.expect(r"demo2?: .+")
    live = term.text()[asked : term.mark - len(first)]
    assert re.search(r"demo is (about to speak|speaking)", live), live
    assert re.search(r"demo2 is (about to speak|speaking)", live), live
    await term.expect(r"demo: .+" if first.startswith("demo2") else r"demo2: .+")
    term.type("/choose 3")
    await term.expect(r"no answer by '3' to the last message: choose one of demo, demo2")
    term.type("/choose demo2")
    await term.expect(r"chose demo2's answer")
    log = [e for _, e in await _log(nbus, chat_id)]
    by_demo2 = next(e.reply_id for e in log if isinstance(e, ReplyRequested) and e.model == "demo2")
    choice = next(e for e in log if isinstance(e, ChoiceMade))
    assert choice.reply_id == by_demo2 and len(choice.rejected) == 1
    term.type("/pause")
    await term.expect(r"error: .+\(409 [a-z_]+\)")
    assert await term.leave() == 0
