"""`chatbus chat`, the terminal client, without a terminal: what it makes of a chat's events (real events,
folded as the services fold them) and of what the user types, and its live feed against the real API."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec
import pytest
from aiohttp import WSCloseCode
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from typer.testing import CliRunner

import schemas
from schemas.bot import BotSpec
from schemas.chat import (
    ChatCreated,
    ChatEvent,
    Floor,
    FloorPaused,
    MessagePosted,
    ParticipantJoined,
    ReplyCompleted,
    ReplyRequested,
    ReplyStarted,
)
from schemas.tokens import TokenDelta
from services.api.keys import SOCKETS
from services.cli.app import app
from services.cli.chat_client.api import ChatApi, Frame
from services.cli.chat_client.command import PolicyChoice
from services.cli.chat_client.commands import POLICIES, Choose, CommandError, FloorAction, Local, Post, parse
from services.cli.chat_client.completion import ChatCompleter
from services.cli.chat_client.view import ChatView
from tests.apihelp import Api

NOW = schemas.now()
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


def test_tab_completes_commands_policies_and_the_chats_bots() -> None:
    completer = ChatCompleter(lambda: ["Zen Sage", "Critic"])

    def complete(text: str) -> list[str]:
        asked = CompleteEvent(completion_requested=True)
        return [c.text for c in completer.get_completions(Document(text), asked)]

    assert complete("/mu") == ["/mute"]
    assert complete("/pa") == ["/pause", "/pause!"]
    assert complete("/next z") == ["Zen Sage"]
    assert complete("/unmute ") == ["Zen Sage", "Critic"]
    assert complete("/policy ro") == ["round_robin"]
    assert complete("hello /mu") == complete("//mu") == complete("/turns 1") == []


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


def test_text_from_the_chat_cannot_drive_the_terminal() -> None:
    view = ChatView("c1")
    _take_all(view, _party())
    printed = [
        line.plain for line in view.take(_frame(30, _completed("calm\x1b]0;owned\x07\x1b[2J waters\r\nend")))
    ]
    assert printed == ["Zen Sage: calm^[]0;owned^G^[[2J waters^M\nend"]


async def test_the_feed_resumes_after_a_cut_with_nothing_twice_and_nothing_missed(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    base = str(api.client.make_url("")).rstrip("/")
    async with ChatApi(base, api.keys["ann"]) as client:
        feed = client.feed(chat_id)
        seqs = [(await asyncio.wait_for(anext(feed), 10)).seq]  # chat.created
        [cut] = list(api.app[SOCKETS])
        await cut.close(code=WSCloseCode.GOING_AWAY, message=b"restarting")  # as an API shutting down
        renamed = []
        for title in ("one", "two", "three"):
            status, answer = await api.call("PATCH", f"/v1/chats/{chat_id}", json={"title": title})
            assert status == 200, answer
            renamed.append(answer["seq"])
        while len(seqs) < 4:
            frame = await asyncio.wait_for(anext(feed), 10)
            assert frame.kind == "event"
            seqs.append(frame.seq)
        assert seqs[1:] == renamed
        assert [socket for socket in api.app[SOCKETS] if socket is not cut], "the client never came back"
        await feed.aclose()


def test_the_policy_choices_are_the_floors_policies() -> None:
    assert {choice.value for choice in PolicyChoice} == set(POLICIES)


@pytest.mark.parametrize(
    "args, says",
    [
        ([], "No API key: give --key or set CHATBUS_API_KEY"),
        (["c1", "--new", "--key", "k"], "Give a chat id or --new, not both"),
        (["--bots", "Sage", "--key", "k"], "go with --new"),
        (["--new", "--policy", "auto", "--key", "k"], "set the floor of a chat with --bots"),
        (["--new", "--bots", "Sage", "--policy", "loud", "--key", "k"], "--policy"),
    ],
)
def test_the_command_refuses_what_cannot_work_before_calling_the_api(args: list[str], says: str) -> None:
    env = {"CHATBUS_API_KEY": "", "CHATBUS_URL": "http://127.0.0.1:1", "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["chat", *args], env=env)
    assert result.exit_code == 2, result.output
    assert says in result.output


def test_choose_takes_the_last_messages_answer_by_model_or_number() -> None:
    base: dict[str, Any] = {"chat_id": "c2", "at": NOW}

    def asked(n: int, message_id: str, model: str) -> ReplyRequested:
        return ReplyRequested(
            event_id=f"e{n}", reply_id=f"r{n}", message_id=message_id, model=model, requested_by="ann", **base
        )

    events: list[ChatEvent] = [
        ChatCreated(event_id="e1", owner_id="ann", title="which", model="a", compare=["a", "b"], **base),
        MessagePosted(event_id="e2", message_id="m1", author_id="ann", content="one", **base),
        asked(3, "m1", "a"),
        asked(4, "m1", "b"),
        MessagePosted(event_id="e5", message_id="m2", author_id="ann", content="two", **base),
        asked(6, "m2", "a"),
        asked(7, "m2", "b"),
    ]
    view = ChatView("c2")
    for seq, event in enumerate(events, 1):
        view.take(_frame(seq, event))
    assert view.side_by_side_answer("b") == "r7"
    assert view.side_by_side_answer("1") == "r6"
    with pytest.raises(CommandError, match="no answer by 'c'"):
        view.side_by_side_answer("c")
    assert parse("/choose b", Floor()) == Choose("b")
    one_model = ChatView("c1")
    _take_all(one_model, _party())
    with pytest.raises(CommandError, match="side-by-side chats"):
        one_model.side_by_side_answer("demo")
