"""The whole chat over HTTP and WebSocket with the demo model: stream, resume mid-reply, cancel."""

from __future__ import annotations

import asyncio
from typing import Any

from bus import Bus
from schemas.chat import ReplyCompleted
from tests.stack import Client, chat_events


async def _read_until_end(
    ws: Any, reply_id: str, frames: list[dict[str, Any]], limit: int | None = None
) -> bool:
    """Collect frames until the reply's end event (True) or `limit` token frames (False)."""
    tokens_seen = 0
    async for msg in ws:
        frame = msg.json()
        if frame.get("kind") not in ("event", "tokens"):
            continue
        frames.append(frame)
        event = frame["event"]
        if frame["kind"] == "tokens":
            tokens_seen += 1
            if limit is not None and tokens_seen >= limit:
                return False
        elif event.get("reply_id") == reply_id and event["type"] in (
            "chat.reply.completed",
            "chat.reply.failed",
        ):
            return True
    raise AssertionError("socket closed before the reply ended")


async def test_a_message_streams_a_reply_over_websocket(stack: dict[str, str]) -> None:
    async with Client(stack["base"], stack["ann"]) as ann:
        status, chat = await ann.call("POST", "/v1/chats", json={"title": "first"})
        assert status == 201
        chat_id = chat["chat_id"]
        async with ann.ws(chat_id) as ws:
            status, posted = await ann.call(
                "POST",
                f"/v1/chats/{chat_id}/messages",
                json={"content": "Hello!", "params": {"max_new_tokens": 40, "ignore_eos": True}},
            )
            assert status == 202, posted
            frames: list[dict[str, Any]] = []
            assert await asyncio.wait_for(_read_until_end(ws, posted["reply_id"], frames), 60)
        kinds = [f["event"]["type"] for f in frames]
        assert kinds[:3] == ["chat.created", "chat.message.posted", "chat.reply.requested"]
        end = frames[-1]["event"]
        assert end["type"] == "chat.reply.completed" and end["completion_tokens"] == 40
        first_token = kinds.index("tokens.delta")
        assert first_token < len(kinds) - 1, "tokens must arrive before the reply completes"
        tokens = [f["event"] for f in frames if f["kind"] == "tokens"]
        assert "".join(t["text"] for t in tokens) == end["text"]
        assert sum(t["n_tokens"] for t in tokens) == 40
        # The read model has the reply with counts and timings once it has applied the end event.
        status, listing = await ann.call("GET", f"/v1/chats/{chat_id}/messages?min_seq={frames[-1]['seq']}")
        assert status == 200
        assert [m["content"] for m in listing["messages"]] == ["Hello!"]
        (reply,) = listing["replies"]
        assert (
            reply["status"] == "completed"
            and reply["completion_tokens"] == 40
            and reply["text"] == end["text"]
        )
        assert reply["prompt_tokens"] > 0 and reply["generation_ms"] > 0


async def test_reconnect_mid_reply_resumes_with_no_gap_and_no_duplicate(stack: dict[str, str]) -> None:
    async with Client(stack["base"], stack["ann"]) as ann:
        _, chat = await ann.call("POST", "/v1/chats", json={"title": "resume"})
        chat_id = chat["chat_id"]
        _, posted = await ann.call(
            "POST",
            f"/v1/chats/{chat_id}/messages",
            json={"content": "Tell me more", "params": {"max_new_tokens": 300, "ignore_eos": True}},
        )
        frames: list[dict[str, Any]] = []
        async with ann.ws(chat_id) as ws:
            ended = await asyncio.wait_for(_read_until_end(ws, posted["reply_id"], frames, limit=3), 60)
        assert not ended, "the reply ended before we could cut the connection"
        last_chat = max((f["seq"] for f in frames if f["kind"] == "event"), default=0)
        last_tokens = max(f["seq"] for f in frames if f["kind"] == "tokens")
        await asyncio.sleep(0.3)  # the reply goes on while we are away
        async with ann.ws(chat_id, last_chat, last_tokens) as ws:
            assert await asyncio.wait_for(_read_until_end(ws, posted["reply_id"], frames), 90)
    for kind in ("event", "tokens"):
        seqs = [f["seq"] for f in frames if f["kind"] == kind]
        assert seqs == sorted(set(seqs)), f"{kind} frames repeated or out of order"
    tokens = [f["event"] for f in frames if f["kind"] == "tokens"]
    assert [t["index"] for t in tokens] == list(range(len(tokens))), "a token delta is missing"
    end = frames[-1]["event"]
    assert end["completion_tokens"] == 300
    assert "".join(t["text"] for t in tokens) == end["text"]


async def test_cancel_over_http_stops_the_reply(stack: dict[str, str], nbus: Bus) -> None:
    async with Client(stack["base"], stack["ann"]) as ann:
        _, chat = await ann.call("POST", "/v1/chats", json={"title": "stop"})
        chat_id = chat["chat_id"]
        async with ann.ws(chat_id) as ws:
            _, posted = await ann.call(
                "POST",
                f"/v1/chats/{chat_id}/messages",
                json={"content": "Go", "params": {"max_new_tokens": 3000, "ignore_eos": True}},
            )
            frames: list[dict[str, Any]] = []
            await asyncio.wait_for(_read_until_end(ws, posted["reply_id"], frames, limit=2), 60)
            status, _ = await ann.call("POST", f"/v1/chats/{chat_id}/replies/{posted['reply_id']}/cancel")
            assert status == 202
            assert await asyncio.wait_for(_read_until_end(ws, posted["reply_id"], frames), 30)
    end = frames[-1]["event"]
    assert end["finish_reason"] == "cancelled" and end["completion_tokens"] < 3000
    ends = [e for e in await chat_events(nbus, chat_id) if isinstance(e, ReplyCompleted)]
    assert len(ends) == 1


async def test_a_second_turn_sees_the_first(stack: dict[str, str], nbus: Bus) -> None:
    async with Client(stack["base"], stack["ann"]) as ann:
        _, chat = await ann.call("POST", "/v1/chats", json={"title": "two turns"})
        chat_id = chat["chat_id"]
        params = {"max_new_tokens": 8, "ignore_eos": True}
        async with ann.ws(chat_id) as ws:
            _, first = await ann.call(
                "POST", f"/v1/chats/{chat_id}/messages", json={"content": "One", "params": params}
            )
            await asyncio.wait_for(_read_until_end(ws, first["reply_id"], []), 60)
            _, second = await ann.call(
                "POST", f"/v1/chats/{chat_id}/messages", json={"content": "Two", "params": params}
            )
            await asyncio.wait_for(_read_until_end(ws, second["reply_id"], []), 60)
    events = await chat_events(nbus, chat_id)
    requests = [e for e in events if e.__class__.__name__ == "ReplyRequested"]
    assert requests[1].context == [first["message_id"], first["reply_id"], second["message_id"]]  # type: ignore[attr-defined]
