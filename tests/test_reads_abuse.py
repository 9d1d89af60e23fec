"""Abuse of the read path (issue 13 items 1 and 5): far-future `min_seq` reads, and chats too big to read
at once. Against a real nats-server, the in-process projector and the API app."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import bus
import schemas
from bus import Bus
from schemas.chat import MessagePosted, ReplyRequested
from schemas.ids import new_id
from schemas.queries import MAX_PAGE_BYTES, ChatPage, ListChats
from schemas.sampling import SamplingParams
from services.projector import run_projector
from tests.apihelp import Api, is_error
from tests.stack import wait_projector

FAR = 2**63 - 1


async def test_far_future_min_seq_is_refused_at_once_and_never_stalls_another_user(api: Api) -> None:
    chat = await api.new_chat("ann")
    bobs = await api.new_chat("bob")
    routes = ["/v1/chats", f"/v1/chats/{chat['chat_id']}", f"/v1/chats/{chat['chat_id']}/messages"]
    attack = [
        asyncio.create_task(api.call("GET", f"{routes[i % 3]}?min_seq={FAR - i}", "ann")) for i in range(10)
    ]
    await asyncio.sleep(0)  # the attack is under way
    started = time.monotonic()
    status, page = await api.call("GET", f"/v1/chats?min_seq={bobs['seq']}", "bob")
    assert time.monotonic() - started < 1.0
    assert status == 200 and [c["title"] for c in page["items"]] == ["hello"]
    started = time.monotonic()
    for status, body in await asyncio.gather(*attack):
        assert status == 400 and is_error(body) and "min_seq" in body["message"], body
    assert time.monotonic() - started < 1.0  # refused at once, not after a wait
    # Reading your own write still waits for it: its sequence is in the log.
    posted = await api.call("PATCH", f"/v1/chats/{chat['chat_id']}", "ann", json={"title": "renamed"})
    status, got = await api.call("GET", f"/v1/chats/{chat['chat_id']}?min_seq={posted[1]['seq']}", "ann")
    assert status == 200 and got["title"] == "renamed"


@contextlib.asynccontextmanager
async def projector(nbus: Bus, db: Path, **kwargs: Any) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(nbus, db, stop, **kwargs))
    try:
        await wait_projector(nbus)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def list_chats(nbus: Bus, min_seq: int = 0) -> ChatPage:
    question = ListChats(user_id="bob", min_seq=min_seq)
    return await bus.call(nbus.nc, "projector.chats.list", question, ChatPage)


async def test_reads_waiting_for_the_read_model_never_hold_the_projector(nbus: Bus, tmp_path: Path) -> None:
    # Straight at the projector (as another API replica that has not checked min_seq would ask): the
    # waits are served concurrently with plain reads, and more than `max_waits` of them are refused.
    async with projector(nbus, tmp_path / "read.duckdb", min_seq_timeout=2.0, max_waits=6):
        waits = [asyncio.create_task(list_chats(nbus, min_seq=10_000 + i)) for i in range(10)]
        await asyncio.sleep(0.3)  # all ten have reached the projector
        started = time.monotonic()
        assert (await list_chats(nbus)).items == []
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        outcomes = await asyncio.gather(*waits, return_exceptions=True)
        codes = sorted(exc.code for exc in outcomes if isinstance(exc, bus.ServiceError))
        assert codes == ["behind"] * 6 + ["busy"] * 4, outcomes
        assert time.monotonic() - started < 3.0  # the six waited their timeout side by side, not in turn


async def test_a_read_model_too_busy_to_wait_is_a_503_with_retry_after(
    nbus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A projector that may not queue any wait, and is slow to apply: reading one's own write before it
    # is applied gets 503 + Retry-After at once (the client retries), never a stall.
    from aiohttp.test_utils import TestClient, TestServer

    from identity.accounts import add_user, issue_key
    from services.api import create_app
    from services.projector import service
    from tests.apihelp import SETTINGS

    await add_user(nbus.js, "ann")
    key = (await issue_key(nbus.js, "ann"))[1]
    real_project = service.project

    def slow_project(*args: Any) -> int:
        time.sleep(1.0)
        return real_project(*args)

    async with projector(nbus, tmp_path / "read.duckdb", max_waits=0):
        async with TestClient(TestServer(create_app(SETTINGS, nbus))) as client:
            headers = {"Authorization": f"Bearer {key}"}
            async with client.post("/v1/chats", json={"title": "t"}, headers=headers) as resp:
                created = await resp.json()
            monkeypatch.setattr(service, "project", slow_project)
            async with client.patch(
                f"/v1/chats/{created['chat_id']}", json={"title": "u"}, headers=headers
            ) as resp:
                seq = (await resp.json())["seq"]
            started = time.monotonic()
            async with client.get(f"/v1/chats/{created['chat_id']}?min_seq={seq}", headers=headers) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "1"
                assert is_error(await resp.json())
            assert time.monotonic() - started < 0.5


# ---------------------------------------------------------------- messages, a page at a time


async def big_chat(api: Api, messages: int, chars: int) -> tuple[str, list[str]]:
    """A chat of ann's with `messages` messages of `chars` characters, each with a reply requested."""
    chat_id = (await api.new_chat("ann"))["chat_id"]
    ids: list[str] = []
    for i in range(messages):
        message = MessagePosted(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=schemas.now(),
            message_id=new_id("m"),
            author_id="ann",
            content=f"{i:04d}" + "x" * (chars - 4),
        )
        reply = ReplyRequested(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=schemas.now(),
            reply_id=new_id("r"),
            message_id=message.message_id,
            model="demo",
            params=SamplingParams(),
            context=[message.message_id],
            requested_by="ann",
        )
        await bus.append_events(api.nbus.js, [message, reply])
        ids += [message.message_id, reply.reply_id]
    return chat_id, ids


async def read_pages(api: Api, chat_id: str, query: str = "") -> list[dict[str, Any]]:
    last = (await api.nbus.js.stream_info("CHAT")).state.last_seq
    pages: list[dict[str, Any]] = []
    cursor = ""
    while True:
        status, page = await api.call(
            "GET", f"/v1/chats/{chat_id}/messages?min_seq={last}{query}{cursor}", "ann"
        )
        assert status == 200, page
        pages.append(page)
        if page["next_cursor"] is None:
            return pages
        cursor = f"&cursor={page['next_cursor']}"


async def test_a_chat_bigger_than_a_nats_message_is_read_in_pages(api: Api) -> None:
    max_payload = api.nbus.nc.max_payload
    chat_id, ids = await big_chat(api, messages=40, chars=30_000)  # ~1.2 MB of text: no single reply
    pages = await read_pages(api, chat_id)
    assert len(pages) >= 2
    for page in pages:
        rows = [*page["messages"], *page["replies"]]
        assert 1 <= len(rows) <= 20  # CHATBUS_MAX_PAGE_SIZE of the test app
        assert sum(len(m["content"]) for m in page["messages"]) <= MAX_PAGE_BYTES < max_payload
    got = [row["message_id"] for page in pages for row in page["messages"]]
    assert got == ids[0::2]
    assert [row["reply_id"] for page in pages for row in page["replies"]] == ids[1::2]
    path = [node["node_id"] for page in pages for node in page["active_path"]]
    assert path == ids  # the pages' paths joined are the whole active path, in order


async def test_messages_pages_follow_limit_and_refuse_bad_cursors(api: Api) -> None:
    chat_id, ids = await big_chat(api, messages=7, chars=10)
    last = (await api.nbus.js.stream_info("CHAT")).state.last_seq
    status, whole = await api.call("GET", f"/v1/chats/{chat_id}/messages?min_seq={last}", "ann")
    assert status == 200 and whole["next_cursor"] is None  # a small chat: one page, as before paging
    assert [n["node_id"] for n in whole["active_path"]] == ids
    pages = await read_pages(api, chat_id, "&limit=3")
    assert [len(p["messages"]) + len(p["replies"]) for p in pages] == [3, 3, 3, 3, 2]
    assert [n["node_id"] for p in pages for n in p["active_path"]] == ids
    for bad in ("&limit=0", "&limit=21", "&cursor=nonsense", "&cursor=WzEyM10"):
        status, body = await api.call("GET", f"/v1/chats/{chat_id}/messages?{bad}", "ann")
        assert status == 400 and is_error(body), (bad, body)


@pytest.mark.parametrize("route", ["/v1/chats", "/v1/chats/{chat}", "/v1/chats/{chat}/messages"])
async def test_min_seq_must_be_a_sequence(api: Api, route: str) -> None:
    chat = await api.new_chat("ann")
    for bad in ("-1", "x", str(FAR + 1)):
        status, body = await api.call("GET", route.format(chat=chat["chat_id"]) + f"?min_seq={bad}", "ann")
        assert status == 400 and "min_seq" in body["message"], body
