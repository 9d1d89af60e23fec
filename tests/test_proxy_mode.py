"""Trusted-proxy mode (issue 13 item 10): live feeds, Origin, IPv4-mapped peers, a repeated user header."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

import bus
import schemas
from schemas.chat import ChatRenamed
from schemas.ids import new_id
from services.api import create_app
from tests.apihelp import SETTINGS, Api, is_error

USER = {"X-Forwarded-User": "proxied"}


@asynccontextmanager
async def _behind_proxy(api: Api, host: str = "127.0.0.1", **settings: Any) -> AsyncIterator[TestClient]:
    settings = {"trusted_proxies": ("127.0.0.1/32",), **settings}
    app = create_app(msgspec.structs.replace(SETTINGS, **settings), api.nbus)
    async with TestClient(TestServer(app, host=host)) as client:
        yield client


def _origin(client: TestClient) -> dict[str, str]:
    return {"Origin": f"http://{client.host}:{client.port}"}


async def _proxied_chat(client: TestClient) -> str:
    async with client.post("/v1/chats", json={"title": "x"}, headers={**USER, **_origin(client)}) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["chat_id"])


async def test_a_proxied_websocket_stays_open_past_the_access_recheck(api: Api) -> None:
    async with _behind_proxy(api) as client:
        chat_id = await _proxied_chat(client)
        url = f"/v1/chats/{chat_id}/ws"
        async with client.ws_connect(url, headers={**USER, **_origin(client)}) as ws:
            assert (await asyncio.wait_for(ws.receive(), 5)).json()["event"]["type"] == "chat.created"
            await asyncio.sleep(5 * SETTINGS.access_recheck_seconds)  # several re-checks
            renamed = ChatRenamed(event_id=new_id("e"), chat_id=chat_id, at=schemas.now(), title="y", by="x")
            await bus.append_event(api.nbus.js, renamed)
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == WSMsgType.TEXT, (msg, ws.close_code)
            assert msg.json()["event"]["title"] == "y"
        async with client.get(f"/v1/chats/{chat_id}/events", headers=USER) as resp:
            assert resp.status == 200
            await asyncio.sleep(5 * SETTINGS.access_recheck_seconds)
            assert not resp.content.is_eof()  # the stream goes on


@pytest.mark.parametrize("origin", [None, "https://evil.example"])
async def test_a_proxied_websocket_from_another_site_is_refused(api: Api, origin: str | None) -> None:
    async with _behind_proxy(api) as client:
        chat_id = await _proxied_chat(client)
        headers = {**USER, **({"Origin": origin} if origin else {})}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(f"/v1/chats/{chat_id}/ws", headers=headers)
        assert refused.value.status == 403
        async with client.get(
            f"/v1/chats/{chat_id}/ws", headers={**headers, "Connection": "Upgrade", "Upgrade": "websocket"}
        ) as resp:
            body = await resp.json()
            assert resp.status == 403 and body["error"] == "bad_origin" and is_error(body)


async def test_an_ipv4_mapped_peer_matches_an_ipv4_network(api: Api) -> None:
    # A dual-stack listener ("::") sees an IPv4 client as ::ffff:127.0.0.1.
    async with _behind_proxy(api, host="::", trusted_proxies=("127.0.0.0/8",)) as client:
        url = f"http://127.0.0.1:{client.port}/v1/me"
        async with client.session.get(url, headers=USER) as resp:
            assert resp.status == 200 and (await resp.json())["user_id"] == "proxied"
    async with _behind_proxy(api, host="::", trusted_proxies=("10.0.0.0/8",)) as client:
        url = f"http://127.0.0.1:{client.port}/v1/me"
        async with client.session.get(url, headers=USER) as resp:
            assert resp.status == 401  # the mapped address is still not in another network


async def test_a_repeated_user_header_is_refused(api: Api) -> None:
    async with _behind_proxy(api) as client:
        twice = CIMultiDict([("X-Forwarded-User", "proxied"), ("X-Forwarded-User", "root")])
        async with client.get("/v1/me", headers=twice) as resp:
            body = await resp.json()
            assert resp.status == 400 and is_error(body), body
            assert "X-Forwarded-User came 2 times" in body["message"]
        async with client.get("/v1/me", headers=USER) as resp:
            assert resp.status == 200
