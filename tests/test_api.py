"""The HTTP API against a real nats-server and the in-process projector: auth, access, limits, live feeds."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSCloseCode, web
from aiohttp.test_utils import TestClient, TestServer

import bus
import schemas
from bus import Bus
from identity.accounts import add_user, issue_key, revoke_key
from schemas.chat import ChatRenamed, MessagePosted, ReplyCancelled, ReplyCompleted, ReplyRequested
from schemas.ids import new_id
from services.api import ENV_VARS, ApiSettings, create_app
from tests.apihelp import SETTINGS, Api, chat_events, is_error, serve_model

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


JSON = {"Content-Type": "application/json"}  # raw bytes would go as application/octet-stream: 415


async def test_bad_input_gets_a_4xx_json_answer(api: Api) -> None:
    chat_id = (await api.new_chat())["chat_id"]
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/v1/chats", {"data": b"{not json", "headers": JSON}, 400),
        ("POST", "/v1/chats", {"data": b"\xff\xfe", "headers": JSON}, 400),
        ("POST", "/v1/chats", {"json": [1, 2]}, 422),
        ("POST", "/v1/chats", {"json": {"title": "x", "owner_id": "bob"}}, 422),
        ("POST", "/v1/chats", {"json": {"title": 5}}, 422),
        ("POST", "/v1/chats", {"json": {"title": ""}}, 422),
        ("POST", "/v1/chats", {"json": {"model": "no spaces allowed"}}, 422),
        ("POST", "/v1/chats", {"data": b'{"title": "' + b"x" * 5000 + b'"}', "headers": JSON}, 413),
        ("PATCH", f"/v1/chats/{chat_id}", {"json": {}}, 422),
        ("PATCH", f"/v1/chats/{chat_id}", {"json": {"title": "t", "deleted": True}}, 422),
        ("POST", f"/v1/chats/{chat_id}/messages", {"json": {"content": "x" * 101}}, 413),
        ("POST", f"/v1/chats/{chat_id}/messages", {"json": {"content": ""}}, 422),
        ("POST", f"/v1/chats/{chat_id}/messages", {"json": {"content": "hi", "params": {"top_p": 7}}}, 422),
        ("POST", f"/v1/chats/{chat_id}/messages", {"data": b'{"content": "hi"', "headers": JSON}, 400),
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
        ("POST", "/v1/chats", {"data": b'{"title": "x"}', "headers": {"Content-Type": "text/plain"}}, 415),
    ]
    for method, path, kwargs, expected in cases:
        headers = {**api.auth("ann"), **kwargs.pop("headers", {})}
        async with api.client.request(method, path, headers=headers, **kwargs) as resp:
            body = await resp.json(content_type=None)
            assert (resp.status, is_error(body)) == (expected, True), (method, path, body)
            assert resp.content_type == "application/json"


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
                "engines": [],  # this presence, written by hand, does not say
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
        "CHATBUS_BATCH_MAX_LINES": "12",
        "CHATBUS_BATCH_MAX_BYTES": "3000",
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
        "CHATBUS_MAX_FEEDS_PER_USER": "3",
        "CHATBUS_MAX_FEEDS_PER_KEY": "2",
        "CHATBUS_FEED_BUFFER_BYTES": "65536",
        "CHATBUS_SSE_HEARTBEAT_SECONDS": "2.5",
        "CHATBUS_BODY_SECONDS": "4",
        "CHATBUS_ALLOWED_ORIGINS": "https://chat.example.org",
        "CHATBUS_CORS_ORIGINS": "https://app.example.org, *",
        "CHATBUS_LOGIN_LIMIT": "3",
        "CHATBUS_LOGIN_ADDRESS_LIMIT": "40",
        "CHATBUS_REGISTER_LIMIT": "2",
        "CHATBUS_PASSWORD_THREADS": "4",
        "CHATBUS_PASSWORD_QUEUE": "0",
        "CHATBUS_ARENA_DAILY_VOTES": "0",
    }
    settings = ApiSettings.from_env(env)
    assert settings == ApiSettings(
        host="0.0.0.0",
        port=9000,
        max_body_bytes=10,
        batch_max_lines=12,
        batch_max_bytes=3000,
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
        max_feeds_per_user=3,
        max_feeds_per_key=2,
        feed_buffer_bytes=65536,
        sse_heartbeat_seconds=2.5,
        body_seconds=4.0,
        allowed_origins=("https://chat.example.org",),
        cors_origins=("https://app.example.org", "*"),
        login_limit=3,
        login_address_limit=40,
        register_limit=2,
        password_threads=4,
        password_queue=0,
        arena_daily_votes=0,
    )
    assert ApiSettings.from_env({}) == ApiSettings()
    with pytest.raises(ValueError, match="CHATBUS_ALLOWED_ORIGINS"):
        ApiSettings.from_env({"CHATBUS_ALLOWED_ORIGINS": "https://chat.example.org/login"})
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
