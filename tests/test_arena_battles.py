"""Arena battles through the API against a real nats-server and the in-process projector: the draw from the
pool (include/exclude, pair balance), the refusals before the vote, the vote and its reveal, continuing
with a side, the category, the daily vote cap, and that a battle is its owner's alone. The last tests run
two real demo-model workers (aliases `demo` and `demo2`) that stream both sides."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import bus
import schemas
from bus import Bus
from schemas.arena import PoolSet
from schemas.chat import ArenaTagged, ArenaVoted, ChatCreated, MessagePosted, ReplyCompleted, ReplyRequested
from schemas.ids import new_id
from tests.apihelp import Api, chat_events, is_error, serve_model, stream_until_ended
from tests.logs import complete_reply
from tests.stack import Client, wait_event

BATTLE_KEYS = {"chat_id", "message_id", "reply_ids", "labels", "category", "seq"}


async def set_pool(nbus: Bus, include: list[str] | None = None, exclude: list[str] | None = None) -> None:
    """The admin's `arena.pool.set`, as `chatbus admin arena pool` appends it."""
    event = PoolSet(
        event_id=new_id("e"), at=schemas.now(), by="root", include=include or [], exclude=exclude or []
    )
    await bus.append_event(nbus.js, event)


async def battle(api: Api, user: str = "ann", **body: Any) -> tuple[dict[str, Any], ChatCreated]:
    """A new battle over the API: its 201 body (which names no model) and its creation from the log."""
    status, created = await api.call("POST", "/v1/arena/battles", user, json={"content": "hi", **body})
    assert status == 201, created
    assert set(created) == BATTLE_KEYS and created["labels"] == ["A", "B"]
    first = (await chat_events(api.nbus, created["chat_id"]))[0]
    assert isinstance(first, ChatCreated) and first.arena and first.origin == "arena" and first.model == ""
    return created, first


async def test_a_battle_draws_two_served_models_of_the_pool_and_balances_the_pairs(api: Api) -> None:
    status, body = await api.call("POST", "/v1/arena/battles", json={"content": "hi"})
    assert (
        status == 409
        and body["error"] == "arena_unavailable"
        and "chatbus admin arena pool" in body["message"]
    )
    await serve_model(api.nbus, "alpha")
    status, body = await api.call("POST", "/v1/arena/battles", json={"content": "hi"})
    assert status == 409 and body["error"] == "arena_unavailable"  # one served model is no battle
    for alias in ("beta", "gamma"):
        await serve_model(api.nbus, alias)

    # Three models, seven battles: every pair met twice or three times; each battle two different models.
    met: Counter[frozenset[str]] = Counter()
    for _ in range(7):
        created, first = await battle(api)
        assert len(set(first.compare)) == 2 and set(first.compare) <= {"alpha", "beta", "gamma"}
        met[frozenset(first.compare)] += 1
        requests = [
            e for e in await chat_events(api.nbus, created["chat_id"]) if isinstance(e, ReplyRequested)
        ]
        # Both sides answer the prompt as siblings, side A's reply first.
        assert [(r.reply_id, r.model, r.message_id) for r in requests] == [
            (created["reply_ids"][0], first.compare[0], created["message_id"]),
            (created["reply_ids"][1], first.compare[1], created["message_id"]),
        ]
    assert len(met) == 3 and max(met.values()) - min(met.values()) <= 1, met

    # The pool: only `include` (of those served), never `exclude`; the last setting holds.
    await set_pool(api.nbus, include=["alpha", "beta", "unserved"])
    for _ in range(3):
        assert set((await battle(api))[1].compare) == {"alpha", "beta"}
    await set_pool(api.nbus, exclude=["beta"])
    assert set((await battle(api))[1].compare) == {"alpha", "gamma"}
    await set_pool(api.nbus, include=["gamma", "unserved"])
    status, body = await api.call("POST", "/v1/arena/battles", json={"content": "hi"})
    assert status == 409 and body["error"] == "arena_unavailable"

    # Bad bodies: as a post's, plus the category's length; nothing appended.
    await set_pool(api.nbus)
    before = await bus.last_seq(api.nbus.js, "CHAT")
    for bad, code in (
        ({"content": ""}, 422),
        ({"content": "x" * 101}, 413),
        ({"content": "hi", "model": "alpha"}, 422),
        ({"content": "hi", "category": "x" * 65}, 422),
        ({"content": "hi", "images": ["0" * 64]}, 422),
    ):
        status, body = await api.call("POST", "/v1/arena/battles", json=bad)
        assert status == code and is_error(body), (bad, body)
    assert await bus.last_seq(api.nbus.js, "CHAT") == before


async def test_a_battle_refuses_changes_before_its_vote_then_reveals_and_goes_on_with_a_side(
    api: Api,
) -> None:
    for alias in ("alpha", "beta"):
        await serve_model(api.nbus, alias)
    created, first = await battle(api, category="code", content="Which is better?\nsecond line")
    assert first.title == "Which is better?" and first.category == "code"
    chat_id, (ra, rb) = created["chat_id"], created["reply_ids"]
    path = f"/v1/chats/{chat_id}"
    side_a, side_b = first.compare

    status, body = await api.call("POST", f"{path}/arena/vote", json={"vote": "A"})
    assert status == 409 and body["error"] == "battle_unfinished"
    await complete_reply(api, chat_id, ra, "from A", model=side_a)
    status, body = await api.call("POST", f"{path}/arena/vote", json={"vote": "A"})
    assert status == 409 and body["error"] == "battle_unfinished" and "side B" in body["message"]
    assert side_b not in body["message"]
    await complete_reply(api, chat_id, rb, "from B", model=side_b)

    # Before the vote: nothing that changes what is judged (409 arena_battle); a post asks both sides.
    status, bot = await api.call("POST", "/v1/bots", json={"name": "Sage", "model": "alpha"})
    assert status == 201, bot
    for method, url, body in (
        ("POST", f"{path}/replies/{ra}/regenerate", {}),
        ("POST", f"{path}/messages/{created['message_id']}/edit", {"content": "other"}),
        ("POST", f"{path}/branch", {"node_id": rb}),
        ("POST", f"{path}/replies/{ra}/choose", None),
        ("POST", f"{path}/participants", {"bot_id": bot["bot_id"]}),
        ("DELETE", f"{path}/participants/p1", None),
        ("POST", f"{path}/floor", {"action": "pause"}),
    ):
        status, answer = await api.call(method, url, json=body)
        assert status == 409 and answer["error"] == "arena_battle", (url, answer)
    # A battle judges one prompt: a second one is refused (whatever it names), so both sides answer the
    # same conversation and no post can ask a side with its own defaults or cap.
    for body in ({"content": "more"}, {"content": "more", "model": "alpha"}):
        status, answer = await api.call("POST", f"{path}/messages", json=body)
        assert status == 409 and answer["error"] == "arena_battle" and side_a not in answer["message"], answer

    # The category: its owner, or an admin; nobody else reaches the battle on any arena route.
    assert (await api.call("PUT", f"{path}/arena/category", json={"category": "math"}))[0] == 200
    assert (await api.call("PUT", f"{path}/arena/category", "root", json={"category": "logic"}))[0] == 200
    tagged = await wait_event(api.nbus, f"chat.{chat_id}.arena.tagged")
    assert isinstance(tagged, ArenaTagged) and (tagged.category, tagged.by) == ("logic", "root")
    for user, allowed in (("bob", set()), ("root", {"category"})):
        for route, body in (
            ("vote", {"vote": "A"}),
            ("continue", {"side": "A"}),
            ("category", {"category": "x"}),
        ):
            method = "PUT" if route == "category" else "POST"
            status, answer = await api.call(method, f"{path}/arena/{route}", user, json=body)
            assert status == (200 if route in allowed else 404) and (status == 200 or is_error(answer)), (
                user,
                route,
            )
    await api.call("PUT", f"{path}/arena/category", json={"category": "logic"})

    status, answer = await api.call("POST", f"{path}/arena/continue", json={"side": "A"})
    assert status == 409 and answer["error"] == "not_voted"
    status, answer = await api.call("POST", f"{path}/arena/vote", json={"vote": "C"})
    assert status == 422
    status, voted = await api.call("POST", f"{path}/arena/vote", json={"vote": "tie"})
    assert status == 200 and voted["vote"] == "tie" and voted["models"] == {"A": side_a, "B": side_b}, voted
    event = await wait_event(api.nbus, f"chat.{chat_id}.arena.voted")
    assert isinstance(event, ArenaVoted)
    assert (event.replies_a, event.replies_b, event.tokens_a, event.tokens_b) == ([ra], [rb], 2, 2)
    assert (event.category, event.voter_id) == ("logic", "ann")
    status, answer = await api.call("POST", f"{path}/arena/vote", json={"vote": "A"})
    assert status == 409 and answer["error"] == "already_voted" and "revealed" in answer["message"]

    # After the vote: pick a side first, then the chat goes on with that model alone.
    status, answer = await api.call("POST", f"{path}/messages", json={"content": "next"})
    assert status == 409 and answer["error"] == "choose_side" and "arena/continue" in answer["message"]
    status, went = await api.call("POST", f"{path}/arena/continue", json={"side": "B"})
    assert status == 200 and went["model"] == side_b
    status, answer = await api.call("POST", f"{path}/arena/continue", json={"side": "A"})
    assert status == 409 and answer["error"] == "already_continued"
    status, posted = await api.call("POST", f"{path}/messages", json={"content": "next"})
    assert status == 202 and posted["model"] == side_b and len(posted["reply_ids"]) == 1, posted
    events = await chat_events(api.nbus, chat_id)
    message = next(e for e in events if isinstance(e, MessagePosted) and e.message_id == posted["message_id"])
    assert message.parent_id == rb  # on side B's branch
    assert [e.model for e in events if isinstance(e, ReplyRequested)][-1] == side_b
    status, page = await api.call("GET", f"/v1/chats?origin=arena&min_seq={posted['seq']}")
    assert status == 200 and [c["chat_id"] for c in page["items"]] == [chat_id]


async def test_only_a_battle_takes_a_vote(api: Api) -> None:
    await serve_model(api.nbus)
    chat_id = (await api.new_chat(model="demo"))["chat_id"]
    _, posted = await api.call("POST", f"/v1/chats/{chat_id}/messages", json={"content": "hi"})
    await complete_reply(api, chat_id, posted["reply_id"], "hello")
    for route, method, body in (
        ("vote", "POST", {"vote": "A"}),
        ("continue", "POST", {"side": "A"}),
        ("category", "PUT", {"category": "x"}),
    ):
        status, answer = await api.call(method, f"/v1/chats/{chat_id}/arena/{route}", json=body)
        assert status == 409 and answer["error"] == "not_a_battle", route


async def test_the_battles_table_replays_to_what_the_live_projector_holds(api: Api, tmp_path: Path) -> None:
    """Battles created, voted, tagged after the vote and erased: `chatbus admin replay --check`'s digest
    of the live read model equals a rebuild from the log."""
    from services.projector import replay
    from services.projector.check import differences, file_digest
    from services.projector.replay_until import live_digest

    for alias in ("alpha", "beta"):
        await serve_model(api.nbus, alias)
    chats = []
    for _ in range(3):
        created, first = await battle(api, category="code")
        for reply_id, alias in zip(created["reply_ids"], first.compare, strict=True):
            await complete_reply(api, created["chat_id"], reply_id, "answer", model=alias)
        chats.append(created["chat_id"])
    for chat_id in chats[:2]:
        assert (await api.call("POST", f"/v1/chats/{chat_id}/arena/vote", json={"vote": "A"}))[0] == 200
    assert (await api.call("PUT", f"/v1/chats/{chats[0]}/arena/category", json={"category": "math"}))[
        0
    ] == 200
    _, erased = await api.call("POST", f"/v1/chats/{chats[1]}/erase")
    await api.call("GET", f"/v1/chats?min_seq={erased['seq']}")  # the live projector has it all
    live = await live_digest(api.nbus)
    assert live.tables["battles"].rows == 2  # the erased battle's row went with its chat
    await replay(api.nbus, tmp_path / "rebuilt.duckdb", until=dict(live.checkpoints))
    assert differences(live, file_digest(tmp_path / "rebuilt.duckdb")) == []


# ---------------------------------------------------------------- with real workers


@pytest.fixture
async def arena(nbus: Bus, tmp_path: Path, demo_model_dir: Path) -> AsyncIterator[dict[str, str]]:
    """The in-process stack with two demo-model workers (`demo`, `demo2`) and a cap of two votes a day,
    set as an operator would (CHATBUS_ARENA_DAILY_VOTES); ann's key, and the API's URL as `base`."""
    from identity.accounts import add_user, issue_key
    from services.api import ApiSettings
    from tests.stack import extra_worker, in_process_stack

    await add_user(nbus.js, "ann")
    keys = {"ann": (await issue_key(nbus.js, "ann"))[1]}
    settings = ApiSettings.from_env({"CHATBUS_ARENA_DAILY_VOTES": "2", "CHATBUS_DEFAULT_MODEL": "demo"})
    async with (
        in_process_stack(nbus, tmp_path / "read.duckdb", demo_model_dir, settings) as (base, _),
        extra_worker(nbus, demo_model_dir, "demo2"),
    ):
        yield {**keys, "base": base}


PARAMS = {"max_new_tokens": 8, "ignore_eos": True, "temperature": 0.0}


async def answered(nbus: Bus, chat_id: str, *reply_ids: str) -> list[ReplyCompleted]:
    """The workers' completions of these replies, once each has one."""
    ends = [await wait_event(nbus, f"chat.{chat_id}.reply.{r}.completed") for r in reply_ids]
    assert all(isinstance(end, ReplyCompleted) for end in ends)
    return ends


async def test_both_sides_stream_then_the_vote_reveals_and_the_chosen_side_answers_alone(
    arena: dict[str, str], nbus: Bus
) -> None:
    async with Client(arena["base"], arena["ann"]) as ann:
        status, created = await ann.call(
            "POST", "/v1/arena/battles", json={"content": "hello", "params": PARAMS}
        )
        assert status == 201 and set(created) == BATTLE_KEYS, created
        chat_id, (ra, rb) = created["chat_id"], created["reply_ids"]
        async with ann.ws(chat_id) as ws:
            assert await stream_until_ended(ws, {ra, rb}) == {ra, rb}  # both sides streamed, side by side
        end_a, end_b = await answered(nbus, chat_id, ra, rb)
        status, voted = await ann.call("POST", f"/v1/chats/{chat_id}/arena/vote", json={"vote": "B"})
        assert status == 200 and voted["models"] == {"A": end_a.model, "B": end_b.model}, voted
        assert {end_a.model, end_b.model} == {"demo", "demo2"}

        status, went = await ann.call("POST", f"/v1/chats/{chat_id}/arena/continue", json={"side": "B"})
        assert status == 200 and went["model"] == end_b.model
        body = {"content": "go on", "params": PARAMS}
        status, posted = await ann.call("POST", f"/v1/chats/{chat_id}/messages", json=body)
        assert (
            status == 202 and posted["model"] == end_b.model and posted["reply_ids"] == [posted["reply_id"]]
        )
        (end,) = await answered(nbus, chat_id, posted["reply_id"])
        assert end.model == end_b.model and end.completion_tokens == 8


async def test_the_daily_vote_cap_refuses_a_vote_beyond_it_with_429(arena: dict[str, str], nbus: Bus) -> None:
    async with Client(arena["base"], arena["ann"]) as ann:
        battles = []
        for _ in range(3):
            body = {"content": "hi", "params": PARAMS}
            status, created = await ann.call("POST", "/v1/arena/battles", json=body)
            assert status == 201, created
            battles.append(created)
        for created in battles:
            await answered(nbus, created["chat_id"], *created["reply_ids"])
        votes = []
        for created in battles:
            votes.append(
                await ann.call("POST", f"/v1/chats/{created['chat_id']}/arena/vote", json={"vote": "A"})
            )
        assert [status for status, _ in votes] == [200, 200, 429], votes
        refused = votes[2][1]
        assert (
            refused["error"] == "vote_cap"
            and "cap is 2" in refused["message"]
            and "resets at" in refused["message"]
        )
        last = await bus.last_msg(nbus.js, "CHAT", f"chat.{battles[2]['chat_id']}.arena.voted")
        assert last is None  # refused: nothing appended
