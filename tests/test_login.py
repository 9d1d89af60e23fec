"""Browser login: argon2 passwords (identity events), session cookies, CSRF, logout, rate limits, Origin."""

from __future__ import annotations

import contextlib

import pytest

import bus
from bus import EmbeddedServer
from identity.accounts import add_user
from identity.sessions import COOKIE, set_password
from schemas.streams import LOGIN_ATTEMPTS_KV
from tests.apihelp import SETTINGS as API_SETTINGS
from tests.apihelp import Api

PASSWORD = "correct horse battery"


async def _login(api: Api, user: str = "ann", password: str = PASSWORD) -> tuple[int, dict, str | None, str]:
    async with api.client.post("/v1/login", json={"user": user, "password": password}) as resp:
        body = await resp.json()
        morsel = resp.cookies.get(COOKIE)
        header = resp.headers.get("Set-Cookie", "")
        return resp.status, body, (morsel.value if morsel is not None else None), header


async def _as(
    api: Api, method: str, path: str, cookie: str, csrf: str | None = None, **kw
) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    headers = {
        "Cookie": f"{COOKIE}={cookie}",
        **({"X-CSRF-Token": csrf} if csrf else {}),
        **kw.pop("headers", {}),
    }
    async with api.client.request(method, path, headers=headers, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_password_logs_in_with_a_session_cookie_and_csrf_guards_writes(api: Api) -> None:
    await set_password(api.nbus.js, "ann", PASSWORD, by="root")
    stored = await bus.read_all(api.nbus.js, "IDENTITY", ["user.ann.password"])
    assert PASSWORD.encode() not in stored[0].data and b"argon2id" in stored[0].data  # only the hash
    status, body, cookie, header = await _login(api)
    assert status == 200 and body["user_id"] == "ann" and body["csrf_token"] and cookie
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    assert "Secure" not in header  # plain http here; behind TLS (or X-Forwarded-Proto: https) it is Secure

    assert (await _as(api, "GET", "/v1/me", cookie))[1]["user_id"] == "ann"
    status, refused = await _as(api, "POST", "/v1/chats", cookie, json={"title": "x"})
    assert (status, refused["error"]) == (403, "csrf")
    assert (await _as(api, "POST", "/v1/chats", cookie, "wrong-token", json={"title": "x"}))[0] == 403
    status, chat = await _as(api, "POST", "/v1/chats", cookie, body["csrf_token"], json={"title": "x"})
    assert status == 201 and chat["owner_id"] == "ann"

    assert (await _as(api, "POST", "/v1/logout", cookie, body["csrf_token"]))[0] == 200
    assert (await _as(api, "GET", "/v1/me", cookie))[0] == 401  # the session is gone everywhere


async def test_wrong_passwords_get_401_and_then_429(api: Api) -> None:
    await set_password(api.nbus.js, "bob", PASSWORD, by="root")
    assert (await _login(api, "nobody", PASSWORD))[0] == 401  # an unknown user looks like a wrong password
    assert (await _login(api, "root", PASSWORD))[0] == 401  # a user without a password cannot log in
    for _ in range(API_SETTINGS.login_limit):
        status, body, cookie, _ = await _login(api, "bob", "not the password")
        assert (status, body["error"], cookie) == (401, "bad_login", None)
    status, body, _, _ = await _login(api, "bob", PASSWORD)  # even the right one, for a while
    assert (status, body["error"]) == (429, "too_many_attempts")
    assert (await _login(api, "ann", "whatever!"))[0] == 401  # other users are not locked out
    for bad in (
        {"user": "bob"},
        {"user": "", "password": "x"},
        {"user": "bob", "password": "x", "admin": True},
    ):
        async with api.client.post("/v1/login", json=bad) as resp:
            assert resp.status == 422


async def test_short_passwords_are_refused(api: Api) -> None:
    with pytest.raises(ValueError, match="at least"):
        await set_password(api.nbus.js, "ann", "short", by="root")
    assert await bus.read_all(api.nbus.js, "IDENTITY", ["user.ann.password"]) == []


async def test_a_session_websocket_must_come_from_this_site(api: Api) -> None:
    await set_password(api.nbus.js, "ann", PASSWORD, by="root")
    _, body, cookie, _ = await _login(api)
    status, chat = await _as(
        api, "POST", "/v1/chats", cookie or "", body["csrf_token"], json={"title": "live"}
    )
    path = f"/v1/chats/{chat['chat_id']}/ws"
    own = f"http://{api.client.host}:{api.client.port}"
    cookie_header = {"Cookie": f"{COOKIE}={cookie}"}
    async with api.client.get(path, headers={**cookie_header, "Origin": "https://evil.example"}) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "bad_origin"
    async with api.client.ws_connect(path, headers={**cookie_header, "Origin": own}) as ws:
        frame = await ws.receive_json(timeout=5)
        assert frame["event"]["type"] == "chat.created"


async def test_the_cli_sets_a_password_that_logs_in(api: Api, nats_url: str) -> None:
    import asyncio
    import subprocess
    import sys

    from tests.stack import ROOT

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "services.cli", "admin", "user", "password", *args, "--nats", nats_url]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)

    done = await asyncio.to_thread(cli, "bob", "--password", PASSWORD)
    assert done.returncode == 0, done.stderr
    assert (await _login(api, "bob"))[0] == 200
    assert (await asyncio.to_thread(cli, "bob", "--password", "short")).returncode == 2
    assert (await asyncio.to_thread(cli, "nobody", "--password", PASSWORD)).returncode == 1


async def _client(nbus: bus.Bus, **settings: object):  # type: ignore[no-untyped-def]
    from aiohttp.test_utils import TestClient, TestServer

    from services.api import ApiSettings, create_app

    return TestClient(TestServer(create_app(ApiSettings(**settings), nbus)))  # type: ignore[arg-type]


async def test_self_registration_only_when_the_operator_allows_it(api: Api) -> None:
    async with api.client.post("/v1/register", json={"user": "newbie", "password": PASSWORD}) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "registration_closed"
    async with await _client(api.nbus, self_registration=True) as open_client:
        async with open_client.post("/v1/register", json={"user": "newbie", "password": PASSWORD}) as resp:
            assert resp.status == 201
        for body, expected in (
            ({"user": "newbie", "password": PASSWORD}, 409),
            ({"user": "Bad Name", "password": PASSWORD}, 422),
            ({"user": "other", "password": "short"}, 422),
        ):
            async with open_client.post("/v1/register", json=body) as resp:
                assert resp.status == expected, body
    assert (await _login(api, "newbie"))[0] == 200


async def test_a_session_tells_its_csrf_token_to_another_tab(api: Api) -> None:
    await set_password(api.nbus.js, "ann", PASSWORD, by="root")
    _, body, cookie, _ = await _login(api)
    status, me = await _as(api, "GET", "/v1/me", cookie or "")
    assert status == 200 and me["csrf_token"] == body["csrf_token"]
    assert (await api.call("GET", "/v1/me"))[1]["csrf_token"] == ""  # API keys have none


async def test_a_trusted_proxy_names_the_user_and_nobody_else_can(api: Api) -> None:
    header = {"X-Forwarded-User": "proxied"}
    async with api.client.get("/v1/me", headers=header) as resp:
        assert resp.status == 401  # the proxy is not trusted by this API
    async with await _client(api.nbus, trusted_proxies=("127.0.0.1/32", "::1/128")) as behind:
        async with behind.get("/v1/me", headers=header) as resp:
            assert (
                resp.status == 200 and (await resp.json())["user_id"] == "proxied"
            )  # created on first sight
        async with behind.post("/v1/chats", json={"title": "x"}, headers=header) as resp:
            assert resp.status == 403  # a write must come from this site's pages
        origin = f"http://{behind.host}:{behind.port}"
        async with behind.post(
            "/v1/chats", json={"title": "x"}, headers={**header, "Origin": origin}
        ) as resp:
            assert resp.status == 201 and (await resp.json())["owner_id"] == "proxied"
        async with behind.get("/v1/me", headers={"X-Forwarded-User": "../root"}) as resp:
            assert resp.status == 401
    async with await _client(api.nbus, trusted_proxies=("10.0.0.0/8",)) as elsewhere:
        async with elsewhere.get("/v1/me", headers=header) as resp:
            assert resp.status == 401  # the header from an untrusted address means nothing


async def test_a_login_limit_that_cannot_be_read_refuses_the_login(api: Api) -> None:
    await set_password(api.nbus.js, "bob", PASSWORD, by="root")
    await api.nbus.js.delete_key_value(LOGIN_ATTEMPTS_KV.bucket)  # the counts are gone: no count is no "0"
    for password in (PASSWORD, "not the password"):
        async with api.client.post("/v1/login", json={"user": "bob", "password": password}) as resp:
            body = await resp.json()
            assert (resp.status, body["error"]) == (503, "unavailable"), body
            assert resp.headers["Retry-After"] and COOKIE not in resp.cookies


async def test_a_login_while_nats_is_down_is_refused_with_503(own_server: EmbeddedServer) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from services.api import ApiSettings, create_app

    nbus = await bus.connect(own_server.url_for(), name="login-outage", timeout=1.0)
    try:
        await bus.declare_all(nbus.js)
        await add_user(nbus.js, "bob")
        await set_password(nbus.js, "bob", PASSWORD, by="root")
        async with TestClient(TestServer(create_app(ApiSettings(), nbus))) as client:
            own_server.stop()
            async with client.post("/v1/login", json={"user": "bob", "password": PASSWORD}) as resp:
                body = await resp.json()
                assert (resp.status, body["error"]) == (503, "unavailable"), body
                assert resp.headers["Retry-After"] and COOKIE not in resp.cookies
    finally:
        with contextlib.suppress(Exception):  # the server is gone: closing may fail, nothing to flush
            await nbus.close()


async def test_an_address_at_its_limit_is_refused_without_asking_nats_again(api: Api) -> None:
    """A flood of logins from one address costs a lookup, not KV round trips: once the address hit its
    limit, the process refuses it (429) even with the counts gone, where a count read would be a 503."""
    for i in range(API_SETTINGS.login_address_limit):
        status, _, _, _ = await _login(api, f"guess{i}", "not the password")
        assert status == 401
    assert (await _login(api, "guess-next", "not the password"))[0] == 429  # the address's limit
    await api.nbus.js.delete_key_value(LOGIN_ATTEMPTS_KV.bucket)
    status, body, _, _ = await _login(api, "guess-more", "not the password")
    assert (status, body["error"]) == (429, "too_many_attempts")
