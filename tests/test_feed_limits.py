"""Abuse of live feeds and request bodies (issue 13 item 4), performed against the real app and NATS."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

import bus
from identity.accounts import issue_key
from schemas.ids import new_id
from schemas.tokens import TokenDelta
from services.api import create_app
from services.api.feed_limits import SLOW_READER_CLOSE, FeedBudget
from services.api.keys import FEEDS
from tests.apihelp import SETTINGS, Api, is_error

MIB = 1024 * 1024


@asynccontextmanager
async def _client(api: Api, **settings: Any) -> AsyncIterator[TestClient]:
    app = create_app(msgspec.structs.replace(SETTINGS, **settings), api.nbus)
    async with TestClient(TestServer(app)) as client:
        yield client


async def _until(check: Any, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


async def test_feeds_beyond_the_cap_of_a_user_or_a_key_get_429(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    ws_url, sse_url = f"/v1/chats/{chat_id}/ws", f"/v1/chats/{chat_id}/events"
    second_key = {"Authorization": f"Bearer {(await issue_key(api.nbus.js, 'ann'))[1]}"}
    async with _client(api, max_feeds_per_user=3, max_feeds_per_key=2) as client:
        feeds = client.app[FEEDS]
        first = await client.ws_connect(ws_url, headers=api.auth("ann"))
        sse = await client.get(sse_url, headers=api.auth("ann"))
        assert sse.status == 200
        # The key's third feed is refused before the upgrade, with a JSON body.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(ws_url, headers=api.auth("ann"))
        assert refused.value.status == 429
        async with client.get(sse_url, headers=api.auth("ann")) as resp:
            body = await resp.json()
            assert resp.status == 429 and body["error"] == "too_many_feeds" and is_error(body), body
            assert resp.headers["Retry-After"]
        # Another key of the same user has one left under the user's cap of 3, then 429 too.
        third = await client.ws_connect(ws_url, headers=second_key)
        async with client.get(sse_url, headers=second_key) as resp:
            assert resp.status == 429 and "ann already has 3" in (await resp.json())["message"]
        # Another user is not affected.
        async with client.get(
            sse_url.replace(chat_id, (await api.new_chat("bob"))["chat_id"]), headers=api.auth("bob")
        ) as resp:
            assert resp.status == 200
        # Closing a feed gives its place back.
        await first.close()
        sse.close()
        await _until(lambda: feeds.users["ann"] == 1)
        again = await client.ws_connect(ws_url, headers=api.auth("ann"))
        await again.close()
        await third.close()
        await _until(lambda: not feeds.users)


async def _fill_tokens(nbus: bus.Bus, chat_id: str, count: int, size: int) -> list[int]:
    """`count` token deltas of `size` characters each in the chat; their TOKENS sequences."""
    acks = [
        await nbus.js.publish_async(
            f"tokens.{chat_id}.r1",
            msgspec.json.encode(
                TokenDelta(chat_id=chat_id, reply_id="r1", attempt=1, index=i, text="x" * size, n_tokens=1)
            ),
            headers={"Nats-Msg-Id": new_id("d")},
        )
        for i in range(count)
    ]
    return [(await ack).seq for ack in acks]


async def test_a_feed_whose_client_does_not_read_is_dropped_with_4008_and_resumes(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    seqs = await _fill_tokens(api.nbus, chat_id, count=160, size=100_000)  # 16 MB from seq 0
    budget = 256 * 1024
    async with _client(api, feed_buffer_bytes=budget) as client:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            ws = await client.ws_connect(f"/v1/chats/{chat_id}/ws", headers=api.auth("ann"))
            await asyncio.sleep(1.5)  # never reading: NATS delivers 16 MB, the socket takes a few
            grown = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert grown < 4 * MIB, f"the process buffered {grown} bytes for a client that does not read"
        got: list[int] = []
        async with asyncio.timeout(20):
            async for msg in ws:  # the client reads at last: what was sent, then the close
                assert msg.type == WSMsgType.TEXT, msg
                if msg.json()["kind"] == "tokens":
                    got.append(msg.json()["seq"])
        assert ws.close_code == SLOW_READER_CLOSE, (ws.close_code, len(got), ws.exception())
        assert got == seqs[: len(got)] and len(got) < len(seqs)
        # It reconnects from the last seq it got, as many times as it takes: nothing lost, nothing twice.
        for _ in range(len(seqs)):
            if got[-1] == seqs[-1]:
                break
            url = f"/v1/chats/{chat_id}/ws?after_token_seq={got[-1]}"
            async with client.ws_connect(url, headers=api.auth("ann")) as ws:
                while got[-1] != seqs[-1]:
                    msg = await asyncio.wait_for(ws.receive(), 5)
                    if msg.type != WSMsgType.TEXT:
                        assert ws.close_code == SLOW_READER_CLOSE
                        break
                    if msg.json()["kind"] == "tokens":
                        got.append(msg.json()["seq"])
        assert got == seqs
        await _until(lambda: not client.app[FEEDS].users)


async def _sse_lines(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    while line := await asyncio.wait_for(resp.content.readline(), 5):
        yield line.decode().rstrip("\n")


async def test_an_sse_feed_whose_client_does_not_read_ends_with_an_end_event(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    seqs = await _fill_tokens(api.nbus, chat_id, count=160, size=100_000)
    async with _client(api, feed_buffer_bytes=256 * 1024) as client:
        async with client.get(f"/v1/chats/{chat_id}/events", headers=api.auth("ann")) as resp:
            assert resp.status == 200
            await asyncio.sleep(1.5)  # not reading
            last_id, got, end = "", [], None
            async for line in _sse_lines(resp):
                if line.startswith("id: "):
                    last_id = line[4:]
                elif line.startswith("data: ") and '"kind":"tokens"' in line:
                    got.append(json.loads(line[6:])["seq"])
                elif line.startswith("data: "):
                    end = json.loads(line[6:])
        assert end is not None and end["reason"] == "slow_reader", end
        assert got == seqs[: len(got)] and len(got) < len(seqs)
        assert last_id.endswith(f":{got[-1]}")
        # Resuming with Last-Event-ID goes on from there.
        headers = {**api.auth("ann"), "Last-Event-ID": last_id}
        async with client.get(f"/v1/chats/{chat_id}/events", headers=headers) as resp:
            async for line in _sse_lines(resp):
                if line.startswith("data: ") and '"kind":"tokens"' in line:
                    assert json.loads(line[6:])["seq"] == seqs[len(got)]
                    break


async def test_sse_sends_a_heartbeat_within_its_interval(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    async with _client(api, sse_heartbeat_seconds=0.3) as client:
        async with client.get(f"/v1/chats/{chat_id}/events", headers=api.auth("ann")) as resp:
            started = time.monotonic()
            heartbeats = 0
            async for line in _sse_lines(resp):
                if line.startswith(":"):
                    heartbeats += 1
                    if heartbeats == 2:
                        break
            assert time.monotonic() - started < 1.5


async def _slow_post(port: int, path: str, headers: dict[str, str], deadline: float) -> tuple[bytes, float]:
    """POST a 100-byte JSON body one byte a second; the server's answer and how long it took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        "Content-Length: 100",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    started = time.monotonic()

    async def trickle() -> None:
        for _ in range(100):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(1.0)

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(deadline):
            answer = await reader.read(4096)
    finally:
        sender.cancel()
        writer.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize("path", ["/v1/login", "/v1/chats"])
async def test_a_body_sent_one_byte_a_second_gets_408(api: Api, path: str) -> None:
    async with _client(api, body_seconds=1.0) as client:
        port = client.server.port
        assert port is not None
        answer, took = await _slow_post(port, path, api.auth("ann"), deadline=4.0)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["error"] == "timeout"
    assert took < 3.0


def test_a_feed_budget_takes_one_big_message_but_nothing_past_its_limit() -> None:
    budget = FeedBudget(limit=10)
    assert budget.take(100)  # alone, however big: the feed can always move on
    assert not budget.take(1) and budget.exceeded.is_set()
    assert not budget.take(1) and budget.used == 100  # once exceeded, nothing more is held
