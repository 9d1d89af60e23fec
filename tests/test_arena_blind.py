"""An arena battle is blind for real: everything its voter's client receives before the vote (every REST
body of the routes the voter may call on it, the WebSocket frames, the SSE bytes) names neither model nor
worker, and the same routes and feeds name both after the vote. A real stack: the API on a real port, the
projector, and two in-process workers of the demo model under distinctive aliases and worker ids."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

import bus
import schemas
from bus import Bus
from identity.accounts import add_user, issue_key
from logtools.arena_votes import set_pool
from schemas.blind import BLIND_ERROR
from schemas.chat import (
    ChatCreated,
    MessagePosted,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyStarted,
)
from schemas.ids import new_id
from schemas.sampling import SamplingParams
from tests.stack import chat_events, extra_worker, wait_event

# Distinctive, so that finding one anywhere in the bytes means it leaked.
ALIAS_A, ALIAS_B = "zebra-alias-7q3", "okapi-alias-9k5"
WORKER_A, WORKER_B = "wk-zebra-4tx8", "wk-okapi-2mv6"
SECRETS = (ALIAS_A, ALIAS_B, WORKER_A, WORKER_B)
GHOST = "ghost-alias-3zq"  # drawn, but no worker serves it
PARAMS = {"max_new_tokens": 8, "ignore_eos": True, "temperature": 0.0}
VOTE_TYPE = "chat.arena.voted"


@dataclass
class Feed:
    """Every frame a live feed sent (its raw bytes and its JSON), in order; SSE's other lines too."""

    frames: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    other: bytearray = field(default_factory=bytearray)  # SSE's retry, ids and heartbeats

    def events(self) -> list[dict[str, Any]]:
        return [frame["event"] for _, frame in self.frames if frame["kind"] == "event"]

    def split_at_vote(self) -> tuple[bytes, bytes]:
        """The bytes before the vote frame, and from it on."""
        at = next((i for i, (_, f) in enumerate(self.frames) if f["event"].get("type") == VOTE_TYPE), None)
        at = len(self.frames) if at is None else at
        return b"".join(raw for raw, _ in self.frames[:at]), b"".join(raw for raw, _ in self.frames[at:])


@dataclass
class Voter:
    """One user's HTTP client that keeps every byte it receives."""

    base: str
    key: str
    received: list[bytes] = field(default_factory=list)
    session: aiohttp.ClientSession = field(init=False)

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, f"{self.base}{path}", **kwargs) as resp:
            raw = await resp.read()
            self.received.append(b"".join(b"%s: %s\n" % pair for pair in resp.raw_headers) + raw)
            return resp.status, json.loads(raw) if raw else None

    def seen(self) -> bytes:
        return b"\n".join(self.received)

    async def ws(self, chat_id: str, feed: Feed) -> None:
        async with self.session.ws_connect(f"{self.base}/v1/chats/{chat_id}/ws?after_chat_seq=0") as ws:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    feed.frames.append((msg.data.encode(), json.loads(msg.data)))

    async def sse(self, chat_id: str, feed: Feed) -> None:
        async with self.session.get(f"{self.base}/v1/chats/{chat_id}/events") as resp:
            assert resp.status == 200, await resp.text()
            pending = b""
            async for chunk in resp.content.iter_any():
                pending += chunk
                *done, pending = pending.split(b"\n\n")
                for block in done:
                    data = [line[6:] for line in block.split(b"\n") if line.startswith(b"data: ")]
                    if data:
                        feed.frames.append((block, json.loads(data[0])))
                    else:
                        feed.other += block


@contextlib.asynccontextmanager
async def voter(base: str, key: str) -> AsyncIterator[Voter]:
    client = Voter(base, key)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as client.session:
        yield client


@contextlib.asynccontextmanager
async def watching(client: Voter, chat_id: str) -> AsyncIterator[tuple[Feed, Feed]]:
    """The chat's WebSocket and SSE feeds, collected while the block runs."""
    ws, sse = Feed(), Feed()
    tasks = [asyncio.create_task(client.ws(chat_id, ws)), asyncio.create_task(client.sse(chat_id, sse))]
    try:
        yield ws, sse
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


def completed_in(feed: Feed) -> set[str]:
    return {e["reply_id"] for e in feed.events() if e.get("type") == "chat.reply.completed"}


async def new_battle(nbus: Bus, owner: str, compare: list[str]) -> str:
    """A battle as the arena makes one (its creation event); the chat id."""
    created = ChatCreated(
        event_id=new_id("e"),
        chat_id=new_id("c"),
        at=schemas.now(),
        owner_id=owner,
        title="which is better",
        compare=compare,
        arena=True,
        origin="arena",
    )
    await bus.append_event(nbus.js, created, expected_subject_seq=0)
    return created.chat_id


async def failed_reply(
    nbus: Bus, chat_id: str, owner: str, alias: str = ALIAS_B, worker: str = WORKER_B
) -> str:
    """A reply of side B (`alias`) that failed with an error naming its model and worker (as a worker's
    error text may): imported, so that no worker takes it up; the reply id."""
    now, message_id, reply_id = schemas.now(), new_id("m"), new_id("r")
    events: list[schemas.Event] = [
        MessagePosted(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=now,
            message_id=message_id,
            author_id=owner,
            content="warm up",
        ),
        ReplyRequested(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=now,
            reply_id=reply_id,
            message_id=message_id,
            model=alias,
            context=[message_id],
            requested_by=owner,
            imported=True,
        ),
        ReplyStarted(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=now,
            reply_id=reply_id,
            attempt=1,
            worker_id=worker,
            model=alias,
        ),
        ReplyFailed(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=now,
            reply_id=reply_id,
            attempt=1,
            worker_id=worker,
            error=f"{alias} on {worker}: out of memory",
            code="engine_error",
        ),
    ]
    for event in events:
        await bus.append_event(nbus.js, event)
    return reply_id


async def answers(nbus: Bus, chat_id: str, reply_ids: list[str]) -> list[str]:
    """The texts of these replies, once each completed."""
    texts = []
    for reply_id in reply_ids:
        done = await wait_event(nbus, f"chat.{chat_id}.reply.{reply_id}.completed", timeout=120)
        assert isinstance(done, ReplyCompleted) and done.text, done
        texts.append(done.text)
    return texts


async def drawn(nbus: Bus, chat_id: str) -> dict[str, str]:
    """Which alias the draw made side A and side B, read from the log (as an admin may)."""
    created = (await chat_events(nbus, chat_id))[0]
    assert isinstance(created, ChatCreated) and created.arena, created
    return dict(zip(("A", "B"), created.compare, strict=True))


def json_text(text: str) -> bytes:
    """A string as the API writes it inside a JSON body (msgspec's escaping)."""
    return msgspec.json.encode(text)[1:-1]


def assert_blind(seen: bytes, where: str) -> None:
    for secret in SECRETS:
        assert secret.encode() not in seen, f"{secret} leaked in {where}"


def assert_truth(seen: bytes, where: str, secrets: tuple[str, ...] = SECRETS) -> None:
    for secret in secrets:
        assert secret.encode() in seen, f"{secret} missing from {where}"


async def reads(client: Voter, chat_id: str, reply_id: str, min_seq: int) -> None:
    """Every read the voter may make of the chat (the bodies land in the client's `received`)."""
    chat = f"/v1/chats/{chat_id}"
    for path in ("/v1/chats?origin=all", "/v1/chats", f"{chat}?min_seq={min_seq}"):
        status, _ = await client.call("GET", path)
        assert status == 200, path
    status, page = await client.call("GET", f"{chat}/messages?min_seq={min_seq}")
    assert status == 200 and {r["status"] for r in page["replies"]} == {"completed"}, page
    status, _ = await client.call("PUT", f"{chat}/replies/{reply_id}/feedback", json={"rating": "up"})
    assert status == 200
    status, _ = await client.call("POST", f"{chat}/replies/{reply_id}/cancel")  # finished: a 409
    assert status == 409


async def test_the_voter_reads_neither_model_nor_worker_before_the_vote_and_both_after(
    stack: dict[str, str], nbus: Bus, demo_model_dir: Path
) -> None:
    await add_user(nbus.js, "root", role="admin")
    root_key = (await issue_key(nbus.js, "root"))[1]
    async with (
        extra_worker(nbus, demo_model_dir, ALIAS_A, worker_id=WORKER_A),
        extra_worker(nbus, demo_model_dir, ALIAS_B, worker_id=WORKER_B),
        voter(stack["base"], stack["ann"]) as ann,
        voter(stack["base"], root_key) as root,
    ):
        await set_pool(nbus.js, [ALIAS_A, ALIAS_B], [], "root")  # the stack's own model stays out
        status, battle = await ann.call(
            "POST", "/v1/arena/battles", json={"content": "which is better?", "params": PARAMS}
        )
        assert status == 201 and battle["labels"] == ["A", "B"], battle
        chat_id = battle["chat_id"]
        side = await drawn(nbus, chat_id)
        assert set(side.values()) == {ALIAS_A, ALIAS_B}
        worker = {ALIAS_A: WORKER_A, ALIAS_B: WORKER_B}
        async with watching(ann, chat_id) as (ws, sse):
            texts = await answers(nbus, chat_id, battle["reply_ids"])
            for feed in (ws, sse):
                await until(lambda feed=feed: set(battle["reply_ids"]) <= completed_in(feed), "both answers")
            requested = [e for e in ws.events() if e["type"] == "chat.reply.requested"]
            assert [e["model"] for e in requested] == ["A", "B"]
            assert (
                requested[0]["params"] == requested[1]["params"]
            )  # no side's own defaults to tell them apart
            # A second battle, where side B's answer failed with an error naming its model and worker.
            status, other = await ann.call(
                "POST", "/v1/arena/battles", json={"content": "hi", "params": PARAMS}
            )
            assert status == 201, other
            await answers(nbus, other["chat_id"], other["reply_ids"])
            other_side = await drawn(nbus, other["chat_id"])
            failed = await failed_reply(
                nbus, other["chat_id"], "ann", other_side["B"], worker[other_side["B"]]
            )
            now_seq = (await nbus.js.stream_info("CHAT")).state.last_seq
            status, page = await ann.call("GET", f"/v1/chats/{other['chat_id']}/messages?min_seq={now_seq}")
            failure = next(r for r in page["replies"] if r["reply_id"] == failed)
            assert (failure["status"], failure["error"], failure["worker_id"]) == ("failed", BLIND_ERROR, "")
            # Refused or blind, a body never names them: a second prompt, a fixed model, a rename.
            for body in ({"content": "and now?"}, {"content": "x", "model": ALIAS_A}):
                status, refused = await ann.call("POST", f"/v1/chats/{chat_id}/messages", json=body)
                assert status == 409 and refused["error"] == "arena_battle", refused
            status, _ = await ann.call("PATCH", f"/v1/chats/{chat_id}", json={"title": "a battle"})
            assert status == 200
            last = (await nbus.js.stream_info("CHAT")).state.last_seq
            await reads(ann, chat_id, battle["reply_ids"][0], last)
            status, _ = await ann.call("GET", f"/v1/admin/chats/{chat_id}/audit")
            assert status == 403  # not for users; an admin voter's own audit is blind (below)

            # An admin reading someone else's unvoted battle reads the truth.
            status, _ = await root.call("GET", f"/v1/chats/{chat_id}/messages?min_seq={last}")
            assert status == 200
            status, _ = await root.call("GET", f"/v1/admin/chats/{chat_id}/audit")
            assert status == 200
            assert_truth(root.seen(), "an admin's reads of another user's battle")
            before = ann.seen()  # everything the voter received before the vote
            status, voted = await ann.call("POST", f"/v1/chats/{chat_id}/arena/vote", json={"vote": "A"})
            assert status == 200 and voted["models"] == side, voted
            seq = voted["seq"]
            for feed in (ws, sse):
                await until(
                    lambda feed=feed: VOTE_TYPE in [e["type"] for e in feed.events()], "the vote frame"
                )
            # A vote after the reveal is refused.
            status, again = await ann.call("POST", f"/v1/chats/{chat_id}/arena/vote", json={"vote": "B"})
            assert status == 409 and again["error"] == "already_voted", again
        assert json_text(battle["chat_id"]) in before  # the battle's creation answer was collected
        assert_blind(before, "the REST bodies")
        for name, feed in (("WebSocket", ws), ("SSE", sse)):
            pre, post = feed.split_at_vote()
            assert_blind(pre + bytes(feed.other), f"the {name} frames before the vote")
            assert_truth(post, f"the {name} vote frame", (ALIAS_A, ALIAS_B))
            assert b'"kind":"tokens"' in pre, name
            for text in texts:  # a collector that collects nothing fails here
                assert json_text(text) in pre and json_text(text) in before, (name, text)

        # After the vote: the same routes and fresh feeds read the truth.
        ann.received.clear()
        await reads(ann, chat_id, battle["reply_ids"][1], seq)
        assert_truth(ann.seen(), "the REST bodies after the vote")
        async with watching(ann, chat_id) as (ws, sse):
            for feed in (ws, sse):
                await until(lambda feed=feed: VOTE_TYPE in [e["type"] for e in feed.events()], "the replay")
        for name, feed in (("WebSocket", ws), ("SSE", sse)):
            pre, post = feed.split_at_vote()
            assert_truth(pre, f"a {name} feed opened after the vote")
        status, chat = await ann.call("GET", f"/v1/chats/{chat_id}")
        assert status == 200 and chat["compare"] == [side["A"], side["B"]] and chat["model"] == ""
        # The failed answer, as an admin reads it: the truth.
        status, page = await root.call("GET", f"/v1/chats/{other['chat_id']}/messages")
        failure = next(r for r in page["replies"] if r["reply_id"] == failed)
        b_alias = other_side["B"]
        assert (failure["model"], failure["worker_id"]) == (b_alias, worker[b_alias])
        assert failure["error"] == f"{b_alias} on {worker[b_alias]}: out of memory"


async def test_an_admins_own_battle_and_a_refused_post_are_blind(
    stack: dict[str, str], nbus: Bus, demo_model_dir: Path
) -> None:
    await add_user(nbus.js, "root", role="admin")
    root_key = (await issue_key(nbus.js, "root"))[1]
    # Each model with its own default sampling and cap, as a model config may set them.
    own_a = {"defaults": SamplingParams(temperature=0.2, max_new_tokens=5), "max_new_tokens_cap": 6}
    own_b = {"defaults": SamplingParams(temperature=1.3, max_new_tokens=9), "max_new_tokens_cap": 9}
    async with (
        extra_worker(nbus, demo_model_dir, ALIAS_A, worker_id=WORKER_A, **own_a),
        extra_worker(nbus, demo_model_dir, ALIAS_B, worker_id=WORKER_B, **own_b),
        voter(stack["base"], stack["ann"]) as ann,
        voter(stack["base"], root_key) as root,
    ):
        await set_pool(nbus.js, [ALIAS_A, ALIAS_B], [], "root")
        status, plain = await root.call("POST", "/v1/arena/battles", json={"content": "hi"})
        assert status == 201, plain
        # No params: both sides are asked alike (chatbus's defaults, the lower cap), never with their own.
        asked = [e for e in await chat_events(nbus, plain["chat_id"]) if isinstance(e, ReplyRequested)]
        assert [e.params for e in asked] == [SamplingParams(max_new_tokens=6)] * 2
        status, battle = await root.call(
            "POST", "/v1/arena/battles", json={"content": "hi", "params": PARAMS}
        )
        assert status == 201, battle
        chat_id = battle["chat_id"]
        texts = await answers(nbus, chat_id, battle["reply_ids"])
        status, trail = await root.call("GET", f"/v1/admin/chats/{chat_id}/audit")
        assert status == 200 and {e["model"] for e in trail["entries"] if e["model"]} == {"A", "B"}
        assert_blind(root.seen(), "the audit of an admin's own battle")
        assert all(json_text(text) in root.seen() for text in texts)
        root.received.clear()
        status, _ = await root.call("POST", f"/v1/chats/{chat_id}/arena/vote", json={"vote": "tie"})
        assert status == 200
        status, trail = await root.call("GET", f"/v1/admin/chats/{chat_id}/audit")
        assert status == 200
        assert_truth(root.seen(), "the audit after the vote")

        # A battle left without its prompt (its creation cut short), one side no longer served: a post
        # there is refused before any model is asked, so nothing names them.
        ghostly = await new_battle(nbus, "ann", [ALIAS_A, GHOST])
        status, refused = await ann.call("POST", f"/v1/chats/{ghostly}/messages", json={"content": "hi"})
        assert status == 409 and refused["error"] == "arena_battle", refused
        for secret in (GHOST, ALIAS_A):
            assert secret.encode() not in ann.seen(), refused
