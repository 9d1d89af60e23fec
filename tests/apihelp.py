"""The API under test: settings, users with keys, the app over aiohttp's test server (see conftest `api`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient

import bus
import schemas
from bus import Bus
from schemas.presence import WorkerPresence
from schemas.queries import Checkpoints, CheckpointsAnswer
from schemas.streams import WORKERS_KV
from schemas.subjects import presence_key
from services.api import ApiSettings
from services.image_store import ImageStoreSettings

SETTINGS = ApiSettings(
    max_body_bytes=4096,
    max_message_chars=100,
    max_page_size=20,
    ws_max_frame_bytes=256,
    read_timeout=5.0,
    access_recheck_seconds=0.2,
    upload_seconds=1.0,
)


@dataclass
class Api:
    """A running API with users ann (user), bob (user) and root (admin)."""

    client: TestClient
    app: web.Application
    nbus: Bus
    keys: dict[str, str]

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[user]}"}

    async def call(self, method: str, path: str, user: str | None = "ann", **kwargs: Any) -> tuple[int, Any]:
        headers = {**(self.auth(user) if user else {}), **kwargs.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kwargs) as resp:
            body = await resp.json(content_type=None) if resp.status != 204 else None
            return resp.status, body

    async def new_chat(self, user: str = "ann", **fields: Any) -> dict[str, Any]:
        status, body = await self.call("POST", "/v1/chats", user, json={"title": "hello", **fields})
        assert status == 201, body
        return body


async def upload(
    api: Api, data: bytes, content_type: str = "image/png", user: str = "ann"
) -> tuple[int, Any]:
    """POST /v1/images as `user`."""
    return await api.call("POST", "/v1/images", user, data=data, headers={"Content-Type": content_type})


async def wait_for_projector(nbus: Bus, projector: asyncio.Task[None]) -> None:
    for _ in range(400):
        if projector.done():
            projector.result()
        try:
            await bus.call(nbus.nc, "projector.status", Checkpoints(), CheckpointsAnswer, timeout=0.5)
            return
        except bus.ServiceError:
            await asyncio.sleep(0.05)
    raise AssertionError("projector never answered")


async def serve_model(nbus: Bus, alias: str = "demo") -> None:
    now = schemas.now()
    presence = WorkerPresence(
        worker_id="w1",
        alias=alias,
        model="/models/demo",
        host="gpu1",
        active=1,
        capacity=4,
        started_at=now,
        heartbeat_at=now,
    )
    await bus.KV(nbus.js, WORKERS_KV.bucket).put(presence_key(alias, "w1"), schemas.encode(presence))


async def chat_events(nbus: Bus, chat_id: str) -> list[schemas.Event]:
    return [schemas.decode_event(m.data) for m in await bus.read_all(nbus.js, "CHAT", [f"chat.{chat_id}.>"])]


def is_error(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"error", "message"} and bool(body["message"])


# Test host names, as a DNS server would answer them: all on loopback; only the *.home.test ones allowed.
TEST_NAMES = {"pics.home.test": "127.0.0.1", "hop.home.test": "127.0.0.1", "loopback.test": "127.0.0.1"}
IMAGE_STORE_SETTINGS = ImageStoreSettings(
    max_bytes=2 * 1024 * 1024,
    max_pixels=16_000_000,
    fetch_timeout=3.0,
    private_hosts=frozenset({"pics.home.test", "hop.home.test"}),
)
IMAGE_LIMITS = IMAGE_STORE_SETTINGS.limits


async def stream_until_ended(ws: Any, reply_ids: set[str], timeout: float = 60) -> set[str]:
    """Read a chat's WebSocket frames until each of `reply_ids` completed: the replies that streamed tokens
    on the way (side by side, each should have)."""
    streamed: set[str] = set()
    ended: set[str] = set()
    while ended != reply_ids:
        frame = msgspec.json.decode((await ws.receive(timeout=timeout)).data)
        event = frame.get("event") or {}
        if frame["kind"] == "tokens":
            streamed.add(event["reply_id"])
        elif event.get("type") == "chat.reply.completed":
            ended.add(event["reply_id"])
    return streamed
