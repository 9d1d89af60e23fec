"""Kill things and check nothing acknowledged is lost and no reply is written twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

import bus
from bus import Bus, Credentials, EmbeddedServer, ServerConfig
from identity.accounts import add_user, issue_key
from schemas.chat import ReplyCompleted, ReplyFailed, ReplyStarted
from schemas.ids import new_id
from schemas.sampling import SamplingParams
from services.api import ApiSettings, create_app
from services.llm_worker import WorkerSettings
from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.engine import EngineConfig
from services.llm_worker.worker import Worker
from services.projector import dump_read_model, replay, run_projector
from tests.stack import (
    chat_events,
    request_reply,
    spawn,
    stop_process,
    wait_caught_up,
    wait_event,
    wait_models,
    wait_projector,
)


async def test_kill_9_of_a_worker_mid_reply_ends_with_one_reply_from_another(
    nbus: Bus, nats_url: str, demo_model_dir: Path, tmp_path: Path
) -> None:
    workers = {
        wid: spawn(
            [
                "worker",
                "--model",
                str(demo_model_dir),
                "--alias",
                "demo",
                "--ack-wait",
                "2",
                "--worker-id",
                wid,
            ],
            nats_url,
            tmp_path / f"{wid}.log",
        )
        for wid in ("wa", "wb")
    }
    try:
        await wait_models(nbus, "demo", count=2)
        request = await request_reply(
            nbus, "ck", "Hello", SamplingParams(max_new_tokens=500, ignore_eos=True)
        )
        started = await wait_event(nbus, f"chat.ck.reply.{request.reply_id}.started", 60)
        assert isinstance(started, ReplyStarted) and started.attempt == 1
        # Let it produce some tokens, then kill that worker the hard way.
        for _ in range(200):
            if await bus.last_msg(nbus.js, "TOKENS", f"tokens.ck.{request.reply_id}") is not None:
                break
            await asyncio.sleep(0.02)
        victim = workers[started.worker_id]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        survivor = "wb" if started.worker_id == "wa" else "wa"
        done = await wait_event(nbus, f"chat.ck.reply.{request.reply_id}.completed", 120)
        assert isinstance(done, ReplyCompleted)
        assert done.worker_id == survivor and done.attempt == 2 and done.completion_tokens == 500
        await asyncio.sleep(3)  # longer than ack_wait: nothing else may arrive
        events = [
            e for e in await chat_events(nbus, "ck") if getattr(e, "reply_id", None) == request.reply_id
        ]
        assert sum(isinstance(e, ReplyCompleted | ReplyFailed) for e in events) == 1
        assert [e.worker_id for e in events if isinstance(e, ReplyStarted)] == [started.worker_id, survivor]
        info = await nbus.js.consumer_info("CHAT", "worker-demo")
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        for proc in workers.values():
            stop_process(proc)


async def _write_chats(nbus: Bus, stop: asyncio.Event, written: list[int]) -> None:
    """Write chats (a create, five messages, a rename each) until stopped."""
    import schemas
    from schemas.chat import ChatCreated, ChatRenamed, MessagePosted

    i = 0
    while not stop.is_set():
        chat_id, now = f"p{i}", schemas.now()
        created = ChatCreated(event_id=new_id("e"), chat_id=chat_id, at=now, owner_id=f"u{i % 3}", title="t")
        await bus.append_event(nbus.js, created)
        for j in range(5):
            message = MessagePosted(
                event_id=new_id("e"),
                chat_id=chat_id,
                at=now,
                message_id=f"{chat_id}m{j}",
                author_id="u",
                content=f"message {j}",
            )
            await bus.append_event(nbus.js, message)
        renamed = ChatRenamed(event_id=new_id("e"), chat_id=chat_id, at=now, title=f"renamed {i}", by="u")
        await bus.append_event(nbus.js, renamed)
        i += 1
        written[0] = i
        await asyncio.sleep(0.002)


async def test_projector_killed_and_restarted_ends_identical_to_a_replay(
    nbus: Bus, nats_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "live.duckdb"
    for user in ("u0", "u1", "u2"):
        await add_user(nbus.js, user)
    stop, written = asyncio.Event(), [0]
    projector = spawn(["projector", "--db", str(db)], nats_url, tmp_path / "projector.log")
    writer: asyncio.Task[None] | None = None
    try:
        await wait_projector(nbus)
        writer = asyncio.create_task(_write_chats(nbus, stop, written))
        while written[0] < 50:
            await asyncio.sleep(0.05)
        os.kill(projector.pid, signal.SIGKILL)  # mid-stream: events keep arriving
        projector.wait()
        at_kill = written[0]
        projector = spawn(["projector", "--db", str(db)], nats_url, tmp_path / "projector.log")
        await wait_projector(nbus)
        while written[0] < at_kill + 50:
            await asyncio.sleep(0.05)
        stop.set()
        await writer
        await wait_caught_up(nbus)
    finally:
        stop.set()
        if writer is not None:
            await writer
        stop_process(projector)
    rebuilt = tmp_path / "replayed.duckdb"
    await replay(nbus, rebuilt)
    live, fresh = dump_read_model(db), dump_read_model(rebuilt)
    assert len(live["chats"]) == written[0] and len(live["messages"]) == 5 * written[0]
    assert all(title.startswith("renamed") for title in (row[2] for row in live["chats"]))
    assert live == fresh


async def test_nats_server_restart_loses_nothing_and_services_carry_on(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    config = ServerConfig(store_dir=tmp_path / "js", credentials=Credentials.generate(), port=bus.free_port())
    server = EmbeddedServer(config, log_path=tmp_path / "nats.log")
    server.start()
    nbus = await bus.connect(server.url_for(), name="restart-test")
    await bus.declare_all(nbus.js)
    await add_user(nbus.js, "ann")
    key = (await issue_key(nbus.js, "ann"))[1]
    stop = asyncio.Event()
    engine = await asyncio.to_thread(
        ContinuousBatchingEngine.from_pretrained, str(demo_model_dir), EngineConfig()
    )
    worker = Worker(
        WorkerSettings(model=str(demo_model_dir), alias="demo", capacity=4, ack_wait=5),
        nbus,
        engine,
        engine.tokenizer,
    )
    tasks = [
        asyncio.create_task(run_projector(nbus, tmp_path / "read.duckdb", stop)),
        asyncio.create_task(worker.run(stop)),
    ]
    api = TestServer(create_app(ApiSettings(default_model="demo"), nbus))
    await api.start_server()
    headers = {"Authorization": f"Bearer {key}"}
    params = {"max_new_tokens": 16, "ignore_eos": True}
    try:
        await wait_models(nbus, "demo")
        async with aiohttp.ClientSession(headers=headers) as http:

            async def post(chat_id: str, content: str) -> dict[str, str]:
                async with http.post(
                    api.make_url(f"/v1/chats/{chat_id}/messages"), json={"content": content, "params": params}
                ) as resp:
                    assert resp.status == 202, await resp.text()
                    return await resp.json()

            async with http.post(api.make_url("/v1/chats"), json={"title": "survives"}) as resp:
                chat_id = (await resp.json())["chat_id"]
            first = await post(chat_id, "before")
            await wait_event(nbus, f"chat.{chat_id}.reply.{first['reply_id']}.completed")
            before = await chat_events(nbus, chat_id)

            server.kill()
            await asyncio.sleep(1.0)
            server = EmbeddedServer(config, log_path=tmp_path / "nats.log")
            server.start()

            for _ in range(300):  # the API reconnects by itself
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(api.make_url("/readyz")) as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the API never became ready again")
            assert (await chat_events(nbus, chat_id))[: len(before)] == before
            second = await post(chat_id, "after")
            done = await wait_event(nbus, f"chat.{chat_id}.reply.{second['reply_id']}.completed", 90)
            assert done.completion_tokens == 16
            await wait_caught_up(nbus)
            async with http.get(api.make_url(f"/v1/chats/{chat_id}/messages")) as resp:
                listing = await resp.json()
            assert [m["content"] for m in listing["messages"]] == ["before", "after"]
            assert [r["status"] for r in listing["replies"]] == ["completed", "completed"]
    finally:
        await api.close()
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
        await nbus.close()
        server.stop()
