"""Live feeds of a chat over the HTTP API (WebSocket and SSE): resuming without duplicates, frame
limits, shutdown, against a real nats-server and the in-process projector."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType
from aiohttp.test_utils import TestServer

import bus
import schemas
from bus import Bus
from identity.accounts import add_user, issue_key
from schemas.chat import ChatRenamed
from schemas.ids import new_id
from schemas.tokens import TokenDelta
from services.api import create_app
from tests.apihelp import SETTINGS, Api


def _delta(chat_id: str, reply_id: str, index: int) -> TokenDelta:
    return TokenDelta(
        chat_id=chat_id, reply_id=reply_id, attempt=1, index=index, text=f"t{index}", n_tokens=1
    )


async def _renamed(nbus: Bus, chat_id: str, title: str) -> int:
    event = ChatRenamed(event_id=new_id("e"), chat_id=chat_id, at=schemas.now(), title=title, by="ann")
    return (await bus.append_event(nbus.js, event)).seq


async def _publish_tokens(nbus: Bus, chat_id: str, indexes: range) -> list[int]:
    seqs = []
    for i in indexes:
        seqs.append((await bus.append_event(nbus.js, _delta(chat_id, "r1", i), msg_id=new_id("d"))).seq)
    return seqs


async def _frames(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while len(frames) < count:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == WSMsgType.TEXT, msg
        frames.append(msg.json())
    return frames


async def test_websocket_resumes_after_the_given_sequences_without_duplicates(api: Api) -> None:
    created = await api.new_chat()
    chat_id = created["chat_id"]
    other = (await api.new_chat())["chat_id"]
    chat_seqs = [created["seq"]] + [await _renamed(api.nbus, chat_id, f"t{i}") for i in range(5)]
    await _renamed(api.nbus, other, "elsewhere")
    token_seqs = await _publish_tokens(api.nbus, chat_id, range(4))
    await _publish_tokens(api.nbus, other, range(2))
    k, j = chat_seqs[2], token_seqs[1]

    url = f"/v1/chats/{chat_id}/ws?after_chat_seq={k}&after_token_seq={j}"
    async with api.client.ws_connect(url, headers=api.auth("ann")) as ws:
        frames = await _frames(ws, 5)
        live_chat = await _renamed(api.nbus, chat_id, "live")
        live_token = (await _publish_tokens(api.nbus, chat_id, range(4, 5)))[0]
        frames += await _frames(ws, 2)
        await ws.send_str("ping")
        await ws.send_str("anything else is ignored")
        assert (await _frames(ws, 1)) == [{"kind": "pong"}]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.receive(), 0.3)
    events = [f for f in frames if f["kind"] == "event"]
    tokens = [f for f in frames if f["kind"] == "tokens"]
    assert [f["seq"] for f in events] == [*chat_seqs[3:], live_chat]
    assert [f["event"]["title"] for f in events] == ["t2", "t3", "t4", "live"]
    assert events[0]["event"]["type"] == "chat.renamed"
    assert [f["seq"] for f in tokens] == [*token_seqs[2:], live_token]
    assert [f["event"]["index"] for f in tokens] == [2, 3, 4]

    # Reconnecting with the last seqs seen gets nothing again.
    async with api.client.ws_connect(
        f"/v1/chats/{chat_id}/ws?after_chat_seq={live_chat}&after_token_seq={live_token}",
        headers=api.auth("ann"),
    ) as ws:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.receive(), 0.3)
    # From the start: everything, once.
    async with api.client.ws_connect(f"/v1/chats/{chat_id}/ws", headers=api.auth("ann")) as ws:
        frames = await _frames(ws, len(chat_seqs) + 1 + 5)
    assert sorted(f["seq"] for f in frames if f["kind"] == "event") == [*chat_seqs, live_chat]


async def test_websocket_closes_1009_on_an_oversized_client_frame(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    async with api.client.ws_connect(f"/v1/chats/{chat_id}/ws", headers=api.auth("ann")) as ws:
        await _frames(ws, 1)
        await ws.send_str("x" * 1000)
        msg = await asyncio.wait_for(ws.receive(), 5)
        while msg.type == WSMsgType.TEXT:
            msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert ws.close_code == WSCloseCode.MESSAGE_TOO_BIG


async def test_websocket_is_closed_going_away_on_shutdown(nbus: Bus) -> None:
    await add_user(nbus.js, "ann")
    _, key = await issue_key(nbus.js, "ann")
    server = TestServer(create_app(SETTINGS, nbus))
    await server.start_server()
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(server.make_url("/v1/chats"), json={}) as resp:
            chat_id = (await resp.json())["chat_id"]
        async with session.ws_connect(server.make_url(f"/v1/chats/{chat_id}/ws")) as ws:
            await _frames(ws, 1)
            await asyncio.wait_for(server.close(), 10)
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert (msg.type, msg.data) == (WSMsgType.CLOSE, WSCloseCode.GOING_AWAY)


async def _sse_events(resp: aiohttp.ClientResponse, count: int) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    event_id = data = ""
    while len(events) < count:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            events.append((event_id, data))
            data = ""
    return events


async def test_sse_resumes_from_last_event_id(api: Api) -> None:
    import json

    created = await api.new_chat()
    chat_id = created["chat_id"]
    seqs = [await _renamed(api.nbus, chat_id, f"t{i}") for i in range(3)]
    token_seqs = await _publish_tokens(api.nbus, chat_id, range(2))
    headers = {**api.auth("ann"), "Last-Event-ID": f"{seqs[0]}:{token_seqs[0]}"}
    async with api.client.get(f"/v1/chats/{chat_id}/events?after_chat_seq=0", headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        events = await _sse_events(resp, 3)
    frames = [json.loads(data) for _, data in events]
    assert sorted((f["kind"], f["seq"]) for f in frames) == sorted(
        [("event", seqs[1]), ("event", seqs[2]), ("tokens", token_seqs[1])]
    )
    last_id = events[-1][0]
    assert last_id == f"{seqs[2]}:{token_seqs[1]}"
