"""Doors an erasure or a password change must close (issue 13 item 8): sessions of an erased user, a
name registered again, a user creating chats while being erased, an erased chat's images."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from typing import Any

import msgspec
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

import bus
import schemas
from identity.sessions import COOKIE, set_password
from schemas.identity import UserErased
from schemas.ids import new_id
from schemas.streams import SESSIONS_KV
from services.api import create_app
from tests.apihelp import SETTINGS, Api, serve_model

PASSWORD = "correct horse battery"


async def _login(client: TestClient, user: str, password: str = PASSWORD) -> tuple[str, str]:
    """(cookie, CSRF token) of a fresh session."""
    async with client.post("/v1/login", json={"user": user, "password": password}) as resp:
        assert resp.status == 200, await resp.text()
        return resp.cookies[COOKIE].value, (await resp.json())["csrf_token"]


async def _as(client: TestClient, method: str, path: str, session: tuple[str, str], **kw: Any) -> int:
    cookie, csrf = session
    headers = {"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": csrf}
    async with client.request(method, path, headers=headers, **kw) as resp:
        return resp.status


async def _sessions_of(nbus: bus.Bus, user: str) -> int:
    entries = await bus.KV(nbus.js, SESSIONS_KV.bucket).entries()
    return sum(b'"user_id":"' + user.encode() + b'"' in entry.value for entry in entries)


async def _owned_chats(nbus: bus.Bus, user: str) -> list[bytes]:
    created = await bus.read_all(nbus.js, "CHAT", ["chat.*.created"])
    return [m.data for m in created if b'"owner_id":"' + user.encode() + b'"' in m.data]


async def test_erasing_a_user_ends_their_sessions_and_the_name_registered_again_inherits_none(
    api: Api,
) -> None:
    app = create_app(msgspec.structs.replace(SETTINGS, self_registration=True), api.nbus)
    async with TestClient(TestServer(app)) as client:
        body = {"user": "carl", "password": PASSWORD}
        async with client.post("/v1/register", json=body) as resp:
            assert resp.status == 201
        phone, laptop = await _login(client, "carl"), await _login(client, "carl")
        assert await _as(client, "GET", "/v1/me", phone) == 200
        assert await _sessions_of(api.nbus, "carl") == 2

        assert (await api.call("POST", "/v1/admin/users/carl/erase", "root"))[0] == 200
        assert await _sessions_of(api.nbus, "carl") == 0  # gone from the bucket, not just refused
        assert await _as(client, "GET", "/v1/me", phone) == 401

        # Someone else takes the name: the old cookies open nothing (before: carl's session, theirs now).
        async with client.post("/v1/register", json={"user": "carl", "password": "another password"}) as resp:
            assert resp.status == 201
        assert await _as(client, "GET", "/v1/me", phone) == 401
        assert await _as(client, "GET", "/v1/me", laptop) == 401
        assert await _as(client, "POST", "/v1/chats", laptop, json={"title": "mine now"}) == 401


async def test_a_password_change_ends_the_users_sessions(api: Api) -> None:
    await set_password(api.nbus.js, "ann", PASSWORD, by="root")
    stolen = await _login(api.client, "ann")
    assert await _as(api.client, "GET", "/v1/me", stolen) == 200
    await set_password(api.nbus.js, "ann", "a brand new password", by="admin-cli")  # what the CLI does
    assert await _as(api.client, "GET", "/v1/me", stolen) == 401
    assert await _sessions_of(api.nbus, "ann") == 0
    fresh = await _login(api.client, "ann", "a brand new password")
    assert await _as(api.client, "GET", "/v1/me", fresh) == 200


async def test_a_user_creating_chats_as_fast_as_they_can_cannot_outrun_their_erasure(api: Api) -> None:
    await set_password(api.nbus.js, "bob", PASSWORD, by="root")
    session = await _login(api.client, "bob")
    erased = asyncio.Event()
    answers: Counter[int] = Counter()

    async def keep_creating(by_key: bool) -> None:
        while True:
            if by_key:
                status = (await api.call("POST", "/v1/chats", "bob", json={"title": "more"}))[0]
            else:
                status = await _as(api.client, "POST", "/v1/chats", session, json={"title": "more"})
            answers[status] += 1
            if status != 201 or erased.is_set():
                return

    creators = [asyncio.create_task(keep_creating(by_key=i % 2 == 0)) for i in range(6)]
    while answers[201] < 30:  # bob is busy
        await asyncio.sleep(0.01)
    status, body = await api.call("POST", "/v1/admin/users/bob/erase", "root")
    erased.set()
    await asyncio.wait_for(asyncio.gather(*creators), timeout=10)
    assert status == 200, body
    assert set(answers) == {201, 401}, answers  # every creator was stopped, by key or session
    assert await _owned_chats(api.nbus, "bob") == []  # and none of what they made survived
    assert sorted(body["chats"]) == sorted(set(body["chats"])) and len(body["chats"]) >= 30


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (9, 9), (200, 10, 30)).save(out, "PNG")
    return out.getvalue()


async def test_an_erased_chats_images_are_not_the_uploaders_any_more(api: Api) -> None:
    await serve_model(api.nbus)
    status, image = await api.call(
        "POST", "/v1/images", "ann", data=_png(), headers={"Content-Type": "image/png"}
    )
    assert status == 201
    sha = image["sha256"]
    chat = (await api.new_chat("ann", model="demo"))["chat_id"]
    post = {"content": "look", "images": [sha]}
    assert (await api.call("POST", f"/v1/chats/{chat}/messages", "ann", json=post))[0] == 202
    assert await _image_status(api, sha) == 200

    assert (await api.call("POST", f"/v1/chats/{chat}/erase", "ann"))[0] == 200
    assert await _image_status(api, sha) == 404  # before: 200 until an admin collected it
    other = (await api.new_chat("ann", model="demo"))["chat_id"]
    status, body = await api.call("POST", f"/v1/chats/{other}/messages", "ann", json=post)
    assert (status, body["error"]) == (422, "unknown_image"), body  # nor attached without uploading again
    assert await bus.list_objects(api.nbus.js, "images") == []  # nobody else held it: the bytes are gone


async def _image_status(api: Api, sha: str) -> int:
    async with api.client.get(f"/v1/images/{sha}", headers=api.auth("ann")) as resp:
        return resp.status


async def test_from_the_first_step_of_an_erasure_the_user_acts_as_nobody(api: Api) -> None:
    """An erasure appends the user's tombstone before it removes anything: an erasure cut short there
    (a crash) leaves a user that no key, session, proxy header or login acts as, and that can be
    erased again to finish."""
    await set_password(api.nbus.js, "ann", PASSWORD, by="root")
    session = await _login(api.client, "ann")
    settings = msgspec.structs.replace(SETTINGS, trusted_proxies=("127.0.0.1/32", "::1/128"))
    async with TestClient(TestServer(create_app(settings, api.nbus))) as behind_proxy:
        async with behind_proxy.get("/v1/me", headers={"X-Forwarded-User": "ann"}) as resp:
            assert resp.status == 200
        mark = UserErased(event_id=new_id("e"), at=schemas.now(), user_id="ann", by="root")
        await bus.append_event(api.nbus.js, mark)
        async with behind_proxy.get("/v1/me", headers={"X-Forwarded-User": "ann"}) as resp:
            assert resp.status == 401
    assert (await api.call("GET", "/v1/me", "ann"))[0] == 401
    assert await _as(api.client, "GET", "/v1/me", session) == 401
    async with api.client.post("/v1/login", json={"user": "ann", "password": PASSWORD}) as resp:
        assert resp.status == 401
    assert (await api.call("POST", "/v1/admin/users/ann/erase", "root"))[0] == 200  # finished now
    assert (await api.call("POST", "/v1/admin/users/ann/erase", "root"))[0] == 404
