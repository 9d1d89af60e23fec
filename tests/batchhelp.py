"""Helpers of the batch tests: the pieces a batch needs (projector, API, batches service; a worker in this
process or as a child), batch inputs, and polling a batch to its end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from bus import Bus
from identity.accounts import add_user, issue_key
from services.api import ApiSettings
from tests.stack import Client, in_process_stack, stop_services, wait_projector

ENDED = frozenset({"completed", "cancelled", "expired", "failed"})


def jsonl(count: int, max_tokens: int = 2, **body: Any) -> bytes:
    """A JSONL batch input of `count` lines, custom ids `req-<i>`."""
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": f"Say {i}"}], "max_tokens": max_tokens, **body},
        }
        for i in range(count)
    ]
    return b"\n".join(msgspec.json.encode(line) for line in lines) + b"\n"


async def users(nbus: Bus) -> dict[str, str]:
    """Users ann and bob (made if missing) and a key of each."""
    keys = {}
    for user in ("ann", "bob"):
        with contextlib.suppress(Exception):
            await add_user(nbus.js, user)
        keys[user] = (await issue_key(nbus.js, user))[1]
    return keys


@contextlib.asynccontextmanager
async def batch_stack(nbus: Bus, tmp_path: Path, demo_model_dir: Path, **api: Any) -> AsyncIterator[str]:
    """Projector, a demo worker, the image store, the API and the batches service in this process; the
    API's base URL."""
    from services.batches import run_batches

    settings = msgspec.structs.replace(ApiSettings(default_model="demo"), **api)
    stop = asyncio.Event()
    async with in_process_stack(nbus, tmp_path / "read.duckdb", demo_model_dir, settings) as (base, _):
        task = asyncio.create_task(run_batches(nbus, stop))
        try:
            yield base
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def stack_without_worker(nbus: Bus, tmp_path: Path) -> AsyncIterator[str]:
    """Projector, the API and the batches service in this process (a worker comes from elsewhere)."""
    from aiohttp.test_utils import TestServer

    from services.api import create_app
    from services.batches import run_batches
    from services.projector import run_projector

    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_projector(nbus, tmp_path / "read.duckdb", stop)),
        asyncio.create_task(run_batches(nbus, stop)),
    ]
    server = TestServer(create_app(ApiSettings(default_model="demo"), nbus))
    try:
        await wait_projector(nbus)
        await server.start_server()
        yield str(server.make_url("")).rstrip("/")
    finally:
        await stop_services(server, stop, tasks)


async def submit(
    client: Client, data: bytes, content_type: str = "application/jsonl", query: str = ""
) -> Any:
    """POST /v1/batches; the Batch object (asserting a 200)."""
    status, body = await client.call(
        "POST", f"/v1/batches{query}", data=data, headers={"Content-Type": content_type}
    )
    assert status == 200, body
    return body


async def wait_batch(
    client: Client, batch_id: str, timeout: float = 120.0, until: frozenset[str] = ENDED
) -> Any:
    """Poll GET /v1/batches/{id} until its status is one of `until`."""
    async with asyncio.timeout(timeout):
        while True:
            status, body = await client.call("GET", f"/v1/batches/{batch_id}")
            assert status == 200, body
            if body["status"] in until:
                return body
            await asyncio.sleep(0.3)


async def download(client: Client, path: str) -> list[dict[str, Any]]:
    """A JSONL download, as dicts."""
    async with client.session.get(f"{client.base}{path}") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/jsonl"
        return [msgspec.json.decode(line) for line in (await resp.read()).splitlines() if line]
