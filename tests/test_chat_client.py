"""`chatbus chat`, the terminal client: what it makes of a chat's events and of what the user types, and
the real program in a pty (pexpect) against the in-process stack (real NATS, API, projector, demo worker)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pexpect
import pytest

import bus
import schemas
from bus import Bus
from schemas.bot import BotCreated, BotSpec
from schemas.chat import (
    ChatCreated,
    ChatEvent,
    Floor,
    FloorPaused,
    FloorResumed,
    MessagePosted,
    ParticipantJoined,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyStarted,
)
from schemas.ids import new_id
from schemas.sampling import SamplingParams
from schemas.tokens import TokenDelta
from services.cli.chat_client.api import Frame
from services.cli.chat_client.commands import CommandError, FloorAction, Local, Post, parse
from services.cli.chat_client.view import ChatView
from tests.stack import ROOT, Client, chat_events

NOW = schemas.now()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()>=][0-9A-Za-z]?|\r")


# ---------------------------------------------------------------- typed lines


def test_typed_lines_become_posts_moderator_actions_or_local_commands() -> None:
    floor = Floor(policy="round_robin", rounds=2, max_bot_turns=6, delay_s=1.5)
    assert parse("hello there", floor) == Post("hello there")
    assert parse("//pause is a word", floor) == Post("/pause is a word")
    assert parse("   ", floor) is None
    assert parse("/pause", floor) == FloorAction({"action": "pause", "cancel_running": False})
    assert parse("/pause!", floor) == FloorAction({"action": "pause", "cancel_running": True})
    assert parse("/resume", floor) == FloorAction({"action": "resume"})
    assert parse("/stop", floor) == FloorAction({"action": "stop"})
    assert parse("/next Zen Sage", floor) == FloorAction({"action": "next", "participant": "Zen Sage"})
    assert parse("/mute ana", floor) == FloorAction({"action": "mute", "participant": "ana"})
    assert parse("/unmute ana", floor) == FloorAction({"action": "unmute", "participant": "ana"})
    assert parse("/hide", floor) == Local("hide")
    assert parse("/who", floor) == Local("who")
    assert parse("/quit", floor) == Local("quit")


def test_a_floor_change_keeps_the_rest_of_the_floor() -> None:
    floor = Floor(policy="round_robin", rounds=2, max_bot_turns=6, delay_s=1.5)
    policy = parse("/policy mention", floor)
    turns = parse("/turns 3", floor)
    assert policy == FloorAction(
        {"action": "set", "floor": {"policy": "mention", "rounds": 2, "max_bot_turns": 6, "delay_s": 1.5}}
    )
    assert turns == FloorAction(
        {"action": "set", "floor": {"policy": "round_robin", "rounds": 2, "max_bot_turns": 3, "delay_s": 1.5}}
    )


@pytest.mark.parametrize(
    "line, says",
    [
        ("/policy chaos", "manual, round_robin, mention, auto"),
        ("/turns many", "number"),
        ("/turns 0", "not a floor"),
        ("/next", "needs a bot's name"),
        ("/pause now", "no argument"),
        ("/dance", "unknown command /dance"),
    ],
)
def test_a_bad_command_says_what_is_wrong(line: str, says: str) -> None:
    with pytest.raises(CommandError, match=re.escape(says)):
        parse(line, Floor())


# ---------------------------------------------------------------- the view of a chat's events


def _frame(seq: int, event: ChatEvent | TokenDelta) -> Frame:
    return Frame(
        kind="tokens" if isinstance(event, TokenDelta) else "event",
        seq=seq,
        event=msgspec.Raw(schemas.encode(event)),
    )


def _party() -> list[ChatEvent]:
    base: dict[str, Any] = {"chat_id": "c1", "at": NOW}
    sage = BotSpec(name="Zen Sage", model="demo")
    return [
        ChatCreated(event_id="e1", owner_id="ann", title="salon", model="demo", **base),
        ParticipantJoined(event_id="e2", participant_id="p1", bot_id="b1", bot=sage, by="ann", **base),
        ParticipantJoined(
            event_id="e3", participant_id="p2", bot=BotSpec(name="Critic", model="demo"), by="ann", **base
        ),
        MessagePosted(
            event_id="e4", message_id="m1", author_id="ann", author_name="Ann", content="hi all", **base
        ),
        ReplyRequested(
            event_id="e5",
            reply_id="r1",
            message_id="m1",
            model="demo",
            requested_by="conductor",
            speaker="p1",
            **base,
        ),
        ReplyStarted(event_id="e6", reply_id="r1", attempt=1, worker_id="w", model="demo", **base),
    ]


def _completed(text: str) -> ReplyCompleted:
    return ReplyCompleted(
        event_id="e9",
        chat_id="c1",
        at=NOW,
        reply_id="r1",
        attempt=1,
        worker_id="w",
        model="demo",
        text=text,
        prompt_tokens=5,
        completion_tokens=2,
        finish_reason="stop",
        speaker="p1",
    )


def _take_all(view: ChatView, events: list[ChatEvent | TokenDelta]) -> list[str]:
    return [line.plain for seq, event in enumerate(events, 1) for line in view.take(_frame(seq, event))]


def test_turns_are_labelled_with_their_speaker_and_a_reply_streams_until_it_ends() -> None:
    view = ChatView("c1", me="ann")
    printed = _take_all(view, [*_party()])
    assert printed[:3] == [
        "chat 'salon' created by ann",
        "+ Zen Sage joined (demo)",
        "+ Critic joined (demo)",
    ]
    assert printed[3] == "Ann: hi all"
    assert [(live.speaker, live.text, live.started) for live in view.live()] == [("Zen Sage", "", True)]
    deltas = [
        TokenDelta(chat_id="c1", reply_id="r1", attempt=1, index=i, text=t, n_tokens=1)
        for i, t in enumerate(["Calm ", "waters"])
    ]
    assert _take_all(view, deltas) == []
    assert [(live.text, live.tokens) for live in view.live()] == [("Calm waters", 2)]
    assert [line.plain for line in view.take(_frame(20, _completed("Calm waters")))] == [
        "Zen Sage: Calm waters"
    ]
    assert view.live() == []
    assert view.take(_frame(21, _completed("Calm waters"))) == []  # a repeated end is not shown twice
    paused = FloorPaused(event_id="e10", chat_id="c1", at=NOW, by="ann", cancel_running=True)
    assert [line.plain for line in view.take(_frame(22, paused))] == [
        "|| paused by ann, running turn cancelled"
    ]
    assert view.state.floor.paused and "PAUSED" in view.status()


def test_hidden_turns_show_who_spoke_and_how_much_not_what() -> None:
    view = ChatView("c1", me="ann")
    view.hidden = True
    printed = _take_all(view, [*_party(), _completed("secret words")])
    assert "Ann: (2 words)" in printed
    assert printed[-1] == "Zen Sage: (2 tokens)"
    assert not any("secret" in line or "hi all" in line for line in printed)
    who = [line.plain for line in view.who()]
    assert who[1:] == ["  Zen Sage  demo", "  Critic  demo"]


def test_a_retry_of_a_reply_starts_its_stream_over() -> None:
    view = ChatView("c1")
    _take_all(view, _party())
    first = TokenDelta(chat_id="c1", reply_id="r1", attempt=1, index=0, text="lost ", n_tokens=1)
    second = TokenDelta(chat_id="c1", reply_id="r1", attempt=2, index=0, text="kept", n_tokens=1)
    late = TokenDelta(chat_id="c1", reply_id="r1", attempt=1, index=1, text="stale", n_tokens=1)
    _take_all(view, [first, second, late])
    assert [live.text for live in view.live()] == ["kept"]


# ---------------------------------------------------------------- the program in a pty


class Terminal:
    """`chatbus chat ARGS` in a pty, read from a thread (the stack it talks to runs on this test's loop)."""

    def __init__(self, stack: dict[str, str], *args: str, key: str | None = None) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CHATBUS_URL": stack["base"],
            "CHATBUS_API_KEY": stack["ann"] if key is None else key,
            "TERM": "xterm",
            "NO_COLOR": "1",
            "PROMPT_TOOLKIT_NO_CPR": "1",  # the pty does not answer cursor position requests
        }
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "services.cli", "chat", *args],
            env=env,
            cwd=str(ROOT),
            encoding="utf-8",
            dimensions=(40, 160),
            timeout=60,
        )
        self.seen = ""
        self.mark = 0  # where in the text the next expect starts looking: after the last match

    async def expect(self, pattern: str, timeout: float = 60) -> str:
        """Wait until the screen output (escape codes removed) has `pattern` (a regex); what matched."""
        compiled = re.compile(pattern)
        deadline = asyncio.get_running_loop().time() + timeout
        while (match := compiled.search(self.text(), self.mark)) is None:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {pattern!r} in:\n{self.text()[-3000:]}")
            await asyncio.to_thread(self._read)
        self.mark = match.end()
        return match.group(0)

    def _read(self) -> None:
        try:
            self.seen += self.child.read_nonblocking(65536, timeout=0.2)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            if not self.child.isalive():
                raise AssertionError(f"the client ended:\n{self.text()[-3000:]}") from None

    def text(self) -> str:
        return ANSI.sub("", self.seen)

    def type(self, line: str) -> None:
        self.child.sendline(line)

    async def leave(self) -> int:
        """Ctrl-D until the program ends (one typed while a line prints above the prompt, in the terminal's
        cooked mode, ends no prompt); its exit status."""
        for _ in range(20):
            self.child.sendeof()
            try:
                return await self.exit_code(timeout=1)
            except pexpect.TIMEOUT:
                continue
        return await self.exit_code()

    async def exit_code(self, timeout: float = 20) -> int:
        """Wait for the program to end; its exit status."""
        await asyncio.to_thread(self.child.expect, pexpect.EOF, timeout=timeout)
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)


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
    ended = len(await term.expect(r"\ndemo: .+"))
    label = r"demo is (about to speak|speaking \(\d+ tokens\))"
    streamed = re.sub(label, "", term.text()[asked : term.mark - ended])
    answer = await _last_answer(nbus, chat["chat_id"])
    words = {word for word in answer.split() if len(word) >= 4}
    assert any(word in streamed for word in words), "no streamed text showed before the reply ended"

    term.type("/who")
    await term.expect(r"no bots in this chat: it answers with demo")
    term.type("/pause")  # a floor action in a chat without bots: the API's refusal, not a traceback
    await term.expect(r"error: .+\((404|405|409) [a-z_]+\)")
    term.type("/hide")
    await term.expect(r"text hidden")
    term.type("a secret question")
    await term.expect(r"(you|ann): \(3 words\)")
    await term.expect(r"\ndemo: \(\d+ tokens\)")
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
    await term.expect(r"\ndemo: ")
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


async def test_a_party_chat_streams_its_bots_turns_and_the_moderator_pauses_and_resumes_it(
    nbus: Bus, stack: dict[str, str], conductor: None, terminals: list[Terminal]
) -> None:
    bots = [await _add_bot(nbus, "Zen Sage"), await _add_bot(nbus, "Critic")]
    body = {"title": "salon", "bots": bots, "floor": {"policy": "auto", "max_bot_turns": 6}}
    async with Client(stack["base"], stack["ann"]) as ann:
        status, chat = await ann.call("POST", "/v1/chats", json=body)
    assert status == 201, chat
    chat_id = chat["chat_id"]
    terminals.append(term := Terminal(stack, chat_id))
    await term.expect(r"\+ Zen Sage joined \(demo\)")
    await term.expect(r"\+ Critic joined \(demo\)")
    await term.expect(r"floor: auto, at most 6 bot turns in a row")
    term.type("/who")
    await term.expect(r"Zen Sage +demo")
    term.type("/mute Nobody")
    await term.expect(r"error: .*Nobody.*\(404 [a-z_]+\)")

    term.type("hello bots")
    await term.expect(r"(you|ann): hello bots")
    asked = term.mark
    await term.expect(r"Zen Sage is (about to speak|speaking)")
    ended = len(await term.expect(r"\nZen Sage: .+"))
    label = r"Zen Sage is (about to speak|speaking \(\d+ tokens\))"
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
    await term.expect(r"floor: auto, at most 6 bot turns in a row \(paused\)")

    term.type("/resume")
    await term.expect(r"> resumed by ann")
    await term.expect(r"(Zen Sage|Critic) is (about to speak|speaking)")
    await term.expect(r"\n(Zen Sage|Critic): .+")
    log = await _log(nbus, chat_id)
    resumed = next(seq for seq, e in log if isinstance(e, FloorResumed))
    assert [e for seq, e in log if isinstance(e, ReplyRequested) and seq > resumed], "no turn after /resume"
    assert [e.by for _, e in log if isinstance(e, FloorPaused | FloorResumed)] == ["ann", "ann"]
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
