"""The HTTP API against a real nats-server and the in-process projector: auth, access, limits, live feeds."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

import bus
import schemas
from bus import Bus
from identity.accounts import UserExists, add_user, authenticate, issue_key, revoke_key
from schemas.chat import ChatRenamed, MessagePosted, ReplyCancelled, ReplyCompleted, ReplyRequested
from schemas.ids import new_id
from schemas.tokens import TokenDelta
from services.api import ENV_VARS, ApiSettings, create_app
from tests.apihelp import SETTINGS, Api, chat_events, is_error, serve_model

NOT_CHECKED = {
    "healthz",
    "readyz",
    "openapi",
    "models",
    "openai.chat_completions",
    "me",
    "me.consent",
    "login",
    "logout",
    "register",
    "ui",
    "ui.static",
}  # no chat: public, or acting on the caller only


# ---------------------------------------------------------------- identity


async def test_identity_keys_authenticate_until_revoked(nbus: Bus) -> None:
    await add_user(nbus.js, "cat")
    with pytest.raises(UserExists):
        await add_user(nbus.js, "cat")
    with pytest.raises(bus.ConcurrencyConflict):
        await add_user(nbus.js, "cat", role="admin")
    for bad in ("Cat", "c.at", "", "c" * 65):
        with pytest.raises(ValueError):
            await add_user(nbus.js, bad)
    with pytest.raises(ValueError):
        await issue_key(nbus.js, "nobody")
    key_id, key = await issue_key(nbus.js, "cat", label="laptop")
    assert re.fullmatch(rf"cb_{key_id}_[A-Za-z0-9_-]{{43}}", key)
    principal = await authenticate(nbus.js, key)
    assert principal is not None and (principal.user_id, principal.role, principal.key_id) == (
        "cat",
        "user",
        key_id,
    )
    stored = await bus.read_all(nbus.js, "IDENTITY", [f"apikey.{key_id}.>"])
    assert key.encode() not in stored[0].data and key.split("_", 2)[2].encode() not in stored[0].data
    assert await authenticate(nbus.js, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert await authenticate(nbus.js, "cb_nope_" + "x" * 40) is None
    assert await authenticate(nbus.js, "garbage") is None
    await revoke_key(nbus.js, key_id)
    await revoke_key(nbus.js, key_id)  # idempotent
    assert await authenticate(nbus.js, key) is None
    with pytest.raises(ValueError):
        await revoke_key(nbus.js, "knothere")


# ---------------------------------------------------------------- auth


async def test_requests_without_a_valid_key_get_401_json(api: Api) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer cb_kabc_" + "x" * 43},
    ):
        async with api.client.get("/v1/chats", headers=headers) as resp:
            assert resp.status == 401
            assert is_error(await resp.json())
    key_id, key = await issue_key(api.nbus.js, "ann")
    async with api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200
    await revoke_key(api.nbus.js, key_id)
    async with api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 401


async def test_public_routes_need_no_key(api: Api) -> None:
    assert await api.call("GET", "/healthz", None) == (200, {"status": "ok"})
    assert await api.call("GET", "/readyz", None) == (200, {"status": "ready"})
    status, doc = await api.call("GET", "/v1/openapi.json", None)
    assert status == 200 and doc["openapi"].startswith("3.")
    status, body = await api.call("GET", "/nowhere", None)
    assert status == 404 and is_error(body)


# ---------------------------------------------------------------- chats


async def test_create_list_get_rename_delete(api: Api) -> None:
    created = await api.new_chat(title="first", system_prompt="be brief")
    assert created["owner_id"] == "ann" and created["title"] == "first" and created["seq"] > 0
    chat_id = created["chat_id"]
    second = await api.new_chat(title="second")

    status, page = await api.call("GET", f"/v1/chats?min_seq={second['seq']}")
    assert status == 200
    assert [c["chat_id"] for c in page["items"]] == [second["chat_id"], chat_id]
    status, page = await api.call("GET", f"/v1/chats?limit=1&min_seq={second['seq']}")
    assert status == 200 and len(page["items"]) == 1 and page["next_cursor"]
    status, rest = await api.call("GET", f"/v1/chats?limit=1&cursor={page['next_cursor']}")
    assert status == 200 and [c["chat_id"] for c in rest["items"]] == [chat_id]
    assert (await api.call("GET", "/v1/chats", "bob"))[1]["items"] == []

    status, chat = await api.call("GET", f"/v1/chats/{chat_id}")
    assert status == 200 and chat["title"] == "first" and chat["system_prompt"] == "be brief"

    status, renamed = await api.call("PATCH", f"/v1/chats/{chat_id}", json={"title": "renamed"})
    assert status == 200 and renamed["seq"] > second["seq"]
    status, chat = await api.call("GET", f"/v1/chats/{chat_id}?min_seq={renamed['seq']}")
    assert status == 200 and chat["title"] == "renamed"
    assert isinstance((await chat_events(api.nbus, chat_id))[-1], ChatRenamed)

    status, chat = await api.call("GET", f"/v1/chats/{chat_id}", "root")  # admins may read
    assert status == 200
    status, body = await api.call("PATCH", f"/v1/chats/{chat_id}", "root", json={"title": "mine"})
    assert status == 404 and is_error(body)  # but not write

    status, deleted = await api.call("DELETE", f"/v1/chats/{chat_id}")
    assert status == 200 and deleted["seq"] > renamed["seq"]
    for method in ("GET", "DELETE"):
        status, body = await api.call(method, f"/v1/chats/{chat_id}")
        assert status == 404 and is_error(body)
    status, page = await api.call("GET", f"/v1/chats?min_seq={deleted['seq']}")
    assert [c["chat_id"] for c in page["items"]] == [second["chat_id"]]

    status, messages = await api.call("GET", f"/v1/chats/{second['chat_id']}/messages")
    empty = {"messages": [], "replies": [], "active_path": [], "ratings": [], "next_cursor": None}
    assert status == 200 and messages == empty


async def test_bad_input_gets_a_4xx_json_answer(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/v1/chats", {"data": b"{not json"}, 400),
        ("POST", "/v1/chats", {"data": b"\xff\xfe"}, 400),
        ("POST", "/v1/chats", {"json": [1, 2]}, 422),
        ("POST", "/v1/chats", {"json": {"title": "x", "owner_id": "bob"}}, 422),
        ("POST", "/v1/chats", {"json": {"title": 5}}, 422),
        ("POST", "/v1/chats", {"json": {"title": ""}}, 422),
        ("POST", "/v1/chats", {"json": {"model": "no spaces allowed"}}, 422),
        ("POST", "/v1/chats", {"data": b'{"title": "' + b"x" * 5000 + b'"}'}, 413),
        ("PATCH", f"/v1/chats/{chat_id}", {"json": {}}, 422),
        ("PATCH", f"/v1/chats/{chat_id}", {"json": {"title": "t", "deleted": True}}, 422),
        ("POST", f"/v1/chats/{chat_id}/messages", {"json": {"content": "x" * 101}}, 413),
        ("POST", f"/v1/chats/{chat_id}/messages", {"json": {"content": ""}}, 422),
        ("POST", f"/v1/chats/{chat_id}/messages", {"json": {"content": "hi", "params": {"top_p": 7}}}, 422),
        ("POST", f"/v1/chats/{chat_id}/messages", {"data": b'{"content": "hi"'}, 400),
        ("GET", "/v1/chats?limit=21", {}, 400),
        ("GET", "/v1/chats?limit=0", {}, 400),
        ("GET", "/v1/chats?limit=ten", {}, 400),
        ("GET", "/v1/chats?min_seq=-1", {}, 400),
        ("GET", "/v1/chats/bad.id", {}, 400),
        ("GET", "/v1/chats/" + "a" * 65, {}, 400),
        ("GET", "/v1/chats/bad%20id/messages", {}, 400),
        ("POST", f"/v1/chats/{chat_id}/replies/bad.id/cancel", {}, 400),
        ("GET", f"/v1/chats/{chat_id}/ws?after_chat_seq=x", {}, 400),
        ("GET", f"/v1/chats/{chat_id}/ws", {}, 400),  # not an upgrade request
        ("GET", f"/v1/chats/{chat_id}/events", {"headers": {"Last-Event-ID": "7"}}, 400),
        ("PUT", "/v1/chats", {}, 405),
    ]
    for method, path, kwargs, expected in cases:
        headers = {**api.auth("ann"), **kwargs.pop("headers", {})}
        async with api.client.request(method, path, headers=headers, **kwargs) as resp:
            body = await resp.json(content_type=None)
            assert (resp.status, is_error(body)) == (expected, True), (method, path, body)
            assert resp.content_type == "application/json"


def _chat_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        template = route.resource.canonical if route.resource is not None else ""
        if route.name not in NOT_CHECKED:
            routes.add((route.method, template))
    return routes


def _admin_only(template: str) -> bool:
    return template.startswith("/v1/admin/") or template.endswith("/restore")


async def test_nobody_but_the_owner_reaches_a_chat_on_any_route(api: Api) -> None:
    """Every route with a {chat_id} answers 404 to bob for ann's chat; a new unchecked route fails here."""
    chat_id = (await api.new_chat())["chat_id"]
    await serve_model(api.nbus)
    status, posted = await api.call(
        "POST", f"/v1/chats/{chat_id}/messages", json={"content": "hi", "model": "demo"}
    )
    assert status == 202
    bodies = {
        "POST": {"content": "hi", "model": "demo", "title": "t", "node_id": "x"},
        "PATCH": {"title": "t"},
    }
    walked = _chat_routes(api.app)
    with_chat = {(m, t) for m, t in walked if "{chat_id}" in t}
    assert len(with_chat) >= 8
    # Routes without a chat: creating or listing one's own, images (tests/test_images_api.py walks those),
    # and admin routes (walked below).
    outside = {(m, t) for m, t in walked - with_chat if not t.startswith(("/v1/images", "/v1/admin/"))}
    assert outside <= {("POST", "/v1/chats"), ("GET", "/v1/chats")}
    for method, template in sorted(t for t in walked - with_chat if t[1].startswith("/v1/admin/")):
        path = template.replace("{user_id}", "ann")
        assert "{" not in path, f"fill in the new path parameter of {template}"
        assert (await api.call(method, path, "bob"))[0] == 403, template
        assert (await api.call(method, path, None))[0] == 401, template
    seen = set()
    for method, template in sorted(with_chat):
        path = (
            template.replace("{chat_id}", chat_id)
            .replace("{reply_id}", posted["reply_id"])
            .replace("{message_id}", posted["message_id"])
        )
        assert "{" not in path, f"fill in the new path parameter of {template}"
        for user in ("bob", "nobody-key"):
            headers = api.auth(user) if user == "bob" else {"Authorization": "Bearer x"}
            async with api.client.request(method, path, headers=headers, json=bodies.get(method)) as resp:
                body = await resp.json(content_type=None)
                stranger = 403 if _admin_only(template) else 404  # admin routes: 403 whatever the chat
                assert resp.status == (stranger if user == "bob" else 401), (method, template, body)
                assert is_error(body)
        status, _ = await api.call(
            method,
            template.replace("{chat_id}", "nosuchchat" + chat_id[::-1])
            .replace("{reply_id}", posted["reply_id"])
            .replace("{message_id}", posted["message_id"]),
            json=bodies.get(method),
        )
        assert status == (403 if _admin_only(template) else 404), (method, template)
        seen.add((method, template))
    assert seen == with_chat
    assert len(await chat_events(api.nbus, chat_id)) == 3  # created, posted, requested: bob changed nothing
    assert (await api.call("GET", f"/v1/chats/{chat_id}"))[0] == 200  # and erased nothing


# ---------------------------------------------------------------- messages and replies


async def test_posting_needs_a_worker_serving_the_model(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    status, body = await api.call(
        "POST", f"/v1/chats/{chat_id}/messages", json={"content": "hi", "model": "demo"}
    )
    assert status == 409 and body["error"] == "model_unavailable"
    status, body = await api.call("POST", f"/v1/chats/{chat_id}/messages", json={"content": "hi"})
    assert status == 409 and body["error"] == "no_model"
    assert len(await chat_events(api.nbus, chat_id)) == 1
    assert await api.call("GET", "/v1/models") == (200, {"object": "list", "data": []})


async def test_post_appends_message_and_reply_request_with_the_context(api: Api) -> None:
    await serve_model(api.nbus)
    status, models = await api.call("GET", "/v1/models")
    created = models["data"][0]["created"]
    assert models == {
        "object": "list",
        "data": [
            {
                "id": "demo",
                "object": "model",
                "created": created,
                "owned_by": "chatbus",
                "workers": 1,
                "active": 1,
                "capacity": 4,
                "images": False,
                "max_context": 0,
            }
        ],
    }
    chat_id = (await api.new_chat(model="demo"))["chat_id"]

    status, first = await api.call("POST", f"/v1/chats/{chat_id}/messages", json={"content": "one"})
    assert status == 202 and first["model"] == "demo"
    events = await chat_events(api.nbus, chat_id)
    posted, requested = events[-2:]
    assert isinstance(posted, MessagePosted) and isinstance(requested, ReplyRequested)
    assert (posted.content, posted.author_id, posted.message_id) == ("one", "ann", first["message_id"])
    assert requested.reply_id == first["reply_id"] and requested.context == [first["message_id"]]
    last = await bus.last_msg(api.nbus.js, "CHAT", f"chat.{chat_id}.reply.{first['reply_id']}.requested.demo")
    assert last is not None and last.seq == first["seq"]

    done = ReplyCompleted(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=schemas.now(),
        reply_id=first["reply_id"],
        attempt=1,
        worker_id="w1",
        model="demo",
        text="two",
        prompt_tokens=1,
        completion_tokens=1,
        finish_reason="stop",
    )
    await bus.append_event(api.nbus.js, done)
    # An unanswered request is left out of the next context.
    _, lost = await api.call("POST", f"/v1/chats/{chat_id}/messages", json={"content": "three"})
    body = {"content": "four", "params": {"max_new_tokens": 8, "temperature": 0.5}}
    status, second = await api.call("POST", f"/v1/chats/{chat_id}/messages", json=body)
    assert status == 202
    requested = (await chat_events(api.nbus, chat_id))[-1]
    assert isinstance(requested, ReplyRequested)
    assert requested.context == [
        first["message_id"],
        first["reply_id"],
        lost["message_id"],
        second["message_id"],
    ]
    assert requested.params.max_new_tokens == 8 and requested.requested_by == "ann"

    status, listed = await api.call("GET", f"/v1/chats/{chat_id}/messages?min_seq={second['seq']}")
    assert status == 200
    assert [m["content"] for m in listed["messages"]] == ["one", "three", "four"]
    assert [r["reply_id"] for r in listed["replies"]] == [
        first["reply_id"],
        lost["reply_id"],
        second["reply_id"],
    ]


async def test_concurrent_posts_each_get_the_whole_context(api: Api) -> None:
    await serve_model(api.nbus)
    chat_id = (await api.new_chat(model="demo"))["chat_id"]
    answers = await asyncio.gather(
        *(api.call("POST", f"/v1/chats/{chat_id}/messages", json={"content": str(i)}) for i in range(4))
    )
    assert [status for status, _ in answers] == [202] * 4
    requests = [e for e in await chat_events(api.nbus, chat_id) if isinstance(e, ReplyRequested)]
    assert sorted(len(r.context) for r in requests) == [1, 2, 3, 4]


async def test_cancel_appends_reply_cancelled(api: Api) -> None:
    await serve_model(api.nbus)
    chat_id = (await api.new_chat(model="demo"))["chat_id"]
    _, posted = await api.call("POST", f"/v1/chats/{chat_id}/messages", json={"content": "hi"})
    path = f"/v1/chats/{chat_id}/replies/{posted['reply_id']}/cancel"
    status, cancelled = await api.call("POST", path)
    assert status == 202 and cancelled["seq"] > posted["seq"]
    event = (await chat_events(api.nbus, chat_id))[-1]
    assert isinstance(event, ReplyCancelled) and (event.reply_id, event.by) == (posted["reply_id"], "ann")
    assert await api.call("POST", path) == (202, cancelled)  # twice is harmless
    status, body = await api.call("POST", f"/v1/chats/{chat_id}/replies/rmissing/cancel")
    assert status == 404 and is_error(body)


# ---------------------------------------------------------------- live


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


# ---------------------------------------------------------------- documentation


async def test_openapi_lists_every_registered_route(api: Api) -> None:
    status, doc = await api.call("GET", "/v1/openapi.json", None)
    assert status == 200
    registered = {(r.method.lower(), r.resource.canonical) for r in api.app.router.routes() if r.resource}
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert registered and registered == documented
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["summary"] and op["responses"], path
    assert "PostMessageRequest" in doc["components"]["schemas"]


def test_settings_from_env_and_every_variable_is_listed() -> None:
    env = {
        "CHATBUS_API_HOST": "0.0.0.0",
        "CHATBUS_API_PORT": "9000",
        "CHATBUS_MAX_BODY_BYTES": "10",
        "CHATBUS_MAX_MESSAGE_CHARS": "5",
        "CHATBUS_MAX_PAGE_SIZE": "7",
        "CHATBUS_WS_MAX_FRAME_BYTES": "99",
        "CHATBUS_DEFAULT_MODEL": "demo",
        "CHATBUS_READ_TIMEOUT": "1.5",
        "CHATBUS_IMAGE_MAX_BYTES": "1000",
        "CHATBUS_TRAINING_CONSENT_DEFAULT": "yes",
        "CHATBUS_SELF_REGISTRATION": "true",
        "CHATBUS_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16",
        "CHATBUS_TRUSTED_USER_HEADER": "X-Auth-Request-User",
    }
    settings = ApiSettings.from_env(env)
    assert settings == ApiSettings(
        host="0.0.0.0",
        port=9000,
        max_body_bytes=10,
        max_message_chars=5,
        max_page_size=7,
        ws_max_frame_bytes=99,
        default_model="demo",
        read_timeout=1.5,
        max_image_bytes=1000,
        training_consent_default=True,
        self_registration=True,
        trusted_proxies=("10.0.0.1", "192.168.0.0/16"),
        trusted_user_header="X-Auth-Request-User",
    )
    assert ApiSettings.from_env({}) == ApiSettings()
    assert {name for name, _ in ENV_VARS} == set(env)
    assert all(description for _, description in ENV_VARS)
    with pytest.raises(ValueError):
        ApiSettings.from_env({"CHATBUS_API_PORT": "http"})
    from services.api import settings as settings_module

    source = Path(settings_module.__file__).read_text()
    shared = {"CHATBUS_API_PORT", "CHATBUS_IMAGE_MAX_BYTES"}  # defined once, in schemas/settings_shared.py
    assert set(re.findall(r'"(CHATBUS_[A-Z_]+)"', source)) == set(env) - shared
    shared_source = (Path(settings_module.__file__).parents[2] / "schemas" / "settings_shared.py").read_text()
    assert set(re.findall(r'"(CHATBUS_[A-Z_]+)"', shared_source)) == shared


async def test_without_a_projector_reads_answer_503_and_surprises_500_json(nbus: Bus) -> None:
    await add_user(nbus.js, "ann")
    _, key = await issue_key(nbus.js, "ann")
    headers = {"Authorization": f"Bearer {key}"}
    app = create_app(SETTINGS, nbus)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("surprise")

    app.router.add_get("/boom", boom, name="healthz-boom")
    async with TestClient(TestServer(app)) as client:
        async with client.get("/readyz") as resp:
            assert resp.status == 503 and is_error(await resp.json())
        async with client.get("/v1/chats", headers=headers) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] and is_error(await resp.json())
        async with client.post("/v1/chats", headers=headers, json={}) as resp:
            chat_id = (await resp.json())["chat_id"]
        async with client.get(f"/v1/chats/{chat_id}", headers=headers) as resp:
            assert resp.status == 503 and is_error(await resp.json())
        async with client.get("/boom", headers=headers) as resp:
            assert resp.status == 500 and (await resp.json())["error"] == "internal"


async def test_ids_and_positions_with_a_trailing_newline_or_out_of_range_get_400(api: Api) -> None:
    from schemas.ids import is_valid_id

    assert not is_valid_id("abc\n") and is_valid_id("abc")
    chat_id = (await api.new_chat())["chat_id"]
    status, body = await api.call("GET", "/v1/chats/abc%0A")
    assert status == 400 and is_error(body)
    status, body = await api.call("POST", "/v1/chats", json={"title": "x", "model": "demo\n"})
    assert status == 422 and is_error(body)
    for query in (f"after_chat_seq={2**64}", "after_token_seq=-1", f"min_seq={2**70}"):
        path = f"/v1/chats/{chat_id}/events?{query}" if "after" in query else f"/v1/chats/{chat_id}?{query}"
        status, body = await api.call("GET", path)
        assert status == 400 and is_error(body), query
    for header in ("\u00b2:0", f"{2**64}:0", "1:x"):
        async with api.client.get(
            f"/v1/chats/{chat_id}/events", headers={**api.auth("ann"), "Last-Event-ID": header}
        ) as resp:
            assert resp.status == 400, header


async def test_open_feeds_close_when_the_key_is_revoked_or_the_chat_deleted(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    key_id = api.keys["ann"].split("_")[1]
    async with api.client.ws_connect(f"/v1/chats/{chat_id}/ws", headers=api.auth("ann")) as ws:
        await revoke_key(api.nbus.js, key_id)
        async with asyncio.timeout(5):
            async for _ in ws:
                pass
        assert ws.close_code == WSCloseCode.POLICY_VIOLATION

    bob_chat = (await api.new_chat("bob"))["chat_id"]
    async with api.client.get(f"/v1/chats/{bob_chat}/events", headers=api.auth("bob")) as resp:
        assert resp.status == 200
        status, _ = await api.call("DELETE", f"/v1/chats/{bob_chat}", "bob")
        assert status == 200
        async with asyncio.timeout(5):
            await resp.read()  # the stream ends
