"""Chats with bots and side-by-side chats through the API, against a real nats-server and the in-process
projector: creating them, posting in them, the moderator's floor actions, choosing a side-by-side reply
(with real demo-model workers streaming every model's answer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

import bus
import schemas
from bus import Bus
from schemas.bot import BotCreated, BotSpec, Visibility
from schemas.chat import (
    ChatCreated,
    ChoiceMade,
    FloorPaused,
    FloorResumed,
    FloorSet,
    FloorStopped,
    MessagePosted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMuted,
    ReplyCancelled,
    ReplyRequested,
    SpeakerNamed,
)
from schemas.ids import new_id
from tests.apihelp import Api, chat_events, is_error, serve_model, stream_until_ended
from tests.stack import Client, wait_event


async def add_bot(nbus: Bus, owner: str, name: str, visibility: Visibility = "private") -> str:
    """A bot in the store, as the bot routes append it."""
    bot_id = new_id("b")
    spec = BotSpec(name=name, model="demo", system_prompt=f"You are {name}.", history=4)
    event = BotCreated(
        event_id=new_id("e"),
        bot_id=bot_id,
        at=schemas.now(),
        owner_id=owner,
        spec=spec,
        visibility=visibility,
    )
    await bus.append_event(nbus.js, event, expected_subject_seq=0)
    return bot_id


async def party_chat(api: Api, **floor: Any) -> tuple[str, dict[str, str]]:
    """Ann's chat with her bot and bob's public one: its id and participant id by name."""
    sage = await add_bot(api.nbus, "ann", "Zen Sage")
    jester = await add_bot(api.nbus, "bob", "Jester", "public")
    body = {"title": "party", "bots": [sage, jester], "floor": {"policy": "round_robin", **floor}}
    status, created = await api.call("POST", "/v1/chats", json=body)
    assert status == 201, created
    return created["chat_id"], {p["name"]: p["participant_id"] for p in created["participants"]}


async def conductor_turn(api: Api, chat_id: str, speaker: str, after: str) -> ReplyRequested:
    """A bot's turn as the conductor appends it."""
    request = ReplyRequested(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=schemas.now(),
        reply_id=new_id("r"),
        message_id=after,
        model="demo",
        context=[after],
        requested_by="conductor",
        speaker=speaker,
    )
    await bus.append_event(api.nbus.js, request)
    return request


async def test_a_chat_with_bots_is_created_and_a_post_asks_no_reply(api: Api) -> None:
    chat_id, ids = await party_chat(api, max_bot_turns=6)
    events = await chat_events(api.nbus, chat_id)
    assert [type(e) for e in events] == [ChatCreated, ParticipantJoined, ParticipantJoined, FloorSet]
    joined = [e for e in events if isinstance(e, ParticipantJoined)]
    assert [(j.bot.name, j.bot.system_prompt) for j in joined] == [
        ("Zen Sage", "You are Zen Sage."),
        ("Jester", "You are Jester."),
    ]
    assert isinstance(events[-1], FloorSet) and events[-1].floor.max_bot_turns == 6

    await serve_model(api.nbus)  # a post in a chat with bots needs no model: none is asked
    status, posted = await api.call("POST", f"/v1/chats/{chat_id}/messages", json={"content": "hello bots"})
    assert status == 202, posted
    assert posted["reply_id"] is None and posted["reply_ids"] == [] and posted["model"] == ""
    events = await chat_events(api.nbus, chat_id)
    assert isinstance(events[-1], MessagePosted) and events[-1].author_name == "ann"
    assert not any(isinstance(e, ReplyRequested) for e in events)
    status, body = await api.call(
        "POST", f"/v1/chats/{chat_id}/messages", json={"content": "x", "model": "demo"}
    )
    assert status == 400 and "model" in body["message"]

    turn = await conductor_turn(api, chat_id, ids["Jester"], posted["message_id"])
    status, chat = await api.call("GET", f"/v1/chats/{chat_id}?min_seq={posted['seq'] + 1}")
    assert status == 200
    assert [(p["name"], p["model"], p["muted"], p["left"]) for p in chat["participants"]] == [
        ("Zen Sage", "demo", False, False),
        ("Jester", "demo", False, False),
    ]
    assert chat["floor"] == {
        "policy": "round_robin",
        "rounds": 1,
        "max_bot_turns": 6,
        "delay_s": 0.0,
        "paused": False,
        "stopped": False,
    }
    assert chat["compare"] == []
    status, page = await api.call("GET", f"/v1/chats/{chat_id}/messages")
    assert [(m["speaker"], m["speaker_name"]) for m in page["messages"]] == [("", "ann")]
    assert [(r["reply_id"], r["speaker"], r["speaker_name"], r["message_id"]) for r in page["replies"]] == [
        (turn.reply_id, ids["Jester"], "Jester", posted["message_id"])
    ]
    assert [n["node_id"] for n in page["active_path"]] == [posted["message_id"], turn.reply_id]

    # Regenerating a bot's turn asks the same bot again: a sibling under the same node, its model, sampling.
    status, again = await api.call("POST", f"/v1/chats/{chat_id}/replies/{turn.reply_id}/regenerate", json={})
    assert status == 202, again
    retry = (await chat_events(api.nbus, chat_id))[-1]
    assert isinstance(retry, ReplyRequested) and retry.reply_id == again["reply_id"]
    assert (retry.speaker, retry.model, retry.message_id) == (ids["Jester"], "demo", posted["message_id"])
    assert retry.params == turn.params and retry.context == [posted["message_id"]]

    # A plain chat shows no floor and no participants.
    plain = (await api.new_chat())["chat_id"]
    status, chat = await api.call("GET", f"/v1/chats/{plain}")
    assert chat["floor"] is None and chat["participants"] == [] and chat["compare"] == []


async def test_bad_party_bodies_are_refused_with_what_is_wrong(api: Api) -> None:
    mine = await add_bot(api.nbus, "ann", "Zen Sage")
    twin = await add_bot(api.nbus, "ann", "zen  sage")
    bobs = await add_bot(api.nbus, "bob", "Secret")
    shared = await add_bot(api.nbus, "bob", "Shared")
    await serve_model(api.nbus)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"bots": [mine, twin]}, 400, "same name"),
        ({"bots": [mine, mine]}, 400, "twice"),
        ({"bots": [bobs]}, 404, bobs),  # another user's private bot does not exist for ann
        ({"bots": ["nosuchbot"]}, 404, "nosuchbot"),
        ({"floor": {"policy": "auto"}}, 400, "floor needs bots"),
        ({"bots": [mine], "compare": ["demo", "demo"]}, 400, "not both"),
        ({"compare": ["demo"]}, 400, "2 to 4"),
        ({"compare": ["demo", "demo"]}, 400, "twice"),
        ({"compare": ["demo", "elsewhere"]}, 400, "elsewhere"),
        ({"bots": [mine], "floor": {"policy": "loud"}}, 422, "policy"),
        ({"bots": [mine], "floor": {"rounds": 0}}, 422, "rounds"),
        ({"bots": [mine], "floor": {"turns": 3}}, 422, "turns"),
    ]
    for body, want, says in cases:
        status, answer = await api.call("POST", "/v1/chats", json=body)
        assert status == want and is_error(answer) and says in answer["message"], (body, answer)
    # Nothing was created by a refused body.
    status, page = await api.call("GET", "/v1/chats")
    assert page["items"] == []
    # Joining: a usable bot joins, a taken name is a conflict, bob's private bot is a 404.
    chat_id = (await api.new_chat())["chat_id"]
    status, joined = await api.call("POST", f"/v1/chats/{chat_id}/participants", json={"bot_id": mine})
    assert status == 201 and joined["participant"]["name"] == "Zen Sage" and not joined["participant"]["left"]
    events = await chat_events(api.nbus, chat_id)
    assert [type(e) for e in events[-2:]] == [ParticipantJoined, FloorSet]  # the first bot brings a floor
    status, answer = await api.call("POST", f"/v1/chats/{chat_id}/participants", json={"bot_id": twin})
    assert status == 409 and "zen  sage" in answer["message"], answer
    status, answer = await api.call("POST", f"/v1/chats/{chat_id}/participants", json={"bot_id": bobs})
    assert status == 404 and is_error(answer)
    status, answer = await api.call("POST", f"/v1/chats/{chat_id}/participants", json={"bot_id": "a b"})
    assert status == 422 and is_error(answer)
    # Bob may use his own bot in his chat, not ann's chat: her chat is a 404 to him whatever the bot.
    status, answer = await api.call(
        "POST", f"/v1/chats/{chat_id}/participants", "bob", json={"bot_id": shared}
    )
    assert status == 404
    # A compare chat takes no bots.
    status, compared = await api.call("POST", "/v1/chats", json={"compare": ["demo", "demo2"]})
    assert status == 400  # demo2 is served by nobody yet
    await serve_model(api.nbus, "demo2")
    status, compared = await api.call("POST", "/v1/chats", json={"compare": ["demo", "demo2"]})
    assert status == 201 and compared["compare"] == ["demo", "demo2"] and compared["model"] == "demo"
    path = f"/v1/chats/{compared['chat_id']}/participants"
    status, answer = await api.call("POST", path, json={"bot_id": mine})
    assert status == 409 and "side-by-side" in answer["message"]


async def floor(api: Api, chat_id: str, **body: Any) -> tuple[int, Any]:
    return await api.call("POST", f"/v1/chats/{chat_id}/floor", json=body)


async def test_the_moderators_actions_append_their_events_and_cancels(api: Api) -> None:
    chat_id, ids = await party_chat(api)
    sage, jester = ids["Zen Sage"], ids["Jester"]
    status, posted = await api.call("POST", f"/v1/chats/{chat_id}/messages", json={"content": "go"})
    assert status == 202
    running = await conductor_turn(api, chat_id, sage, posted["message_id"])

    async with api.client.ws_connect(f"/v1/chats/{chat_id}/ws", headers=api.auth("ann")) as ws:
        status, paused = await floor(api, chat_id, action="pause")
        assert status == 202 and paused["accepted"] == ["chat.floor.paused"] and paused["cancelled"] == []
        frames = []
        while not any(f["event"]["type"] == "chat.floor.paused" for f in frames):
            frames.append(msgspec.json.decode((await ws.receive(timeout=10)).data))
        assert "chat.participant.joined" in {f["event"]["type"] for f in frames}  # live frames carry them

    assert (await floor(api, chat_id, action="pause"))[0] == 409  # paused already
    status, again = await floor(api, chat_id, action="pause", cancel_running=True)
    assert status == 202 and again["accepted"] == ["chat.floor.paused", "chat.reply.cancelled"]
    assert again["cancelled"] == [running.reply_id]
    events = await chat_events(api.nbus, chat_id)
    assert isinstance(events[-2], FloorPaused) and events[-2].cancel_running
    assert isinstance(events[-1], ReplyCancelled) and events[-1].reply_id == running.reply_id
    status, resumed = await floor(api, chat_id, action="resume")
    assert status == 202 and isinstance((await chat_events(api.nbus, chat_id))[-1], FloorResumed)
    assert (await floor(api, chat_id, action="resume"))[0] == 409  # not paused

    second = await conductor_turn(api, chat_id, jester, running.reply_id)
    status, stopped = await floor(api, chat_id, action="stop")
    assert status == 202 and stopped["cancelled"] == [second.reply_id]
    assert [type(e) for e in (await chat_events(api.nbus, chat_id))[-2:]] == [FloorStopped, ReplyCancelled]
    status, chat = await api.call("GET", f"/v1/chats/{chat_id}?min_seq={stopped['seq']}")
    assert chat["floor"]["stopped"] and not chat["floor"]["paused"]

    status, named = await floor(api, chat_id, action="next", participant="zen sage")  # a name, any case
    assert status == 202
    last = (await chat_events(api.nbus, chat_id))[-1]
    assert isinstance(last, SpeakerNamed) and last.participant_id == sage
    status, chat = await api.call("GET", f"/v1/chats/{chat_id}?min_seq={named['seq']}")
    assert not chat["floor"]["stopped"]  # a named speaker ends the stop

    status, muted = await floor(api, chat_id, action="mute", participant=jester)  # or an id
    assert status == 202
    last = (await chat_events(api.nbus, chat_id))[-1]
    assert isinstance(last, ParticipantMuted) and last.participant_id == jester and last.muted
    status, answer = await floor(api, chat_id, action="next", participant="Jester")
    assert status == 409 and "muted" in answer["message"]
    assert (await floor(api, chat_id, action="unmute", participant="Jester"))[0] == 202
    last = (await chat_events(api.nbus, chat_id))[-1]
    assert isinstance(last, ParticipantMuted) and not last.muted

    status, set_ = await floor(api, chat_id, action="set", floor={"policy": "mention", "max_bot_turns": 3})
    assert status == 202
    last = (await chat_events(api.nbus, chat_id))[-1]
    assert isinstance(last, FloorSet) and last.floor.policy == "mention" and last.floor.max_bot_turns == 3

    bad: list[tuple[dict[str, Any], int, str]] = [
        ({"action": "dance"}, 400, "pause"),
        ({"action": "set"}, 400, "floor"),
        ({"action": "next"}, 400, "participant"),
        ({"action": "next", "participant": "Nobody"}, 404, "Nobody"),
        ({"action": "mute", "participant": "p-unknown"}, 404, "p-unknown"),
        ({"action": "set", "floor": {"policy": "chaos"}}, 422, "policy"),
        ({"action": "pause", "owner": "bob"}, 422, "owner"),
    ]
    for body, want, says in bad:
        status, answer = await floor(api, chat_id, **body)
        assert status == want and is_error(answer) and says in answer["message"], (body, answer)

    # Leaving: the participant's running turn is cancelled; leaving twice is a conflict; unknown is a 404.
    third = await conductor_turn(api, chat_id, jester, running.reply_id)
    status, left = await api.call("DELETE", f"/v1/chats/{chat_id}/participants/{jester}")
    assert status == 200 and left["accepted"] == ["chat.participant.left", "chat.reply.cancelled"]
    assert left["cancelled"] == [third.reply_id]
    assert isinstance((await chat_events(api.nbus, chat_id))[-2], ParticipantLeft)
    assert (await api.call("DELETE", f"/v1/chats/{chat_id}/participants/{jester}"))[0] == 409
    assert (await api.call("DELETE", f"/v1/chats/{chat_id}/participants/pnothere"))[0] == 404
    status, answer = await floor(api, chat_id, action="next", participant="Jester")
    assert status == 409 and "left" in answer["message"]
    status, chat = await api.call("GET", f"/v1/chats/{chat_id}?min_seq={left['seq']}")
    assert [(p["name"], p["muted"], p["left"]) for p in chat["participants"]] == [
        ("Zen Sage", False, False),
        ("Jester", False, True),
    ]
    assert chat["floor"]["policy"] == "mention"
    # The name is free again: a new Jester joins, and the name now means it.
    other = await add_bot(api.nbus, "ann", "jester")
    status, joined = await api.call("POST", f"/v1/chats/{chat_id}/participants", json={"bot_id": other})
    assert status == 201, joined
    assert (await floor(api, chat_id, action="next", participant="Jester"))[0] == 202
    last = (await chat_events(api.nbus, chat_id))[-1]
    assert isinstance(last, SpeakerNamed) and last.participant_id == joined["participant"]["participant_id"]

    # Bob moderates nothing of ann's: a 404, and nothing appended.
    before = len(await chat_events(api.nbus, chat_id))
    status, answer = await api.call("POST", f"/v1/chats/{chat_id}/floor", "bob", json={"action": "pause"})
    assert status == 404 and is_error(answer)
    assert len(await chat_events(api.nbus, chat_id)) == before


async def test_a_floor_action_in_a_chat_without_bots_is_a_conflict(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    for body in ({"action": "pause"}, {"action": "next", "participant": "Zen Sage"}, {"action": "stop"}):
        status, answer = await floor(api, chat_id, **body)
        assert status == 409 and "no bots" in answer["message"], (body, answer)
    status, answer = await floor(api, chat_id, action="dance")
    assert status == 400  # a bad action is a bad action anywhere
    assert len(await chat_events(api.nbus, chat_id)) == 1


async def test_side_by_side_answers_stream_and_the_choice_selects_a_branch(
    stack: dict[str, str], nbus: Bus, demo_model_dir: Path
) -> None:
    from tests.stack import extra_worker

    async with extra_worker(nbus, demo_model_dir, "demo2"), Client(stack["base"], stack["ann"]) as ann:
        await _compare_flow(ann, nbus)


async def _compare_flow(ann: Client, nbus: Bus) -> None:
    status, created = await ann.call(
        "POST", "/v1/chats", json={"title": "which", "compare": ["demo", "demo2"]}
    )
    assert status == 201, created
    chat_id = created["chat_id"]
    params = {"max_new_tokens": 12, "ignore_eos": True, "temperature": 0.0}
    async with ann.ws(chat_id) as ws:
        status, posted = await ann.call(
            "POST", f"/v1/chats/{chat_id}/messages", json={"content": "hello", "params": params}
        )
        assert status == 202 and posted["reply_id"] is None and len(posted["reply_ids"]) == 2, posted
        first, second = posted["reply_ids"]
        # both models' answers streamed, side by side
        assert await stream_until_ended(ws, {first, second}) == {first, second}
    events = await chat_events(nbus, chat_id)
    requests = [e for e in events if isinstance(e, ReplyRequested)]
    assert [(r.reply_id, r.model, r.message_id) for r in requests] == [
        (first, "demo", posted["message_id"]),
        (second, "demo2", posted["message_id"]),
    ]
    assert requests[0].context == requests[1].context == [posted["message_id"]]

    status, chosen = await ann.call("POST", f"/v1/chats/{chat_id}/replies/{first}/choose")
    assert status == 200, chosen
    choice = await wait_event(nbus, f"chat.{chat_id}.choice.made")
    assert isinstance(choice, ChoiceMade)
    assert (choice.message_id, choice.reply_id, choice.rejected) == (posted["message_id"], first, [second])
    status, page = await ann.call("GET", f"/v1/chats/{chat_id}/messages?min_seq={chosen['seq']}")
    assert [n["node_id"] for n in page["active_path"]] == [posted["message_id"], first]
    assert {r["reply_id"]: (r["chosen"], r["speaker_name"]) for r in page["replies"]} == {
        first: (True, "demo"),
        second: (False, "demo2"),
    }
    # A later choice replaces it: the other branch, the other preference.
    status, again = await ann.call("POST", f"/v1/chats/{chat_id}/replies/{second}/choose")
    assert status == 200
    status, page = await ann.call("GET", f"/v1/chats/{chat_id}/messages?min_seq={again['seq']}")
    assert [n["node_id"] for n in page["active_path"]] == [posted["message_id"], second]
    assert {r["reply_id"]: r["chosen"] for r in page["replies"]} == {first: False, second: True}

    # Choosing is for side-by-side chats, and for a reply that has a sibling.
    status, plain = await ann.call("POST", "/v1/chats", json={"title": "one"})
    status, one = await ann.call(
        "POST", f"/v1/chats/{plain['chat_id']}/messages", json={"content": "hi", "params": params}
    )
    status, answer = await ann.call("POST", f"/v1/chats/{plain['chat_id']}/replies/{one['reply_id']}/choose")
    assert status == 409 and "side-by-side" in answer["message"]
    status, answer = await ann.call("POST", f"/v1/chats/{chat_id}/replies/rnothere/choose")
    assert status == 404 and "rnothere" in answer["message"]
