"""Login CSRF and malformed input, performed against the real app and NATS: a cross-site form that
posts JSON as text/plain, JSON routes sent other types, a user name with a trailing newline
(issue 13 items 9 and 11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from aiohttp.test_utils import TestClient, TestServer

from identity.accounts import add_user
from identity.sessions import COOKIE, set_password
from services.api import create_app
from tests.apihelp import SETTINGS, Api

PASSWORD = "correct horse battery"


@asynccontextmanager
async def _app(api: Api, **settings: Any) -> AsyncIterator[TestClient]:
    """The API over the test's bus with these settings changed."""
    app = create_app(msgspec.structs.replace(SETTINGS, **settings), api.nbus)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_a_cross_site_text_plain_form_cannot_log_the_victim_in(api: Api) -> None:
    """A page elsewhere posts `<form enctype="text/plain">` with one field named
    `{"user": "eve", "password": "attacker pass` and valued `"}`: the browser sends the JSON
    `{"user": "eve", "password": "attacker pass="}` (eve's real password ends with "="), with the
    attacker's Origin and `Content-Type: text/plain`. Before, the victim's browser got eve's session."""
    await add_user(api.nbus.js, "eve")
    await set_password(api.nbus.js, "eve", "attacker pass=", by="root")
    form_body = '{"user": "eve", "password": "attacker pass' + "=" + '"}'
    own = f"http://{api.client.host}:{api.client.port}"
    for origin, refusal in (
        ("https://evil.example", (403, "bad_origin")),
        (own, (415, "unsupported_media_type")),
    ):
        headers = {"Content-Type": "text/plain", "Origin": origin}
        async with api.client.post("/v1/login", data=form_body, headers=headers) as resp:
            body = await resp.json()
            assert (resp.status, body["error"]) == refusal and COOKIE not in resp.cookies, body
    # Even as JSON (a fetch that CHATBUS_CORS_ORIGINS might allow), a foreign page is refused.
    as_json = {"user": "eve", "password": "attacker pass="}
    async with api.client.post("/v1/login", json=as_json, headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "bad_origin"
    # From the site's own page, or with no Origin at all (curl, scripts), it logs in.
    for headers in ({"Origin": own}, {}):
        async with api.client.post("/v1/login", json=as_json, headers=headers) as resp:
            assert resp.status == 200 and COOKIE in resp.cookies
    async with _app(api, allowed_origins=("https://chat.example.org",)) as client:
        headers = {"Origin": "https://chat.example.org"}
        async with client.post("/v1/login", json=as_json, headers=headers) as resp:
            assert resp.status == 200
    async with _app(api, self_registration=True) as client:
        headers = {"Content-Type": "text/plain", "Origin": "https://evil.example"}
        body = '{"user": "victim2", "password": "attacker pass' + "=" + '"}'
        async with client.post("/v1/register", data=body, headers=headers) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == "bad_origin"


async def test_every_json_route_wants_application_json(api: Api) -> None:
    chat = await api.new_chat()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for method, path, data in (
        ("POST", "/v1/chats", '{"title": "x"}'),
        ("PATCH", f"/v1/chats/{chat['chat_id']}", '{"title": "y"}'),
        ("PUT", "/v1/me/consent", '{"allowed": true}'),
        ("POST", "/v1/chat/completions", '{"model": "demo", "messages": []}'),
    ):
        for headers in ({"Content-Type": "text/plain"}, form, {}):
            # {}: a body that declares no type at all
            status, body = await api.call(
                method, path, data=data.encode(), headers=headers, skip_auto_headers=["Content-Type"]
            )
            assert status == 415, (path, headers, body)
            message = body["message"] if "message" in body else body["error"]["message"]
            assert "application/json" in message
    status, _ = await api.call("POST", "/v1/chats")  # no body and no type: the defaults
    assert status == 201
    status, _ = await api.call("POST", "/v1/chats", json={"title": "x"})  # aiohttp's json= sends the type
    assert status == 201


async def test_a_user_name_with_a_trailing_newline_is_a_400_not_a_500(api: Api) -> None:
    async with api.client.post("/v1/login", json={"user": "ann\n", "password": PASSWORD}) as resp:
        body = await resp.json()
        assert (resp.status, body["error"]) == (400, "bad_user"), body  # before: 503 from the bus
    async with _app(api, self_registration=True) as client:
        async with client.post("/v1/register", json={"user": "eve\n", "password": PASSWORD}) as resp:
            assert resp.status == 422 and (await resp.json())["error"] == "bad_user"
    status, body = await api.call("POST", "/v1/admin/users/bob%0A/erase", "root")
    assert 400 <= status < 500, body
