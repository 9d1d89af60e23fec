"""CORS (CHATBUS_CORS_ORIGINS) against the real app and NATS: preflights answered before auth for allowed
origins and refused for others, actual answers carrying the headers, `*` never with credentials, cookie
sessions still refused from other origins, and nothing at all when CORS is off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from identity.sessions import COOKIE, set_password
from services.api import ApiSettings, create_app
from tests.apihelp import SETTINGS, Api, is_error

APP = "https://app.example.org"
EVIL = "https://evil.example"
PASSWORD = "correct horse battery"
CORS_HEADERS = {
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Max-Age",
    "Access-Control-Expose-Headers",
}


@asynccontextmanager
async def _app(api: Api, **settings: Any) -> AsyncIterator[TestClient]:
    """The API over the test's bus with these settings changed."""
    app = create_app(msgspec.structs.replace(SETTINGS, **settings), api.nbus)
    async with TestClient(TestServer(app)) as client:
        yield client


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_a_preflight_is_allowed_for_a_configured_origin_and_refused_for_another(api: Api) -> None:
    async with _app(api, cors_origins=(APP,)) as client:
        # No credentials on a preflight, as a browser sends it: auth must not answer 401.
        async with client.options("/v1/chats", headers=_preflight(APP)) as resp:
            assert resp.status == 204, await resp.text()
            assert resp.headers["Access-Control-Allow-Origin"] == APP
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
            assert set(resp.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST"}
            allowed = resp.headers["Access-Control-Allow-Headers"].lower()
            assert "authorization" in allowed and "content-type" in allowed
            assert int(resp.headers["Access-Control-Max-Age"]) > 0
            assert "Origin" in resp.headers.getall("Vary")
        async with client.options("/v1/chats/c123/messages", headers=_preflight(APP.upper())) as resp:
            assert resp.status == 204  # an origin's scheme and host are not case-sensitive
        async with client.options("/v1/chats", headers=_preflight(EVIL)) as resp:
            body = await resp.json()
            assert resp.status == 403 and body["error"] == "cors_origin" and is_error(body)
            assert not CORS_HEADERS & set(resp.headers)
            assert "Origin" in resp.headers.getall("Vary")
        # The OpenAI SDK's own headers may come along; a header that names a user or a hop may not.
        sdk = {**_preflight(APP), "Access-Control-Request-Headers": "authorization, x-stainless-os"}
        async with client.options("/v1/chat/completions", headers=sdk) as resp:
            assert resp.status == 204 and "x-stainless-os" in resp.headers["Access-Control-Allow-Headers"]
        for header in ("X-Forwarded-User", "x-forwarded-for", "Forwarded"):
            spoof = {**_preflight(APP, "GET"), "Access-Control-Request-Headers": f"authorization, {header}"}
            async with client.options("/v1/me", headers=spoof) as resp:
                body = await resp.json()
                assert resp.status == 403 and body["error"] == "cors_header", (header, body)
                assert "Access-Control-Allow-Headers" not in resp.headers
        async with client.options("/v1/chats", headers=_preflight(APP, "DELETE")) as resp:
            assert resp.status == 405 and is_error(await resp.json())
        async with client.options("/v1/nosuchroute", headers=_preflight(APP)) as resp:
            assert resp.status == 404 and is_error(await resp.json())
        # An OPTIONS that is no preflight (no Origin) is what it always was: 405 with Allow.
        async with client.options("/v1/chats") as resp:
            assert resp.status == 405 and "GET" in resp.headers["Allow"]


async def test_an_actual_request_with_a_key_from_an_allowed_origin_carries_the_headers(api: Api) -> None:
    chat = await api.new_chat()
    async with _app(api, cors_origins=(APP,)) as client:
        headers = {**api.auth("ann"), "Origin": APP}
        async with client.get(f"/v1/chats/{chat['chat_id']}", headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["chat_id"] == chat["chat_id"]
            assert resp.headers["Access-Control-Allow-Origin"] == APP
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
            assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
            assert "Origin" in resp.headers.getall("Vary")
        async with client.post("/v1/chats", json={"title": "x"}, headers=headers) as resp:
            assert resp.status == 201 and resp.headers["Access-Control-Allow-Origin"] == APP
        # Errors carry them too, so the calling script can read why (a 401, a 404).
        async with client.get("/v1/chats/cnosuch", headers={"Origin": APP}) as resp:
            assert resp.status == 401 and resp.headers["Access-Control-Allow-Origin"] == APP
        async with client.get("/v1/chats/cnosuch", headers=headers) as resp:
            assert resp.status == 404 and resp.headers["Access-Control-Allow-Origin"] == APP
        # Another origin's request is served as before (a key is a key) but gets no grant to read it.
        async with client.get("/v1/me", headers={**api.auth("ann"), "Origin": EVIL}) as resp:
            assert resp.status == 200 and not CORS_HEADERS & set(resp.headers)
            assert "Origin" in resp.headers.getall("Vary")


async def test_with_cors_off_nothing_changes(api: Api) -> None:
    assert ApiSettings().cors_origins == ()
    async with api.client.options("/v1/chats", headers=_preflight(APP)) as resp:
        assert resp.status == 405 and is_error(await resp.json())  # no preflight answer: as before
        assert not CORS_HEADERS & set(resp.headers)
    async with api.client.get("/v1/me", headers={**api.auth("ann"), "Origin": APP}) as resp:
        assert resp.status == 200
        assert not CORS_HEADERS & set(resp.headers) and "Vary" not in resp.headers


async def test_a_wildcard_never_comes_with_credentials(api: Api) -> None:
    async with _app(api, cors_origins=("*",)) as client:
        async with client.options("/v1/me", headers=_preflight(EVIL, "GET")) as resp:
            assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "Access-Control-Allow-Credentials" not in resp.headers
        async with client.get("/v1/me", headers={**api.auth("ann"), "Origin": EVIL}) as resp:
            assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "Access-Control-Allow-Credentials" not in resp.headers
    # A listed origin next to `*` is echoed with credentials; any other gets `*` without.
    async with _app(api, cors_origins=(APP, "*")) as client:
        for origin, allow, credentials in ((APP, APP, "true"), (EVIL, "*", None)):
            async with client.get("/v1/me", headers={**api.auth("ann"), "Origin": origin}) as resp:
                assert resp.headers["Access-Control-Allow-Origin"] == allow
                assert resp.headers.get("Access-Control-Allow-Credentials") == credentials


async def test_a_cross_origin_cookie_request_is_still_refused(api: Api) -> None:
    """An allowed CORS origin may call with a key, never with the user's session cookie: reads included,
    else the grant would let its script read what the victim's browser is logged in to."""
    await set_password(api.nbus.js, "ann", PASSWORD, by="root")
    async with _app(api, cors_origins=(APP,)) as client:
        async with client.post("/v1/login", json={"user": "ann", "password": PASSWORD}) as resp:
            assert resp.status == 200
            csrf = (await resp.json())["csrf_token"]
            cookie = {"Cookie": f"{COOKIE}={resp.cookies[COOKIE].value}"}
        client.session.cookie_jar.clear()
        own = f"http://{client.host}:{client.port}"
        for method, path, extra in (
            ("GET", "/v1/me", {}),
            ("GET", "/v1/chats", {}),
            ("POST", "/v1/chats", {"X-CSRF-Token": csrf}),
        ):
            async with client.request(
                method, path, headers={**cookie, **extra, "Origin": APP}, json={"title": "x"}
            ) as resp:
                body = await resp.json()
                assert (resp.status, body["error"]) == (403, "bad_origin"), (method, path, body)
        # The site's own pages (and requests with no Origin) keep their session.
        async with client.get("/v1/me", headers={**cookie, "Origin": own}) as resp:
            assert resp.status == 200 and (await resp.json())["user_id"] == "ann"
        async with client.get("/v1/me", headers=cookie) as resp:
            assert resp.status == 200
        async with client.post(
            "/v1/chats", json={"title": "x"}, headers={**cookie, "X-CSRF-Token": csrf, "Origin": own}
        ) as resp:
            assert resp.status == 201
        # Login itself from the CORS origin stays refused (login CSRF): CORS origins are not our pages.
        async with client.post(
            "/v1/login", json={"user": "ann", "password": PASSWORD}, headers={"Origin": APP}
        ) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == "bad_origin"


@pytest.mark.parametrize("value", ["https://app.example.org/", "app.example.org", "null", "https://a.b/x"])
def test_a_cors_origin_must_be_an_origin(value: str) -> None:
    with pytest.raises(ValueError, match="CHATBUS_CORS_ORIGINS"):
        ApiSettings.from_env({"CHATBUS_CORS_ORIGINS": value})


def test_cors_origins_are_read_from_the_environment() -> None:
    settings = ApiSettings.from_env({"CHATBUS_CORS_ORIGINS": "https://a.example, http://localhost:5173,*"})
    assert settings.cors_origins == ("https://a.example", "http://localhost:5173", "*")
