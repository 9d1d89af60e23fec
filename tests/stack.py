"""Helpers that start chatbus pieces for end-to-end tests: in-process or as real child processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

import bus
import schemas
from bus import Bus
from schemas.chat import ChatCreated, MessagePosted, ReplyRequested
from schemas.ids import new_id
from schemas.queries import Checkpoints, CheckpointsAnswer
from schemas.sampling import SamplingParams
from schemas.streams import WORKERS_KV
from services.cli import processes

ROOT = Path(__file__).parent.parent


def spawn(args: list[str], nats_url: str, log: Path, **env: str) -> processes.Child:
    """Run `chatbus ARGS` as a child process against `nats_url` (its own session, so kill -9 hits only it)."""
    full_env = {**os.environ, "CHATBUS_NATS_URL": nats_url, "CHATBUS_LOG_LEVEL": "INFO", **env}
    return processes.start(processes.chatbus(*args), log=log, env=full_env, cwd=ROOT)


def stop_process(proc: processes.Child, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    processes.stop([proc], timeout)


async def wait_projector(nbus: Bus, timeout: float = 60.0) -> CheckpointsAnswer:
    """Wait until a projector answers `status`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await bus.call(nbus.nc, "projector.status", Checkpoints(), CheckpointsAnswer, timeout=1.0)
        except bus.ServiceError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def wait_caught_up(nbus: Bus, timeout: float = 60.0) -> None:
    """Wait until the projector has applied everything CHAT and IDENTITY hold now."""
    targets = {name: (await nbus.js.stream_info(name)).state.last_seq for name in ("CHAT", "IDENTITY")}
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await wait_projector(nbus, timeout)
        if all(status.applied.get(name, 0) >= seq for name, seq in targets.items()):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"projector at {status.applied}, log at {targets}")
        await asyncio.sleep(0.1)


async def wait_models(nbus: Bus, alias: str, count: int = 1, timeout: float = 120.0) -> None:
    """Wait until `count` workers announce `alias` in the presence bucket."""
    presence = bus.KV(nbus.js, WORKERS_KV.bucket)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            keys = await presence.keys(f"{alias}.*")
        except bus.BusUnavailable:  # NATS restarting: look again
            keys = []
        if len(keys) >= count:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{count} workers for {alias} never appeared")


async def chat_events(nbus: Bus, chat_id: str) -> list[schemas.Event]:
    """Every event of one chat, from the log."""
    return [schemas.decode_event(m.data) for m in await bus.read_all(nbus.js, "CHAT", [f"chat.{chat_id}.>"])]


@dataclass
class Client:
    """An HTTP client acting as one user."""

    base: str
    key: str
    session: aiohttp.ClientSession = field(init=False)

    async def __aenter__(self) -> Client:
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.key}"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, f"{self.base}{path}", **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    def ws(self, chat_id: str, after_chat_seq: int = 0, after_token_seq: int = 0) -> Any:
        query = f"after_chat_seq={after_chat_seq}&after_token_seq={after_token_seq}"
        return self.session.ws_connect(f"{self.base}/v1/chats/{chat_id}/ws?{query}")


async def request_reply(
    nbus: Bus, chat_id: str, text: str, params: SamplingParams, model: str = "demo", system_prompt: str = ""
) -> ReplyRequested:
    """Append what the API appends for a new message (creating the chat if needed); the reply request."""
    now = schemas.now()
    with contextlib.suppress(bus.ConcurrencyConflict):
        created = ChatCreated(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=now,
            owner_id="ann",
            title="t",
            model=model,
            system_prompt=system_prompt,
        )
        await bus.append_event(nbus.js, created, expected_subject_seq=0)
    message = MessagePosted(
        event_id=new_id("e"), chat_id=chat_id, at=now, message_id=new_id("m"), author_id="ann", content=text
    )
    await bus.append_event(nbus.js, message)
    request = ReplyRequested(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=now,
        reply_id=new_id("r"),
        message_id=message.message_id,
        model=model,
        params=params,
        context=[message.message_id],
        requested_by="ann",
    )
    await bus.append_event(nbus.js, request)
    return request


async def wait_event(nbus: Bus, subject: str, timeout: float = 60.0, stream: str = "CHAT") -> Any:
    """Wait for the last event on a subject to exist and return it decoded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await bus.last_msg(nbus.js, stream, subject)
        except Exception:  # noqa: BLE001 - the server may be restarting
            last = None
        if last is not None:
            return schemas.decode_event(last.data)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing on {subject} after {timeout}s")


async def stop_services(server: Any, stop: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> None:
    """Close the API's test server, then stop the in-process services and wait for each to end."""
    await server.close()
    stop.set()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def extra_worker(
    nbus: Bus, model_dir: Path, alias: str, capacity: int = 2, worker_id: str | None = None, **settings: Any
) -> AsyncIterator[Any]:
    """Another worker in this process serving `model_dir` as `alias` (a side-by-side chat compares two
    aliases; a party chat's bots may need a real model), named `worker_id` if given, with other
    WorkerSettings fields as `settings` say (e.g. `defaults`, `max_new_tokens_cap`); yields the worker
    once its presence shows."""
    from services.llm_worker import WorkerSettings
    from services.llm_worker.continuous_batching import ContinuousBatchingEngine
    from services.llm_worker.engine import EngineConfig
    from services.llm_worker.worker import Worker

    engine = await asyncio.to_thread(ContinuousBatchingEngine.from_pretrained, str(model_dir), EngineConfig())
    if worker_id is not None:
        settings["worker_id"] = worker_id
    config = msgspec.structs.replace(
        WorkerSettings(model=str(model_dir), alias=alias, capacity=capacity), **settings
    )
    worker = Worker(config, nbus, engine, engine.tokenizer)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_models(nbus, alias)
        yield worker
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def in_process_stack(
    nbus: Bus, db: Path, model_dir: Path, api_settings: Any, capacity: int = 8, **worker_settings: Any
) -> AsyncIterator[tuple[str, Any]]:
    """Projector, a demo worker (alias `demo`; other WorkerSettings fields as `worker_settings` say), the
    image store and the API on a real port, all in this process against `nbus`; yields the API's base URL
    and the worker."""
    from aiohttp.test_utils import TestServer

    from services.api import create_app
    from services.image_store import ImageStoreSettings, run_image_store
    from services.llm_worker import WorkerSettings
    from services.llm_worker.continuous_batching import ContinuousBatchingEngine
    from services.llm_worker.engine import EngineConfig
    from services.llm_worker.worker import Worker
    from services.projector import run_projector

    stop = asyncio.Event()
    engine = await asyncio.to_thread(ContinuousBatchingEngine.from_pretrained, str(model_dir), EngineConfig())
    settings = msgspec.structs.replace(
        WorkerSettings(model=str(model_dir), alias="demo", capacity=capacity), **worker_settings
    )
    worker = Worker(settings, nbus, engine, engine.tokenizer)
    tasks = [
        asyncio.create_task(run_projector(nbus, db, stop)),
        asyncio.create_task(worker.run(stop)),
        asyncio.create_task(run_image_store(ImageStoreSettings(), nbus, stop)),
    ]
    server = TestServer(create_app(api_settings, nbus))
    try:
        await wait_projector(nbus)
        await wait_models(nbus, "demo")
        await server.start_server()
        yield str(server.make_url("")).rstrip("/"), worker
    finally:
        await stop_services(server, stop, tasks)
